"""The control plane's Prometheus metrics (docs/observability.md lists them).

Two kinds, chosen for what each question needs:

- What happened (transitions, durations, RPCs, webhook calls) is counted as it happens:
  `ControlMetrics.observe` is a `ControlPlane` observer, called with the events of each
  committed transaction, so a counter never counts a change that was rolled back.
  Counters restart at zero with the process; Prometheus' `rate()`/`increase()` handle that.
- What is true now (live deployments by state, queue depth, connected agents, watchers) is
  read from the store and the core when Prometheus scrapes, so it is right after a restart
  and never drifts. Only live (non-terminal) deployments are counted that way: counting
  every deployment ever made at each scrape would read the whole table; the terminal ones
  are what `sami_deployment_transitions_total` counts.

Labels are bounded: states and environments are fixed sets, clusters are the ones created,
RPC methods are those the server knows (anything else is `unknown`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sami_common.metrics import DURATION_BUCKETS, new_registry
from sami_control.core.controlplane import ControlPlane
from sami_control.core.model import Deployment, Event, EventType, State
from sami_manifests import ENVIRONMENTS

log = structlog.get_logger("sami.metrics")

LIVE_STATES = (State.AWAITING_APPROVAL, State.QUEUED, State.ASSIGNED, State.IN_PROGRESS)


class ControlMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or new_registry()
        r = self.registry
        self.transitions = PromCounter(
            "sami_deployment_transitions",
            "Deployment state changes, by the state entered and the environment.",
            ["state", "environment"],
            registry=r,
        )
        self.queue_wait = PromHistogram(
            "sami_deployment_queue_wait_seconds",
            "Seconds from a deployment's creation to its first assignment to an agent.",
            ["environment"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.rollout = PromHistogram(
            "sami_deployment_rollout_seconds",
            "Seconds from a deployment's first assignment to its end, by how it ended.",
            ["environment", "state"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.rpc_handled = PromCounter(
            "sami_grpc_server_handled",
            "RPCs completed, by service, method and status code (refused ones included).",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=r,
        )
        self.rpc_seconds = PromHistogram(
            "sami_grpc_server_handling_seconds",
            "Seconds to answer an RPC with a single response (refusals included; streams are "
            "not timed).",
            ["grpc_service", "grpc_method"],
            buckets=DURATION_BUCKETS[:14],
            registry=r,
        )
        self.webhook_requests = PromCounter(
            "sami_webhook_requests",
            "Requests to the webhook endpoint, by HTTP status.",
            ["code"],
            registry=r,
        )
        # First assignment time of the deployments being rolled out (for the rollout
        # duration). A deployment in flight across a restart is not timed.
        self._assigned_at: dict[str, float] = {}
        self._live: _LiveState | None = None

    def observe(self, events: list[Event], deployments: dict[str, Deployment]) -> None:
        """A ControlPlane observer: called after each commit with what it changed."""
        for e in events:
            if e.type is not EventType.STATE_CHANGED:
                continue
            d = deployments.get(e.deployment_id)
            env = d.environment if d else "unknown"
            self.transitions.labels(e.state.name, env).inc()
            if (
                e.state is State.ASSIGNED
                and e.attempt == 1
                and e.deployment_id not in self._assigned_at
            ):
                self._assigned_at[e.deployment_id] = e.time
                if d is not None and d.created_at:
                    self.queue_wait.labels(env).observe(max(0.0, e.time - d.created_at))
            elif e.state.terminal:
                started = self._assigned_at.pop(e.deployment_id, None)
                if started is not None:
                    self.rollout.labels(env, e.state.name).observe(max(0.0, e.time - started))

    def attach(self, core: ControlPlane) -> None:
        core.publisher.observers.append(self.observe)
        self._live = _LiveState(core)
        self.registry.register(self._live)

    async def before_scrape(self) -> None:
        """Read what is true now from the store (the endpoint awaits it before each scrape)."""
        if self._live is not None:
            await self._live.refresh()

    def rpc(self, service: str, method: str, code: str, seconds: float | None) -> None:
        self.rpc_handled.labels(service, method, code).inc()
        if seconds is not None:
            self.rpc_seconds.labels(service, method).observe(seconds)


class _LiveState(Collector):
    """Read at scrape time, on the server's event loop (see sami_common.metrics): the store
    is read by `refresh()`, awaited by the endpoint before each scrape (a store's reads are
    coroutines, a collector's collect() is not), and collect() reports what it read."""

    def __init__(self, core: ControlPlane) -> None:
        self.core = core
        # What the last refresh() read from the store; None if it failed (nothing reported).
        self._live: list[Deployment] | None = None
        self._clusters: list[str] = []
        # Drifted live services (core/live_status.py) by environment.
        self._drifted: Counter[str] = Counter()

    def describe(self) -> list[Metric]:
        return []  # collected fresh each scrape; nothing to check at registration

    async def refresh(self) -> None:
        self._live = None
        try:
            await self.core.store.writable()
            async with self.core.store.tx() as tx:
                live = await tx.deployments_in_states(list(LIVE_STATES))
                clusters = [c.id for c in await tx.list_clusters()]
                drifted = Counter(
                    r.environment for r in await tx.list_live_services() if r.drift_reason
                )
        except Exception:  # a busy database must not fail the whole scrape
            log.exception("metrics_store_read_failed")
            return
        self._live, self._clusters, self._drifted = live, clusters, drifted

    def collect(self) -> Iterator[Metric]:
        live, clusters = self._live, self._clusters
        if live is None:
            return
        deployments = GaugeMetricFamily(
            "sami_deployments",
            "Live (not yet ended) deployments, by state and environment, read from the store.",
            labels=["state", "environment"],
        )
        queue = GaugeMetricFamily(
            "sami_queue_depth",
            "Deployments waiting for an agent (QUEUED), by cluster.",
            labels=["cluster"],
        )
        agents = GaugeMetricFamily(
            "sami_agents_connected",
            "Agents with an open stream, by cluster.",
            labels=["cluster"],
        )
        by_state = Counter((d.state, d.environment) for d in live)
        for state in LIVE_STATES:
            for env in sorted({*ENVIRONMENTS, *(e for _, e in by_state)}):
                deployments.add_metric([state.name, env], by_state.get((state, env), 0))
        queued = Counter(d.cluster for d in live if d.state is State.QUEUED)
        connected = Counter(s.cluster for s in self.core.sessions.all() if not s.closed)
        for cluster in sorted({*clusters, *queued, *connected}):
            queue.add_metric([cluster], queued.get(cluster, 0))
            agents.add_metric([cluster], connected.get(cluster, 0))
        drifted = GaugeMetricFamily(
            "sami_drifted_services",
            "Live services whose state differs from what Sami deployed (docs/status.md), by"
            " environment.",
            labels=["environment"],
        )
        for env in sorted({*ENVIRONMENTS, *self._drifted}):
            drifted.add_metric([env], self._drifted.get(env, 0))
        yield deployments
        yield queue
        yield agents
        yield drifted
        yield GaugeMetricFamily(
            "sami_watchers",
            "Open WatchDeployment streams (including webhook callers waiting for an outcome).",
            value=self.core.hub.watcher_count(),
        )
