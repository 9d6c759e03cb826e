import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sami.v1 import deployment_pb2 as _deployment_pb2
from sami.v1 import manifest_pb2 as _manifest_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServiceLogsRequest(_message.Message):
    __slots__ = ("service", "environment", "pull_request", "since", "tail", "follow")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    pull_request: int
    since: _duration_pb2.Duration
    tail: int
    follow: bool
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., pull_request: _Optional[int] = ..., since: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., tail: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("task", "stream", "time", "text")
    TASK_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    task: str
    stream: str
    time: _timestamp_pb2.Timestamp
    text: str
    def __init__(self, task: _Optional[str] = ..., stream: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class ServiceLogsResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ...) -> None: ...

class PlanDeploymentRequest(_message.Message):
    __slots__ = ("service", "environment", "pull_request", "artifact")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    pull_request: int
    artifact: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., pull_request: _Optional[int] = ..., artifact: _Optional[str] = ...) -> None: ...

class FieldChange(_message.Message):
    __slots__ = ("field", "before", "after")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    field: str
    before: str
    after: str
    def __init__(self, field: _Optional[str] = ..., before: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class ServicePlan(_message.Message):
    __slots__ = ("name", "action", "changes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    action: str
    changes: _containers.RepeatedCompositeFieldContainer[FieldChange]
    def __init__(self, name: _Optional[str] = ..., action: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[FieldChange, _Mapping]]] = ...) -> None: ...

class PlanDeploymentResponse(_message.Message):
    __slots__ = ("stack_name", "cluster", "agent_id", "image", "services")
    STACK_NAME_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    stack_name: str
    cluster: str
    agent_id: str
    image: str
    services: _containers.RepeatedCompositeFieldContainer[ServicePlan]
    def __init__(self, stack_name: _Optional[str] = ..., cluster: _Optional[str] = ..., agent_id: _Optional[str] = ..., image: _Optional[str] = ..., services: _Optional[_Iterable[_Union[ServicePlan, _Mapping]]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("id", "logs", "plan", "max_lines", "max_bytes", "lines_per_second")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    MAX_LINES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    LINES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    id: str
    logs: LogsQuery
    plan: PlanQuery
    max_lines: int
    max_bytes: int
    lines_per_second: float
    def __init__(self, id: _Optional[str] = ..., logs: _Optional[_Union[LogsQuery, _Mapping]] = ..., plan: _Optional[_Union[PlanQuery, _Mapping]] = ..., max_lines: _Optional[int] = ..., max_bytes: _Optional[int] = ..., lines_per_second: _Optional[float] = ...) -> None: ...

class LogsQuery(_message.Message):
    __slots__ = ("stack_name", "service", "since", "tail", "follow")
    STACK_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    stack_name: str
    service: str
    since: _duration_pb2.Duration
    tail: int
    follow: bool
    def __init__(self, stack_name: _Optional[str] = ..., service: _Optional[str] = ..., since: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., tail: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class PlanQuery(_message.Message):
    __slots__ = ("deployment", "files", "manifest")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    deployment: _deployment_pb2.Deployment
    files: _containers.ScalarMap[str, bytes]
    manifest: _manifest_pb2.ManifestEntry
    def __init__(self, deployment: _Optional[_Union[_deployment_pb2.Deployment, _Mapping]] = ..., files: _Optional[_Mapping[str, bytes]] = ..., manifest: _Optional[_Union[_manifest_pb2.ManifestEntry, _Mapping]] = ...) -> None: ...

class QueryCancel(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class QueryChunk(_message.Message):
    __slots__ = ("id", "lines", "plan")
    ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    id: str
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    plan: PlanDeploymentResponse
    def __init__(self, id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., plan: _Optional[_Union[PlanDeploymentResponse, _Mapping]] = ...) -> None: ...

class QueryEnd(_message.Message):
    __slots__ = ("id", "error", "code")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    error: str
    code: str
    def __init__(self, id: _Optional[str] = ..., error: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...
