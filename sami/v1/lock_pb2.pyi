import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Lock(_message.Message):
    __slots__ = ("environment", "service", "reason", "holder", "create_time", "expire_time")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    environment: str
    service: str
    reason: str
    holder: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, environment: _Optional[str] = ..., service: _Optional[str] = ..., reason: _Optional[str] = ..., holder: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateLockRequest(_message.Message):
    __slots__ = ("environment", "service", "reason", "ttl_seconds")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    environment: str
    service: str
    reason: str
    ttl_seconds: float
    def __init__(self, environment: _Optional[str] = ..., service: _Optional[str] = ..., reason: _Optional[str] = ..., ttl_seconds: _Optional[float] = ...) -> None: ...

class DeleteLockRequest(_message.Message):
    __slots__ = ("environment", "service")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    environment: str
    service: str
    def __init__(self, environment: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class ListLocksRequest(_message.Message):
    __slots__ = ("environment", "service")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    environment: str
    service: str
    def __init__(self, environment: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class ListLocksResponse(_message.Message):
    __slots__ = ("locks",)
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    locks: _containers.RepeatedCompositeFieldContainer[Lock]
    def __init__(self, locks: _Optional[_Iterable[_Union[Lock, _Mapping]]] = ...) -> None: ...
