"""One executor in front of several: each job goes to the executor of its deployment type."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from sami_agent.executor import (
    ExecutionResult,
    Executor,
    Job,
    LiveStatusSource,
    Outcome,
    PreviewLister,
    PreviewStack,
    ProgressReporter,
)
from sami_manifests import DEPLOYMENT_TYPES

__all__ = ["RoutingExecutor"]


class RoutingExecutor:
    """Dispatches on `job.deployment_type`.

    `executors` maps a deployment type to the executor that deploys it; one executor may
    serve several types (`{"swarm": swarm, "compose": swarm, "static_file": files}`). The
    capabilities are the union of what is routed and the executors' non-type capabilities.
    """

    def __init__(self, executors: Mapping[str, Executor]) -> None:
        if not executors:
            raise ValueError("a RoutingExecutor needs at least one executor")
        for kind, executor in executors.items():
            if kind not in executor.capabilities:
                raise ValueError(
                    f"{type(executor).__name__} cannot deploy {kind!r}"
                    f" (it deploys: {', '.join(executor.capabilities)})"
                )
        self.executors: dict[str, Executor] = dict(executors)
        # The routed types, then the executors' other capabilities that are no deployment
        # type (flags such as "dry-run"): a type an executor could deploy but that is not
        # routed to it is not advertised, or the control plane would send jobs that fail.
        capabilities = dict.fromkeys(self.executors)
        for executor in self.executors.values():
            capabilities.update(
                dict.fromkeys(c for c in executor.capabilities if c not in DEPLOYMENT_TYPES)
            )
        self.capabilities: tuple[str, ...] = tuple(capabilities)

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        executor = self.executors.get(job.deployment_type)
        if executor is None:
            return ExecutionResult(
                Outcome.FAILED,
                f"this agent has no executor for {job.deployment_type or 'untyped'}"
                f" deployments (it deploys: {', '.join(sorted(self.executors))})",
            )
        return executor.execute(job, report, cancelled)

    def list_previews(self) -> list[PreviewStack]:
        """The previews of every routed executor that runs them."""
        found: dict[str, PreviewStack] = {}
        for executor in dict.fromkeys(self.executors.values()):
            if isinstance(executor, PreviewLister):
                for preview in executor.list_previews():
                    found.setdefault(preview.stack_name, preview)
        return sorted(found.values(), key=lambda p: p.stack_name)

    def live_status_source(self) -> LiveStatusSource | None:
        """The routed executor that reports live status (the swarm one), if any."""
        for executor in dict.fromkeys(self.executors.values()):
            if isinstance(executor, LiveStatusSource):
                return executor
        return None
