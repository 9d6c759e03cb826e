"""Domain errors. sami_control.api.errors maps each to one gRPC status, in one place.

`code` names the status in words (the audit log records it for refused requests); it is
plain text, so the core still imports no grpc.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """Bad input. `violations` name each offending field."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.violations: list[tuple[str, str]] = [(field, description)]

    @classmethod
    def many(cls, violations: list[tuple[str, str]]) -> InvalidArgument:
        first = cls(*violations[0])
        first.violations = list(violations)
        if len(violations) > 1:
            first.message += f" (and {len(violations) - 1} more problems)"
        return first


class NotFound(DomainError):
    code = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    """A per-token limit (open streams) is reached."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    """What the call needs is not reachable now (no agent connected, the agent left):
    retrying later (or on another replica) may succeed."""

    code = "UNAVAILABLE"
