import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sami.v1 import artifact_pb2 as _artifact_pb2
from sami.v1 import secret_pb2 as _secret_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeploymentAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_ACTION_UNSPECIFIED: _ClassVar[DeploymentAction]
    DEPLOY: _ClassVar[DeploymentAction]
    TEARDOWN: _ClassVar[DeploymentAction]

class DeploymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_STATE_UNSPECIFIED: _ClassVar[DeploymentState]
    QUEUED: _ClassVar[DeploymentState]
    ASSIGNED: _ClassVar[DeploymentState]
    IN_PROGRESS: _ClassVar[DeploymentState]
    SUCCEEDED: _ClassVar[DeploymentState]
    FAILED: _ClassVar[DeploymentState]
    ROLLED_BACK: _ClassVar[DeploymentState]
    CANCELLED: _ClassVar[DeploymentState]
    SUPERSEDED: _ClassVar[DeploymentState]
    AWAITING_APPROVAL: _ClassVar[DeploymentState]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    STATE_CHANGED: _ClassVar[EventType]
    PROGRESS: _ClassVar[EventType]
    NOTICE: _ClassVar[EventType]
DEPLOYMENT_ACTION_UNSPECIFIED: DeploymentAction
DEPLOY: DeploymentAction
TEARDOWN: DeploymentAction
DEPLOYMENT_STATE_UNSPECIFIED: DeploymentState
QUEUED: DeploymentState
ASSIGNED: DeploymentState
IN_PROGRESS: DeploymentState
SUCCEEDED: DeploymentState
FAILED: DeploymentState
ROLLED_BACK: DeploymentState
CANCELLED: DeploymentState
SUPERSEDED: DeploymentState
AWAITING_APPROVAL: DeploymentState
EVENT_TYPE_UNSPECIFIED: EventType
STATE_CHANGED: EventType
PROGRESS: EventType
NOTICE: EventType

class Deployment(_message.Message):
    __slots__ = ("name", "id", "service", "environment", "pull_request", "artifact", "reason", "request_id", "state", "status_message", "cluster", "agent_id", "attempt", "epoch", "last_sequence", "cancel_requested", "deployment_type", "stack_name", "manifest_revision", "action", "rollback_of", "secrets", "variables", "created_by", "create_time", "update_time", "finish_time")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STACK_NAME_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_REVISION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_OF_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    service: str
    environment: str
    pull_request: int
    artifact: _artifact_pb2.Artifact
    reason: str
    request_id: str
    state: DeploymentState
    status_message: str
    cluster: str
    agent_id: str
    attempt: int
    epoch: int
    last_sequence: int
    cancel_requested: bool
    deployment_type: str
    stack_name: str
    manifest_revision: str
    action: DeploymentAction
    rollback_of: str
    secrets: _containers.RepeatedCompositeFieldContainer[_secret_pb2.SecretRef]
    variables: _containers.ScalarMap[str, str]
    created_by: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., service: _Optional[str] = ..., environment: _Optional[str] = ..., pull_request: _Optional[int] = ..., artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[DeploymentState, str]] = ..., status_message: _Optional[str] = ..., cluster: _Optional[str] = ..., agent_id: _Optional[str] = ..., attempt: _Optional[int] = ..., epoch: _Optional[int] = ..., last_sequence: _Optional[int] = ..., cancel_requested: _Optional[bool] = ..., deployment_type: _Optional[str] = ..., stack_name: _Optional[str] = ..., manifest_revision: _Optional[str] = ..., action: _Optional[_Union[DeploymentAction, str]] = ..., rollback_of: _Optional[str] = ..., secrets: _Optional[_Iterable[_Union[_secret_pb2.SecretRef, _Mapping]]] = ..., variables: _Optional[_Mapping[str, str]] = ..., created_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeploymentEvent(_message.Message):
    __slots__ = ("deployment_id", "sequence", "type", "state", "phase", "message", "agent_id", "attempt", "time")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    sequence: int
    type: EventType
    state: DeploymentState
    phase: str
    message: str
    agent_id: str
    attempt: int
    time: _timestamp_pb2.Timestamp
    def __init__(self, deployment_id: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[_Union[EventType, str]] = ..., state: _Optional[_Union[DeploymentState, str]] = ..., phase: _Optional[str] = ..., message: _Optional[str] = ..., agent_id: _Optional[str] = ..., attempt: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateDeploymentRequest(_message.Message):
    __slots__ = ("service", "environment", "artifact", "pull_request", "reason", "request_id", "deployment_type", "rollback_of", "force")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_OF_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    artifact: str
    pull_request: int
    reason: str
    request_id: str
    deployment_type: str
    rollback_of: str
    force: bool
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., artifact: _Optional[str] = ..., pull_request: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., deployment_type: _Optional[str] = ..., rollback_of: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("service", "environment", "state", "page_size", "page_token")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    state: DeploymentState
    page_size: int
    page_token: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., state: _Optional[_Union[DeploymentState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    next_page_token: str
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchDeploymentRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "event")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    event: DeploymentEvent
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ..., event: _Optional[_Union[DeploymentEvent, _Mapping]] = ...) -> None: ...

class TeardownPreviewRequest(_message.Message):
    __slots__ = ("service", "pull_request", "reason", "request_id")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    service: str
    pull_request: int
    reason: str
    request_id: str
    def __init__(self, service: _Optional[str] = ..., pull_request: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CancelDeploymentRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ApproveDeploymentRequest(_message.Message):
    __slots__ = ("name", "comment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    comment: str
    def __init__(self, name: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class RejectDeploymentRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
