"""The console scripts `sami-control` and `sami-agent`: a clear error, instead of a traceback,
when the package was installed without the extra that program needs (`pip install sami`
installs only the CLI; `sami[control]` and `sami[agent]` add the server's and the agent's
dependencies)."""

from __future__ import annotations

import importlib
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
    }
)


def _load(module: str, program: str, extra: str) -> Callable[[], int]:
    try:
        main: Callable[[], int] = importlib.import_module(module).main
    except ModuleNotFoundError as err:
        if err.name not in _EXTRA_MODULES:
            raise
        print(
            f"{program}: the Python package {err.name!r} is missing: {program} needs the "
            f"'{extra}' extra: pip install 'sami[{extra}]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return main


def control() -> int:
    return _load("sami_control.cli", "sami-control", "control")()


def agent() -> int:
    return _load("sami_agent.cli", "sami-agent", "agent")()
