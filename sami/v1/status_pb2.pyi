import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ("service", "environment")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStatus]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStatus, _Mapping]]] = ...) -> None: ...

class ServiceStatus(_message.Message):
    __slots__ = ("service", "environment", "pull_request", "cluster", "stack_name", "swarm_service", "artifact_name", "running_digest", "deployment_id", "deploy_time", "desired_replicas", "running_replicas", "unhealthy_tasks", "health", "update_state", "change_time", "drifted", "drift_reason", "drift_time", "stale", "report_time")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    STACK_NAME_FIELD_NUMBER: _ClassVar[int]
    SWARM_SERVICE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_NAME_FIELD_NUMBER: _ClassVar[int]
    RUNNING_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_TIME_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_TASKS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    UPDATE_STATE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    DRIFT_REASON_FIELD_NUMBER: _ClassVar[int]
    DRIFT_TIME_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    REPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    pull_request: int
    cluster: str
    stack_name: str
    swarm_service: str
    artifact_name: str
    running_digest: str
    deployment_id: str
    deploy_time: _timestamp_pb2.Timestamp
    desired_replicas: int
    running_replicas: int
    unhealthy_tasks: int
    health: str
    update_state: str
    change_time: _timestamp_pb2.Timestamp
    drifted: bool
    drift_reason: str
    drift_time: _timestamp_pb2.Timestamp
    stale: bool
    report_time: _timestamp_pb2.Timestamp
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., pull_request: _Optional[int] = ..., cluster: _Optional[str] = ..., stack_name: _Optional[str] = ..., swarm_service: _Optional[str] = ..., artifact_name: _Optional[str] = ..., running_digest: _Optional[str] = ..., deployment_id: _Optional[str] = ..., deploy_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., desired_replicas: _Optional[int] = ..., running_replicas: _Optional[int] = ..., unhealthy_tasks: _Optional[int] = ..., health: _Optional[str] = ..., update_state: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., drifted: _Optional[bool] = ..., drift_reason: _Optional[str] = ..., drift_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stale: _Optional[bool] = ..., report_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDriftRecordsRequest(_message.Message):
    __slots__ = ("service", "environment", "pull_request", "limit")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    pull_request: int
    limit: int
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., pull_request: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListDriftRecordsResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[DriftRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[DriftRecord, _Mapping]]] = ...) -> None: ...

class DriftRecord(_message.Message):
    __slots__ = ("service", "environment", "pull_request", "swarm_service", "reason", "start_time", "end_time")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    SWARM_SERVICE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    pull_request: int
    swarm_service: str
    reason: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., pull_request: _Optional[int] = ..., swarm_service: _Optional[str] = ..., reason: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
