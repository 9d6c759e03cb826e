import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Recipient(_message.Message):
    __slots__ = ("cluster", "recipient", "agent_id", "added_by", "add_time", "last_seen_time", "label")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ADDED_BY_FIELD_NUMBER: _ClassVar[int]
    ADD_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    recipient: str
    agent_id: str
    added_by: str
    add_time: _timestamp_pb2.Timestamp
    last_seen_time: _timestamp_pb2.Timestamp
    label: str
    def __init__(self, cluster: _Optional[str] = ..., recipient: _Optional[str] = ..., agent_id: _Optional[str] = ..., added_by: _Optional[str] = ..., add_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., label: _Optional[str] = ...) -> None: ...

class GetRecipientsRequest(_message.Message):
    __slots__ = ("service", "environment")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class GetRecipientsResponse(_message.Message):
    __slots__ = ("cluster", "recipients", "recipients_digest")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    recipients: _containers.RepeatedScalarFieldContainer[str]
    recipients_digest: str
    def __init__(self, cluster: _Optional[str] = ..., recipients: _Optional[_Iterable[str]] = ..., recipients_digest: _Optional[str] = ...) -> None: ...

class SetSecretRequest(_message.Message):
    __slots__ = ("service", "environment", "name", "ciphertext", "recipients_digest", "rekey")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REKEY_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    name: str
    ciphertext: bytes
    recipients_digest: str
    rekey: bool
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., name: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., recipients_digest: _Optional[str] = ..., rekey: _Optional[bool] = ...) -> None: ...

class Secret(_message.Message):
    __slots__ = ("service", "environment", "name", "version", "set_by", "set_time", "recipients", "stale_recipients", "removed")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SET_BY_FIELD_NUMBER: _ClassVar[int]
    SET_TIME_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    STALE_RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    name: str
    version: int
    set_by: str
    set_time: _timestamp_pb2.Timestamp
    recipients: _containers.RepeatedScalarFieldContainer[str]
    stale_recipients: bool
    removed: bool
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., set_by: _Optional[str] = ..., set_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recipients: _Optional[_Iterable[str]] = ..., stale_recipients: _Optional[bool] = ..., removed: _Optional[bool] = ...) -> None: ...

class ListSecretsRequest(_message.Message):
    __slots__ = ("service", "environment")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class ListSecretsResponse(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[Secret]
    def __init__(self, secrets: _Optional[_Iterable[_Union[Secret, _Mapping]]] = ...) -> None: ...

class RemoveSecretRequest(_message.Message):
    __slots__ = ("service", "environment", "name")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    name: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ExportSecretsRequest(_message.Message):
    __slots__ = ("service", "environment")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class ExportSecretsResponse(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretPayload]
    def __init__(self, secrets: _Optional[_Iterable[_Union[SecretPayload, _Mapping]]] = ...) -> None: ...

class SecretPayload(_message.Message):
    __slots__ = ("name", "version", "ciphertext")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    ciphertext: bytes
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class SecretRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Variable(_message.Message):
    __slots__ = ("service", "environment", "name", "value", "set_by", "set_time")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SET_BY_FIELD_NUMBER: _ClassVar[int]
    SET_TIME_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    name: str
    value: str
    set_by: str
    set_time: _timestamp_pb2.Timestamp
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[str] = ..., set_by: _Optional[str] = ..., set_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetVariableRequest(_message.Message):
    __slots__ = ("service", "environment", "name", "value")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    name: str
    value: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ListVariablesRequest(_message.Message):
    __slots__ = ("service", "environment")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class ListVariablesResponse(_message.Message):
    __slots__ = ("variables",)
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    variables: _containers.RepeatedCompositeFieldContainer[Variable]
    def __init__(self, variables: _Optional[_Iterable[_Union[Variable, _Mapping]]] = ...) -> None: ...

class RemoveVariableRequest(_message.Message):
    __slots__ = ("service", "environment", "name")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    service: str
    environment: str
    name: str
    def __init__(self, service: _Optional[str] = ..., environment: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListRecipientsRequest(_message.Message):
    __slots__ = ("cluster",)
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    def __init__(self, cluster: _Optional[str] = ...) -> None: ...

class ListRecipientsResponse(_message.Message):
    __slots__ = ("recipients",)
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    recipients: _containers.RepeatedCompositeFieldContainer[Recipient]
    def __init__(self, recipients: _Optional[_Iterable[_Union[Recipient, _Mapping]]] = ...) -> None: ...

class AddRecipientRequest(_message.Message):
    __slots__ = ("cluster", "recipient", "label")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    recipient: str
    label: str
    def __init__(self, cluster: _Optional[str] = ..., recipient: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class RemoveRecipientRequest(_message.Message):
    __slots__ = ("cluster", "recipient")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    recipient: str
    def __init__(self, cluster: _Optional[str] = ..., recipient: _Optional[str] = ...) -> None: ...
