"""Executors the agent can run, and the choice between them.

The Swarm executor is imported lazily: it needs the Docker SDK and an engine, which a dry-run
agent (demos, tests, trying Sami out) does without. The static_file executor needs neither,
but it is imported only when it is used too (by a non-dry-run agent): its archive download
and unpacking (tarfile, urllib.request) cost memory a dry-run agent does not need.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sami_agent.executor import Executor
from sami_agent.executors.dry_run import DryRunExecutor
from sami_agent.executors.routing import RoutingExecutor
from sami_common import logs

if TYPE_CHECKING:
    from sami_agent.cron import CronBackend, ScaledClock
    from sami_agent.executors.static_file import StaticFileExecutor
    from sami_agent.executors.swarm import SwarmExecutor
    from sami_agent.executors.swarm_cron import SwarmCronExecutor
    from sami_agent.keys import AgentKey

__all__ = [
    "DryRunExecutor",
    "ExecutorUnavailable",
    "Executors",
    "RoutingExecutor",
    "StaticFileExecutor",
    "build_executors",
]


def __getattr__(name: str) -> Any:
    # `from sami_agent.executors import StaticFileExecutor` imports it on first use.
    if name == "StaticFileExecutor":
        from sami_agent.executors.static_file import StaticFileExecutor

        return StaticFileExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ExecutorUnavailable(Exception):
    """The requested executor cannot be used here; the message says what to do instead."""


@dataclass(frozen=True)
class Executors:
    """What an agent runs: `executor` applies every assignment; `cron` is the backend of
    the agent's cron scheduler (sami_agent/cron.py), None when it runs no cron jobs."""

    executor: Executor
    cron: CronBackend | None = None


def build_executors(
    *,
    dry_run: bool,
    step_seconds: float = 0.3,
    ledger_path: str | os.PathLike[str] | None = None,
    agent_id: str = "",
    cron_clock: ScaledClock | None = None,
    key: AgentKey | None = None,
) -> Executors:
    """The dry-run executor when asked for (and no cron backend); else a RoutingExecutor
    over the Swarm executor (swarm, compose), its cron executor (cron, which is also the
    cron backend; `cron_clock` is its clock) and the static_file executor.

    When the Swarm executor cannot start (no Docker SDK, no engine answering), a warning is
    logged and the agent runs static_file deployments only: it does not advertise swarm,
    compose or cron, so the control plane sends it none, and it runs no cron jobs.
    `step_seconds`, `ledger_path` and `agent_id` only matter for the dry run; `key` (the
    agent's age key, which opens the secrets of its assignments) for Swarm deployments.
    """
    if dry_run:
        dry = DryRunExecutor(step_seconds=step_seconds, ledger_path=ledger_path, agent_id=agent_id)
        return Executors(dry)
    routes: dict[str, Executor] = {}
    cron: SwarmCronExecutor | None = None
    try:
        swarm, cron = _swarm_executors(cron_clock, key)
    except ExecutorUnavailable as exc:
        logs.get("sami_agent.executors").warning(
            "swarm_executor_unavailable",
            message="swarm and compose deployments are disabled on this agent",
            reason=str(exc),
            still_deploys="static_file",
        )
    else:
        routes.update(dict.fromkeys(swarm.capabilities, swarm))
        routes.update(dict.fromkeys(cron.capabilities, cron))
    from sami_agent.executors.static_file import StaticFileExecutor

    files = StaticFileExecutor()
    routes.update(dict.fromkeys(files.capabilities, files))
    return Executors(RoutingExecutor(routes), cron)


def _swarm_executors(
    clock: ScaledClock | None, key: AgentKey | None
) -> tuple[SwarmExecutor, SwarmCronExecutor]:
    """The Swarm executor and the cron executor on its engine, or ExecutorUnavailable."""
    try:
        swarm = importlib.import_module("sami_agent.executors.swarm")
        swarm_cron = importlib.import_module("sami_agent.executors.swarm_cron")
    except ImportError as exc:
        raise ExecutorUnavailable(
            f"the Swarm executor is unavailable ({exc}); reinstall Sami with its"
            " dependencies, or run the agent with --dry-run to try it without Docker"
        ) from exc
    try:
        executor: SwarmExecutor = swarm.SwarmExecutor(key=key)
    except Exception as exc:
        raise ExecutorUnavailable(
            f"could not start the Swarm executor: {exc}. Check that DOCKER_HOST (or"
            " /var/run/docker.sock) reaches a swarm manager's engine, or run with --dry-run."
        ) from exc
    return executor, swarm_cron.SwarmCronExecutor(executor, clock=clock)
