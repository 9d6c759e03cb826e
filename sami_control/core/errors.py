"""Domain errors. sami_control.api.errors maps each to one gRPC status, in one place."""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """Bad input. `violations` name each offending field."""

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
    pass


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    pass


class Unauthenticated(DomainError):
    pass


class PermissionDenied(DomainError):
    pass
