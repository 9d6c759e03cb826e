import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CronRunOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CRON_RUN_OUTCOME_UNSPECIFIED: _ClassVar[CronRunOutcome]
    CRON_RUN_OUTCOME_SUCCEEDED: _ClassVar[CronRunOutcome]
    CRON_RUN_OUTCOME_FAILED: _ClassVar[CronRunOutcome]
CRON_RUN_OUTCOME_UNSPECIFIED: CronRunOutcome
CRON_RUN_OUTCOME_SUCCEEDED: CronRunOutcome
CRON_RUN_OUTCOME_FAILED: CronRunOutcome

class CronRun(_message.Message):
    __slots__ = ("run_id", "deployment_id", "service", "environment", "pull_request", "stack", "job", "scheduled_time", "start_time", "finish_time", "outcome", "exit_code", "message", "agent_id", "cluster", "report_time", "schedule")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    REPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    deployment_id: str
    service: str
    environment: str
    pull_request: int
    stack: str
    job: str
    scheduled_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    outcome: CronRunOutcome
    exit_code: int
    message: str
    agent_id: str
    cluster: str
    report_time: _timestamp_pb2.Timestamp
    schedule: str
    def __init__(self, run_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., service: _Optional[str] = ..., environment: _Optional[str] = ..., pull_request: _Optional[int] = ..., stack: _Optional[str] = ..., job: _Optional[str] = ..., scheduled_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[_Union[CronRunOutcome, str]] = ..., exit_code: _Optional[int] = ..., message: _Optional[str] = ..., agent_id: _Optional[str] = ..., cluster: _Optional[str] = ..., report_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., schedule: _Optional[str] = ...) -> None: ...

class ListCronRunsRequest(_message.Message):
    __slots__ = ("service", "environment", "page_size", "page_token")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    page_size: int
    page_token: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCronRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[CronRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[CronRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
