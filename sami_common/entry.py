"""The console scripts `sami-control` and `sami-agent`: a clear error, instead of a traceback,
when the package was installed without the extra that program needs (`pip install sami`
installs only the CLI; `sami[control]` and `sami[agent]` add the server's and the agent's
dependencies)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable

# The top-level modules that only an extra installs.
_EXTRA_MODULES = frozenset(
    {
        "structlog",
        "docker",
        "cryptography",
        "prometheus_client",
        "grpc_health",
        "grpc_reflection",
        "aiohttp",
        "jinja2",
        "asyncpg",
    }
)
# What `sami-control` needs from its extra. Only `serve` imports most of them, and only when it
# runs (the other commands start faster without the server): look them up without importing
# them, so that a missing one is named before any command starts.
_CONTROL_NEEDS = (
    "structlog",
    "grpc_health",
    "grpc_reflection",
    "prometheus_client",
    "cryptography",
    "asyncpg",
    "aiohttp",
    "jinja2",
)


def _missing_extra(program: str, extra: str, name: str) -> SystemExit:
    print(
        f"{program}: the Python package {name!r} is missing: {program} needs the "
        f"'{extra}' extra: pip install 'sami[{extra}]'",
        file=sys.stderr,
    )
    return SystemExit(2)


def _load(module: str, program: str, extra: str) -> Callable[[], int]:
    try:
        main: Callable[[], int] = importlib.import_module(module).main
    except ModuleNotFoundError as err:
        if err.name not in _EXTRA_MODULES:
            raise
        raise _missing_extra(program, extra, err.name) from None
    return main


def control() -> int:
    for name in _CONTROL_NEEDS:
        if importlib.util.find_spec(name) is None:
            raise _missing_extra("sami-control", "control", name)
    return _load("sami_control.cli", "sami-control", "control")()


def agent() -> int:
    return _load("sami_agent.cli", "sami-agent", "agent")()
