"""Executors the agent can run, and the choice between them.

The Swarm executor is imported lazily: it needs the Docker SDK and an engine, which a dry-run
agent (demos, tests, trying Sami out) does without.
"""

from __future__ import annotations

import importlib
import os
from typing import cast

from sami_agent.executor import Executor
from sami_agent.executors.dry_run import DryRunExecutor

__all__ = ["DryRunExecutor", "ExecutorUnavailable", "build_executor"]


class ExecutorUnavailable(Exception):
    """The requested executor cannot be used here; the message says what to do instead."""


def build_executor(
    *,
    dry_run: bool,
    step_seconds: float = 0.3,
    ledger_path: str | os.PathLike[str] | None = None,
    agent_id: str = "",
) -> Executor:
    """The dry-run executor when asked for, else the Swarm executor.

    `step_seconds`, `ledger_path` and `agent_id` only matter for the dry run.
    """
    if dry_run:
        return DryRunExecutor(step_seconds=step_seconds, ledger_path=ledger_path, agent_id=agent_id)
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
