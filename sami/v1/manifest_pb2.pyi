import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ManifestFile(_message.Message):
    __slots__ = ("path", "content", "sha256", "size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: bytes
    sha256: str
    size: int
    def __init__(self, path: _Optional[str] = ..., content: _Optional[bytes] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ManifestEntry(_message.Message):
    __slots__ = ("service", "deployment_type", "environment", "folder", "pr_deploy", "stack_files", "image_services", "converge_timeout_seconds", "stack_name", "cluster", "static_target_dir", "keep_releases", "cron_schedule", "promote_after_seconds", "queue", "approval_required", "approvers", "approval_expires_seconds", "environment_url", "on_drift")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    PR_DEPLOY_FIELD_NUMBER: _ClassVar[int]
    STACK_FILES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SERVICES_FIELD_NUMBER: _ClassVar[int]
    CONVERGE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STACK_NAME_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    STATIC_TARGET_DIR_FIELD_NUMBER: _ClassVar[int]
    KEEP_RELEASES_FIELD_NUMBER: _ClassVar[int]
    CRON_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVERS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_EXPIRES_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_URL_FIELD_NUMBER: _ClassVar[int]
    ON_DRIFT_FIELD_NUMBER: _ClassVar[int]
    service: str
    deployment_type: str
    environment: str
    folder: str
    pr_deploy: bool
    stack_files: _containers.RepeatedScalarFieldContainer[str]
    image_services: _containers.RepeatedScalarFieldContainer[str]
    converge_timeout_seconds: int
    stack_name: str
    cluster: str
    static_target_dir: str
    keep_releases: int
    cron_schedule: str
    promote_after_seconds: int
    queue: str
    approval_required: bool
    approvers: _containers.RepeatedScalarFieldContainer[str]
    approval_expires_seconds: int
    environment_url: str
    on_drift: str
    def __init__(self, service: _Optional[str] = ..., deployment_type: _Optional[str] = ..., environment: _Optional[str] = ..., folder: _Optional[str] = ..., pr_deploy: _Optional[bool] = ..., stack_files: _Optional[_Iterable[str]] = ..., image_services: _Optional[_Iterable[str]] = ..., converge_timeout_seconds: _Optional[int] = ..., stack_name: _Optional[str] = ..., cluster: _Optional[str] = ..., static_target_dir: _Optional[str] = ..., keep_releases: _Optional[int] = ..., cron_schedule: _Optional[str] = ..., promote_after_seconds: _Optional[int] = ..., queue: _Optional[str] = ..., approval_required: _Optional[bool] = ..., approvers: _Optional[_Iterable[str]] = ..., approval_expires_seconds: _Optional[int] = ..., environment_url: _Optional[str] = ..., on_drift: _Optional[str] = ...) -> None: ...

class ManifestProblem(_message.Message):
    __slots__ = ("severity", "file", "line", "message", "hint", "code")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    severity: str
    file: str
    line: int
    message: str
    hint: str
    code: str
    def __init__(self, severity: _Optional[str] = ..., file: _Optional[str] = ..., line: _Optional[int] = ..., message: _Optional[str] = ..., hint: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class ManifestRevision(_message.Message):
    __slots__ = ("name", "id", "commit", "entries", "warnings", "files", "file_count", "create_time", "created_by", "current")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    commit: str
    entries: _containers.RepeatedCompositeFieldContainer[ManifestEntry]
    warnings: _containers.RepeatedCompositeFieldContainer[ManifestProblem]
    files: _containers.RepeatedCompositeFieldContainer[ManifestFile]
    file_count: int
    create_time: _timestamp_pb2.Timestamp
    created_by: str
    current: bool
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., commit: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[ManifestEntry, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[ManifestProblem, _Mapping]]] = ..., files: _Optional[_Iterable[_Union[ManifestFile, _Mapping]]] = ..., file_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., current: _Optional[bool] = ...) -> None: ...

class SyncManifestsRequest(_message.Message):
    __slots__ = ("commit", "files")
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    commit: str
    files: _containers.RepeatedCompositeFieldContainer[ManifestFile]
    def __init__(self, commit: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ManifestFile, _Mapping]]] = ...) -> None: ...

class SyncManifestsResponse(_message.Message):
    __slots__ = ("revision", "created")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    revision: ManifestRevision
    created: bool
    def __init__(self, revision: _Optional[_Union[ManifestRevision, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetManifestRevisionRequest(_message.Message):
    __slots__ = ("name", "include_files")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FILES_FIELD_NUMBER: _ClassVar[int]
    name: str
    include_files: bool
    def __init__(self, name: _Optional[str] = ..., include_files: _Optional[bool] = ...) -> None: ...

class ListManifestRevisionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListManifestRevisionsResponse(_message.Message):
    __slots__ = ("revisions", "next_page_token")
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[ManifestRevision]
    next_page_token: str
    def __init__(self, revisions: _Optional[_Iterable[_Union[ManifestRevision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
