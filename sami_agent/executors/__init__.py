"""Executors the agent can run, and the choice between them.

The Swarm executor is imported lazily: it needs the Docker SDK and an engine, which a dry-run
agent (demos, tests, trying Sami out) does without. The static_file executor needs neither,
but it is imported only when it is used too (by a non-dry-run agent): its archive download
and unpacking (tarfile, urllib.request) cost memory a dry-run agent does not need.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, cast

from sami_agent.executor import Executor
from sami_agent.executors.dry_run import DryRunExecutor
from sami_agent.executors.routing import RoutingExecutor
from sami_common import logs

if TYPE_CHECKING:
    from sami_agent.cron import ScaledClock
    from sami_agent.executors.static_file import StaticFileExecutor

__all__ = [
    "DryRunExecutor",
    "ExecutorUnavailable",
    "RoutingExecutor",
    "StaticFileExecutor",
    "build_executor",
]


def __getattr__(name: str) -> Any:
    # `from sami_agent.executors import StaticFileExecutor` imports it on first use.
    if name == "StaticFileExecutor":
        from sami_agent.executors.static_file import StaticFileExecutor

        return StaticFileExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ExecutorUnavailable(Exception):
    """The requested executor cannot be used here; the message says what to do instead."""


def build_executor(
    *,
    dry_run: bool,
    step_seconds: float = 0.3,
    ledger_path: str | os.PathLike[str] | None = None,
    agent_id: str = "",
    cron_clock: ScaledClock | None = None,
) -> Executor:
    """The dry-run executor when asked for; else a RoutingExecutor over the Swarm executor
    (swarm, compose) and the static_file executor.

    When the Swarm executor cannot start (no Docker SDK, no engine answering), a warning is
    logged and the agent runs static_file deployments only: it does not advertise swarm or
    compose, so the control plane sends it none. `step_seconds`, `ledger_path` and
    `agent_id` only matter for the dry run.
    With the Swarm executor, `cron` deployments go to its cron executor (which is also the
    agent's cron scheduler backend, see sami_agent/cron.py); `cron_clock` is its clock.
    """
    if dry_run:
        return DryRunExecutor(step_seconds=step_seconds, ledger_path=ledger_path, agent_id=agent_id)
    routes: dict[str, Executor] = {}
    try:
        swarm = _swarm_executor()
    except ExecutorUnavailable as exc:
        logs.get("sami_agent.executors").warning(
            "swarm and compose deployments are disabled on this agent",
            reason=str(exc),
            still_deploys="static_file",
        )
    else:
        routes.update(dict.fromkeys(swarm.capabilities, swarm))
        cron_executor = getattr(swarm, "cron_executor", None)
        if cron_executor is not None:
            routes["cron"] = cron_executor(cron_clock)
    from sami_agent.executors.static_file import StaticFileExecutor

    files = StaticFileExecutor()
    routes.update(dict.fromkeys(files.capabilities, files))
    return RoutingExecutor(routes)


def _swarm_executor() -> Executor:
    try:
        swarm = importlib.import_module("sami_agent.executors.swarm")
    except ImportError as exc:
        raise ExecutorUnavailable(
            f"the Swarm executor is unavailable ({exc}); reinstall Sami with its"
            " dependencies, or run the agent with --dry-run to try it without Docker"
        ) from exc
    try:
        return cast(Executor, swarm.SwarmExecutor())
    except Exception as exc:
        raise ExecutorUnavailable(
            f"could not start the Swarm executor: {exc}. Check that DOCKER_HOST (or"
            " /var/run/docker.sock) reaches a swarm manager's engine, or run with --dry-run."
        ) from exc
