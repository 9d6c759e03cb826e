"""Domain errors → gRPC status codes, in one place.

INVALID_ARGUMENT carries google.rpc.BadRequest details naming each field, so clients (and
grpcurl) can show which input was wrong. Anything unexpected becomes INTERNAL with an id to
find the stack trace in the server log; the trace itself never reaches the client.
"""

from __future__ import annotations

import uuid

import grpc
import grpc.aio
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sami_control.core import errors
from sami_control.core.audit import clean
from sami_control.core.store import StorageFailed

log = structlog.get_logger("sami.api")

CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

# Messages may quote what the caller sent: bounded, control characters escaped, so an error
# cannot smuggle terminal escapes or right-to-left overrides into a CI log.
MAX_MESSAGE = 2000
MAX_FIELD = 300


def to_status(exc: errors.DomainError) -> grpc.Status:
    code = CODES.get(type(exc), grpc.StatusCode.INTERNAL)
    st = status_pb2.Status(code=code.value[0], message=_printable(exc.message, MAX_MESSAGE))
    if isinstance(exc, errors.InvalidArgument):
        br = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_printable(f, MAX_FIELD), description=_printable(d, MAX_MESSAGE)
                )
                for f, d in exc.violations[:100]
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(br)
        st.details.append(detail)
    return rpc_status.to_status(st)


def _printable(text: str, limit: int) -> str:
    # Newlines are kept: some messages list several problems, one a line.
    return "\n".join(clean(line, limit) for line in text.split("\n"))[: limit * 2]


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, errors.DomainError):
        status = to_status(exc)
    elif isinstance(exc, StorageFailed):
        # Nothing of the call was kept: retrying (with the same request_id) is safe.
        log.error("storage_failed", error=str(exc))
        status = rpc_status.to_status(
            status_pb2.Status(code=code_pb2.UNAVAILABLE, message=_printable(str(exc), MAX_MESSAGE))
        )
    else:
        incident = uuid.uuid4().hex[:12]
        log.exception("internal_error", incident=incident)
        status = rpc_status.to_status(
            status_pb2.Status(
                code=code_pb2.INTERNAL,
                message=f"internal error (incident {incident} in the sami-control log)",
            )
        )
    await context.abort(status.code, status.details, status.trailing_metadata)


def is_abort(exc: BaseException) -> bool:
    # context.abort() raises this to unwind the handler; let it through untouched.
    return isinstance(exc, grpc.aio.AbortError) or type(exc).__name__ == "AbortError"
