"""structlog configuration: JSON when not on a terminal, readable when on one.

The level comes from SAMI_LOG_LEVEL (debug, info, warning, error; default info; anything else
is refused with the valid values). Context such as deployment id, service, environment and
cluster is bound with `structlog.contextvars.bind_contextvars` or `log.bind(...)` so every
line carries it.

With JSON logs every line a program writes is one JSON object, whatever writes it, so a log
shipper never meets a line it cannot parse: the standard `logging` module (asyncio, grpc's
Python side) is rendered by the same renderer, as are uncaught exceptions (in the main
thread, in other threads, in `__del__` at shutdown) and warnings. gRPC's C core writes to
stderr itself, in its own format: `quiet_grpc_core()` turns it off unless the operator set
GRPC_VERBOSITY; what it would say reaches Sami as errors and status codes, which are logged.
Event names are snake_case (`deployment_state`, `job_ended`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import types
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class InvalidLogLevel(ValueError):
    """SAMI_LOG_LEVEL names no level; the message lists the valid ones."""


def quiet_grpc_core() -> None:
    """Keep gRPC's C core from writing its own (non-JSON) lines to stderr. Must run before
    grpc is imported: the core reads GRPC_VERBOSITY when it starts. An operator who sets
    GRPC_VERBOSITY (or GRPC_TRACE) to debug gRPC itself gets its lines, knowingly."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def level_from_env() -> int:
    raw = os.environ.get("SAMI_LOG_LEVEL", "")
    name = raw.strip().lower() or "info"
    if name not in LEVELS:
        raise InvalidLogLevel(
            f"SAMI_LOG_LEVEL={raw!r} is not a log level: use one of {', '.join(LEVELS)}"
        )
    return LEVELS[name]


def configure(stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Raises InvalidLogLevel for an unknown SAMI_LOG_LEVEL (before changing anything)."""
    level = level_from_env()
    out = stream if stream is not None else sys.stderr
    if json is None:
        fmt = os.environ.get("SAMI_LOG_FORMAT", "").lower()
        json = fmt == "json" or (fmt != "console" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(out, renderer, stamp, level)
    _log_uncaught_exceptions(structlog.get_logger("sami"))


def _route_standard_logging(
    out: TextIO, renderer: structlog.typing.Processor, stamp: Any, level: int
) -> None:
    """Lines of the `logging` module (asyncio's "Task exception was never retrieved",
    grpc's Python side, warnings) rendered like Sami's own: event `python_log`, the
    library's text in `message`, its logger in `logger`."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
            _library_event,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)


def _library_event(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
    event_dict["message"] = event_dict.pop("event", "")
    event_dict["event"] = "python_log"
    return event_dict


def _log_uncaught_exceptions(log: Any) -> None:
    """Tracebacks Python would print as text (an exception nobody caught, in any thread, or
    one raised in `__del__` during shutdown) become one log line each, the traceback in its
    `exception` field."""

    def main_thread(
        kind: type[BaseException], value: BaseException, tb: types.TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            log.info("interrupted")
            return
        log.critical("uncaught_exception", exc_info=(kind, value, tb))

    def other_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        log.error(
            "uncaught_exception",
            thread=args.thread.name if args.thread else None,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    def unraisable(u: Any) -> None:
        log.warning(
            "unraisable_exception",
            message=u.err_msg or "Exception ignored",
            object=repr(u.object)[:200],
            exc_info=(u.exc_type, u.exc_value, u.exc_traceback),
        )

    sys.excepthook = main_thread
    threading.excepthook = other_thread
    sys.unraisablehook = unraisable


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
