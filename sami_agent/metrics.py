"""The agent's Prometheus metrics (docs/observability.md), in a registry of its own.

`sami-agent --metrics-listen HOST:PORT` serves them on the agent's event loop; the
`Agent` updates them as it goes (connection.py) whether or not they are served.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from sami_common.metrics import DURATION_BUCKETS, new_registry


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
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
        self._sessions = 0

    def describe_agent(self, agent_id: str, version: str) -> None:
        self.info.info({"agent_id": agent_id, "version": version})

    def count_running(self, running: Callable[[], int]) -> None:
        """Read at scrape time (on the agent's event loop)."""
        self.jobs_running.set_function(lambda: float(running()))

    def session_started(self) -> None:
        self._sessions += 1
        if self._sessions > 1:
            self.reconnects.inc()

    def welcomed(self) -> None:
        self.connected.set(1)

    def session_ended(self) -> None:
        self.connected.set(0)

    def heartbeat_sent(self) -> None:
        self.last_heartbeat.set(time.time())

    def job_ended(self, outcome: str, started: float) -> None:
        """`started`: time.monotonic() when the assignment was received."""
        self.jobs.labels(outcome).inc()
        self.job_seconds.labels(outcome).observe(max(0.0, time.monotonic() - started))
