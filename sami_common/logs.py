"""structlog configuration: JSON when not on a terminal, readable when on one.

The level comes from SAMI_LOG_LEVEL (debug, info, warning, error; default info). Context
such as deployment id, service, environment and cluster is bound with
`structlog.contextvars.bind_contextvars` or `log.bind(...)` so every line carries it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(stream: TextIO | None = None, *, json: bool | None = None) -> None:
    out = stream if stream is not None else sys.stderr
    level_name = os.environ.get("SAMI_LOG_LEVEL", "info").lower()
    level = _LEVELS.get(level_name, logging.INFO)
    if json is None:
        fmt = os.environ.get("SAMI_LOG_FORMAT", "").lower()
        json = fmt == "json" or (fmt != "console" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
