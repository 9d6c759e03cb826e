"""The counts a run uses: `Params`, its full and --quick sets, and `--set PARAM=VALUE`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Params:
    name: str
    # 1, 2: closed loops
    concurrency: int
    duration: float
    warmup: float
    max_calls: int
    # CreateDeployment runs once per entry (services in the manifests, services the calls
    # spread over: as many deployments stay queued, no agent being connected).
    create_runs: tuple[tuple[int, int], ...]
    # 3
    lifecycle_concurrency: int
    lifecycle_agents: int
    lifecycle_duration: float
    # 4
    pickup_agents: int
    pickup_procs: int
    pickup_rate: float
    pickup_duration: float
    pickup_services: int
    # 5
    idle_agents: int
    idle_procs: int
    idle_window: float
    idle_settle: float
    # 6
    fanout_watchers: int
    fanout_procs: int
    fanout_events: int
    fanout_interval: float
    # 7
    footprint_settle: float
    # 8
    swarm_rounds: int
    # 16: manual changes on the real swarm, timed until drift is visible
    drift_rounds: int
    # 17: agents reporting live status (one cluster each, this many services), the
    # processes they run in, the window measured idle and then reporting, the pause before
    # each window, and the mean seconds between an agent's changed services
    status_agents: int
    status_procs: int
    status_services: int
    status_window: float
    status_settle: float
    status_change_interval: float
    # 18: `sami logs` next to `docker service logs`: the tails read (comma-separated), the
    # lines each task prints (at least the largest tail), rounds, the service's replicas
    logs_tails: str
    logs_lines: int
    logs_rounds: int
    logs_replicas: int
    # 9: the dashboard's overview: services, deployments created per service and
    # environment, page loads measured
    ui_services: int
    ui_rounds: int
    ui_loads: int
    # 10-14: PostgreSQL and two replicas (10-12 reuse 2-4's counts; 13 the fan-out's events
    # and pace; 14 the idle window and the pickup's pace): watchers on replica B and their
    # processes, idle agents over both replicas and their processes
    replica_watchers: int
    replica_watch_procs: int
    replica_idle_agents: int
    replica_idle_procs: int


FULL = Params(
    name="full",
    concurrency=32,
    duration=10.0,
    warmup=2.0,
    max_calls=1_000_000,
    create_runs=((1, 1), (200, 1), (200, 200)),
    lifecycle_concurrency=64,
    lifecycle_agents=8,
    lifecycle_duration=10.0,
    pickup_agents=1000,
    pickup_procs=4,
    pickup_rate=200.0,
    pickup_duration=10.0,
    pickup_services=100,
    idle_agents=5000,
    idle_procs=4,
    idle_window=10.0,
    idle_settle=3.0,
    fanout_watchers=1000,
    fanout_procs=4,
    fanout_events=30,
    fanout_interval=0.1,
    footprint_settle=3.0,
    swarm_rounds=5,
    drift_rounds=20,
    status_agents=1000,
    status_procs=4,
    status_services=5,
    status_window=60.0,
    status_settle=3.0,
    status_change_interval=30.0,
    logs_tails="2000,10000",
    logs_lines=10000,
    logs_rounds=5,
    logs_replicas=1,
    ui_services=200,
    ui_rounds=3,
    ui_loads=20,
    replica_watchers=1000,
    replica_watch_procs=4,
    replica_idle_agents=10_000,
    replica_idle_procs=8,
)

QUICK = Params(
    name="quick",
    concurrency=32,
    duration=2.0,
    warmup=0.5,
    max_calls=100_000,
    create_runs=((1, 1), (100, 100)),
    lifecycle_concurrency=32,
    lifecycle_agents=4,
    lifecycle_duration=3.0,
    pickup_agents=200,
    pickup_procs=2,
    pickup_rate=200.0,
    pickup_duration=2.0,
    pickup_services=100,
    idle_agents=500,
    idle_procs=2,
    idle_window=2.0,
    idle_settle=1.0,
    fanout_watchers=200,
    fanout_procs=2,
    fanout_events=10,
    fanout_interval=0.1,
    footprint_settle=1.0,
    swarm_rounds=1,
    drift_rounds=4,
    status_agents=200,
    status_procs=2,
    status_services=5,
    status_window=15.0,
    status_settle=1.0,
    status_change_interval=30.0,
    logs_tails="2000",
    logs_lines=2000,
    logs_rounds=2,
    logs_replicas=1,
    ui_services=200,
    ui_rounds=1,
    ui_loads=5,
    replica_watchers=1000,
    replica_watch_procs=2,
    replica_idle_agents=1000,
    replica_idle_procs=2,
)


def override(p: Params, settings: list[str]) -> Params:
    """`p` with `name=value` settings applied (values parsed like the field's default)."""
    changes: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not hasattr(p, key) or key == "name":
            raise ValueError(f"--set {item!r}: expected PARAM=VALUE with PARAM among Params")
        current = getattr(p, key)
        try:
            if isinstance(current, tuple):
                changes[key] = tuple(tuple(int(y) for y in x.split(":")) for x in text.split(","))
            else:
                changes[key] = type(current)(text)
        except ValueError:
            kind = type(current).__name__
            raise ValueError(f"--set {item!r}: {text!r} is not a {kind}") from None
    return dataclasses.replace(p, **changes)
