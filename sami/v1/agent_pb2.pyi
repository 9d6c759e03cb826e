import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sami.v1 import cron_pb2 as _cron_pb2
from sami.v1 import deployment_pb2 as _deployment_pb2
from sami.v1 import manifest_pb2 as _manifest_pb2
from sami.v1 import query_pb2 as _query_pb2
from sami.v1 import secret_pb2 as _secret_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_SUCCEEDED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
    OUTCOME_ROLLED_BACK: _ClassVar[Outcome]
    OUTCOME_CANCELLED: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_SUCCEEDED: Outcome
OUTCOME_FAILED: Outcome
OUTCOME_ROLLED_BACK: Outcome
OUTCOME_CANCELLED: Outcome

class AgentMessage(_message.Message):
    __slots__ = ("hello", "ack", "heartbeat", "progress", "result", "inventory", "cron_run", "live_status", "query_chunk", "query_end")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    CRON_RUN_FIELD_NUMBER: _ClassVar[int]
    LIVE_STATUS_FIELD_NUMBER: _ClassVar[int]
    QUERY_CHUNK_FIELD_NUMBER: _ClassVar[int]
    QUERY_END_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    heartbeat: Heartbeat
    progress: Progress
    result: Result
    inventory: PreviewInventory
    cron_run: _cron_pb2.CronRun
    live_status: LiveStatus
    query_chunk: _query_pb2.QueryChunk
    query_end: _query_pb2.QueryEnd
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., inventory: _Optional[_Union[PreviewInventory, _Mapping]] = ..., cron_run: _Optional[_Union[_cron_pb2.CronRun, _Mapping]] = ..., live_status: _Optional[_Union[LiveStatus, _Mapping]] = ..., query_chunk: _Optional[_Union[_query_pb2.QueryChunk, _Mapping]] = ..., query_end: _Optional[_Union[_query_pb2.QueryEnd, _Mapping]] = ...) -> None: ...

class ControlMessage(_message.Message):
    __slots__ = ("welcome", "assignment", "cancel", "revoke", "done", "cron_run_ack", "heartbeat_ack", "query", "query_cancel")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    CRON_RUN_ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    QUERY_CANCEL_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assignment: Assignment
    cancel: Cancel
    revoke: Revoke
    done: Done
    cron_run_ack: CronRunAck
    heartbeat_ack: HeartbeatAck
    query: _query_pb2.Query
    query_cancel: _query_pb2.QueryCancel
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., revoke: _Optional[_Union[Revoke, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., cron_run_ack: _Optional[_Union[CronRunAck, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., query: _Optional[_Union[_query_pb2.Query, _Mapping]] = ..., query_cancel: _Optional[_Union[_query_pb2.QueryCancel, _Mapping]] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeldLease(_message.Message):
    __slots__ = ("deployment_id", "lease_id", "epoch")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    lease_id: str
    epoch: int
    def __init__(self, deployment_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "version", "capabilities", "held_leases", "recipient")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HELD_LEASES_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    held_leases: _containers.RepeatedCompositeFieldContainer[HeldLease]
    recipient: str
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., held_leases: _Optional[_Iterable[_Union[HeldLease, _Mapping]]] = ..., recipient: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("cluster", "heartbeat_interval", "resumed_leases")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    RESUMED_LEASES_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    heartbeat_interval: _duration_pb2.Duration
    resumed_leases: _containers.RepeatedCompositeFieldContainer[HeldLease]
    def __init__(self, cluster: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., resumed_leases: _Optional[_Iterable[_Union[HeldLease, _Mapping]]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("lease_id", "deployment", "files", "lease_ttl", "manifest", "secrets")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    deployment: _deployment_pb2.Deployment
    files: _containers.ScalarMap[str, bytes]
    lease_ttl: _duration_pb2.Duration
    manifest: _manifest_pb2.ManifestEntry
    secrets: _containers.RepeatedCompositeFieldContainer[_secret_pb2.SecretPayload]
    def __init__(self, lease_id: _Optional[str] = ..., deployment: _Optional[_Union[_deployment_pb2.Deployment, _Mapping]] = ..., files: _Optional[_Mapping[str, bytes]] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., manifest: _Optional[_Union[_manifest_pb2.ManifestEntry, _Mapping]] = ..., secrets: _Optional[_Iterable[_Union[_secret_pb2.SecretPayload, _Mapping]]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("deployment_id", "lease_id", "reason")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    lease_id: str
    reason: str
    def __init__(self, deployment_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Revoke(_message.Message):
    __slots__ = ("deployment_id", "lease_id", "reason")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    lease_id: str
    reason: str
    def __init__(self, deployment_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("deployment_id", "lease_id")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    lease_id: str
    def __init__(self, deployment_id: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class PreviewInventory(_message.Message):
    __slots__ = ("stacks",)
    STACKS_FIELD_NUMBER: _ClassVar[int]
    stacks: _containers.RepeatedCompositeFieldContainer[PreviewStack]
    def __init__(self, stacks: _Optional[_Iterable[_Union[PreviewStack, _Mapping]]] = ...) -> None: ...

class PreviewStack(_message.Message):
    __slots__ = ("stack_name", "service", "pull_request", "deployment_id")
    STACK_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    stack_name: str
    service: str
    pull_request: int
    deployment_id: str
    def __init__(self, stack_name: _Optional[str] = ..., service: _Optional[str] = ..., pull_request: _Optional[int] = ..., deployment_id: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("deployment_id", "lease_id", "epoch")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    lease_id: str
    epoch: int
    def __init__(self, deployment_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[HeldLease]
    def __init__(self, leases: _Optional[_Iterable[_Union[HeldLease, _Mapping]]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("deployment_id", "lease_id", "epoch", "sequence", "phase", "message")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    lease_id: str
    epoch: int
    sequence: int
    phase: str
    message: str
    def __init__(self, deployment_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., epoch: _Optional[int] = ..., sequence: _Optional[int] = ..., phase: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("deployment_id", "lease_id", "epoch", "outcome", "reason")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    lease_id: str
    epoch: int
    outcome: Outcome
    reason: str
    def __init__(self, deployment_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., epoch: _Optional[int] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class CronRunAck(_message.Message):
    __slots__ = ("run_id", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    error: str
    def __init__(self, run_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class LiveStatus(_message.Message):
    __slots__ = ("full", "services")
    FULL_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    full: bool
    services: _containers.RepeatedCompositeFieldContainer[LiveService]
    def __init__(self, full: _Optional[bool] = ..., services: _Optional[_Iterable[_Union[LiveService, _Mapping]]] = ...) -> None: ...

class LiveService(_message.Message):
    __slots__ = ("stack_name", "service", "deployment_id", "label_digest", "image", "desired_replicas", "running_replicas", "unhealthy_tasks", "update_state", "update_message", "change_time", "outside_change", "removed")
    STACK_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_TASKS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTSIDE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    stack_name: str
    service: str
    deployment_id: str
    label_digest: str
    image: str
    desired_replicas: int
    running_replicas: int
    unhealthy_tasks: int
    update_state: str
    update_message: str
    change_time: _timestamp_pb2.Timestamp
    outside_change: str
    removed: bool
    def __init__(self, stack_name: _Optional[str] = ..., service: _Optional[str] = ..., deployment_id: _Optional[str] = ..., label_digest: _Optional[str] = ..., image: _Optional[str] = ..., desired_replicas: _Optional[int] = ..., running_replicas: _Optional[int] = ..., unhealthy_tasks: _Optional[int] = ..., update_state: _Optional[str] = ..., update_message: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outside_change: _Optional[str] = ..., removed: _Optional[bool] = ...) -> None: ...
