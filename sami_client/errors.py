"""The one error type of the client, and the exit statuses of the `sami` CLI.

Every failed RPC becomes a `SamiError` carrying the gRPC status code, the server's message and
the field violations of a `google.rpc.BadRequest` detail, so callers never handle
`grpc.RpcError` (whose details are only reachable through trailing metadata).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class ExitCode(enum.IntEnum):
    """What CI reads from `sami`: each status means one kind of thing to do next."""

    SUCCEEDED = 0
    # The deployment ended FAILED, ROLLED_BACK, CANCELLED or SUPERSEDED.
    DEPLOYMENT_FAILED = 1
    # The request was refused as given (bad input, permission, unknown name): retrying won't help.
    REJECTED = 2
    # Sami could not be reached or authenticated, or the wait timed out: the outcome is unknown.
    UNREACHABLE = 3


# Codes that mean "the request as given will not succeed"; every other code means the outcome
# is unknown (control plane unreachable, unauthenticated, timed out, or misbehaving).
_REJECTED_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


class UsageError(Exception):
    """The command line is wrong in a way argparse cannot check (or names nothing that can be
    acted on, like a rollback with no earlier deployment); the CLI exits 2."""


class SamiError(Exception):
    """An RPC (or a client-side check standing in for one) failed."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: Sequence[tuple[str, str]] = (),
        details: Sequence[str] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field_violations: list[tuple[str, str]] = list(field_violations)
        # Other decoded details (precondition failures, help links), one readable line each.
        self.details: list[str] = list(details)

    @property
    def exit_code(self) -> int:
        return int(ExitCode.REJECTED if self.code in _REJECTED_CODES else ExitCode.UNREACHABLE)

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> SamiError:
        """Convert what a stub raised; the sync stubs' errors are also `grpc.Call`s."""
        code = _call_attr(err, "code")
        message = _call_attr(err, "details")
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        if not isinstance(message, str) or not message:
            message = str(err)
        violations, details = _decode_details(err)
        return cls(code, message, violations, details)


class WatchTimeout(SamiError):
    """The wait ran out of time; the deployment keeps going on the control plane."""

    def __init__(
        self,
        deployment: str,
        timeout: float | None,
        last_sequence: int,
        last_error: SamiError | None,
    ) -> None:
        what = f"timed out after {timeout:g}s" if timeout is not None else "timed out"
        message = f"{what} waiting for deployment {deployment}"
        if last_error is not None:
            message += f" (sami-control unreachable: {last_error.code.name}: {last_error.message})"
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, message)
        self.deployment = deployment
        self.last_sequence = last_sequence
        # Set when the time ran out while reconnecting rather than while connected.
        self.last_error = last_error


class QueueTimeout(SamiError):
    """No agent picked the deployment up within `--queue-timeout`: it stays QUEUED on the
    control plane (and may still run later), so the outcome is unknown: exit 3."""

    def __init__(self, deployment: str, queue_timeout: float, why: str) -> None:
        super().__init__(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"deployment {deployment} was still QUEUED after {queue_timeout:g}s (--queue-timeout)"
            f": {why}; it stays queued and runs when an agent picks it up, or cancel it with "
            f"`sami cancel {deployment}`",
        )
        self.deployment = deployment


class WatchGapError(SamiError):
    """The control plane skipped an event: a server bug, never papered over by the client."""

    def __init__(self, deployment: str, expected: int, got: int) -> None:
        super().__init__(
            grpc.StatusCode.DATA_LOSS,
            f"deployment {deployment}: expected event #{expected}, received #{got} "
            "(the control plane skipped events; please report this bug)",
        )
        self.deployment = deployment
        self.expected = expected
        self.got = got


def _call_attr(err: grpc.RpcError, name: str) -> object:
    attr = getattr(err, name, None)
    return attr() if callable(attr) else None


def _decode_details(err: grpc.RpcError) -> tuple[list[tuple[str, str]], list[str]]:
    try:
        status: status_pb2.Status | None = rpc_status.from_call(err)
    except (AttributeError, ValueError):
        # Not a grpc.Call, or a rich status that contradicts the call's own: keep the message.
        return [], []
    if status is None:
        return [], []
    violations: list[tuple[str, str]] = []
    details: list[str] = []
    for any_detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        precondition = error_details_pb2.PreconditionFailure()
        help_detail = error_details_pb2.Help()
        if any_detail.Unpack(bad_request):
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
        elif any_detail.Unpack(precondition):
            details.extend(
                f"{v.subject}: {v.description}" if v.subject else v.description
                for v in precondition.violations
            )
        elif any_detail.Unpack(help_detail):
            details.extend(f"{link.description}: {link.url}" for link in help_detail.links)
    return violations, details
