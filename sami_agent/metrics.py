"""The agent's Prometheus metrics (docs/observability.md), in a registry of its own.

`sami-agent --metrics-listen HOST:PORT` serves them on the agent's event loop; the
`Agent` updates them as it goes (connection.py) whether or not they are served.

prometheus_client (and its HTTP and WSGI modules) costs a few MB of memory that an idle
agent whose metrics nobody reads does not need: it is imported, and the metric objects
are created, only when `registry` is first read (to serve or inspect them) or when a job
ends (the job counter and duration histogram need their objects). Until then the few
connection values are kept in plain attributes and copied into the metrics when they are
created, so what is served is the same either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class _Metrics:
    """The prometheus_client objects; created on first use (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Gauge, Histogram, Info

        from sami_common.metrics import DURATION_BUCKETS, new_registry

        self.registry = registry or new_registry()
        r = self.registry
        self.info = Info("sami_agent", "This agent: its id and version.", registry=r)
        self.jobs = Counter(
            "sami_agent_jobs",
            "Jobs ended, by outcome (succeeded, failed, rolled_back, cancelled; dropped: the "
            "lease was taken away before the job ended, so its result was not reported).",
            ["outcome"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "sami_agent_job_duration_seconds",
            "Seconds from receiving an assignment to the job's end, by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.jobs_running = Gauge(
            "sami_agent_jobs_running", "Leases held whose job has not ended.", registry=r
        )
        self.connected = Gauge(
            "sami_agent_connected",
            "1 while the stream to the control plane is open and welcomed, else 0.",
            registry=r,
        )
        self.reconnects = Counter(
            "sami_agent_reconnects",
            "Streams opened again after the previous one ended or could not be opened.",
            registry=r,
        )
        self.last_heartbeat = Gauge(
            "sami_agent_last_heartbeat_timestamp_seconds",
            "Unix time of the last heartbeat sent to the control plane (0: none yet).",
            registry=r,
        )


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._registry = registry
        self._metrics: _Metrics | None = None
        # The values kept until the metrics are created.
        self._info: dict[str, str] | None = None
        self._running: Callable[[], int] | None = None
        self._connected = 0.0
        self._last_heartbeat = 0.0
        # Streams opened: each one after the first is a reconnect.
        self._sessions = 0

    @property
    def registry(self) -> CollectorRegistry:
        return self._created().registry

    def _created(self) -> _Metrics:
        m = self._metrics
        if m is None:
            m = self._metrics = _Metrics(self._registry)
            if self._info is not None:
                m.info.info(self._info)
            if self._running is not None:
                running = self._running
                m.jobs_running.set_function(lambda: float(running()))
            m.connected.set(self._connected)
            if self._sessions > 1:
                m.reconnects.inc(self._sessions - 1)
            m.last_heartbeat.set(self._last_heartbeat)
        return m

    def describe_agent(self, agent_id: str, version: str) -> None:
        self._info = {"agent_id": agent_id, "version": version}
        if self._metrics is not None:
            self._metrics.info.info(self._info)

    def count_running(self, running: Callable[[], int]) -> None:
        """Read at scrape time (on the agent's event loop)."""
        self._running = running
        if self._metrics is not None:
            self._metrics.jobs_running.set_function(lambda: float(running()))

    def session_started(self) -> None:
        self._sessions += 1
        if self._sessions > 1 and self._metrics is not None:
            self._metrics.reconnects.inc()

    def welcomed(self) -> None:
        self._set_connected(1.0)

    def session_ended(self) -> None:
        self._set_connected(0.0)

    def _set_connected(self, value: float) -> None:
        self._connected = value
        if self._metrics is not None:
            self._metrics.connected.set(value)

    def heartbeat_sent(self) -> None:
        self._last_heartbeat = time.time()
        if self._metrics is not None:
            self._metrics.last_heartbeat.set(self._last_heartbeat)

    def job_ended(self, outcome: str, started: float) -> None:
        """`started`: time.monotonic() when the assignment was received."""
        m = self._created()
        m.jobs.labels(outcome).inc()
        m.job_seconds.labels(outcome).observe(max(0.0, time.monotonic() - started))
