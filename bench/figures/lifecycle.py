"""Figure 3: whole deployment lifecycles, from CreateDeployment to a watcher seeing the end.
`run_lifecycles` is also figure 11's (the same on PostgreSQL, one or two replicas)."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench import clients, simagent
from bench.common import (
    Row,
    cpu_seconds,
)
from bench.control import (
    STREAMS_PER_TOKEN,
    ControlPlane,
    prepared,
    service_names,
)
from bench.figures.shared import (
    Ctx,
    cpu_ms_per_call,
    error_counts,
    go_args,
    loop_stats,
    ms,
    profiled,
    ratio_of,
    split,
)
from bench.workers import Workers

# -- 3: whole lifecycles ------------------------------------------------------------------------


def _merged(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Closed loops run side by side (one per replica) as one: their calls summed over the
    longest of their windows, their latencies and outcomes together."""
    outcomes: Counter[str] = Counter()
    for r in results:
        outcomes.update(r.get("outcomes") or {})
    return {
        "calls": sum(r["calls"] for r in results),
        "elapsed": max(r["elapsed"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "errors": error_counts(*results),
        "outcomes": dict(outcomes),
    }


def run_lifecycles(
    ctx: Ctx,
    name: str,
    store: str | None = None,
    replicas: int = 1,
    db_cpu: Callable[[], float] | None = None,
    configure: Callable[[ControlPlane, str], None] | None = None,
) -> dict[str, Any]:
    """Lifecycles in closed loops, on SQLite or on the PostgreSQL database `store` with
    `replicas` control planes: the clients and the simulated agents split evenly between
    them (a deployment created on one replica may run on an agent of another). The rate,
    latencies, and CPU a lifecycle costs the control planes (together), the load, and the
    database server (`db_cpu`: its CPU seconds so far). `configure(control plane, admin
    token)` runs before the load starts (figure 15 adds notification targets)."""
    p = ctx.params
    n = p.lifecycle_concurrency
    cp, toks, artifact = prepared(
        ctx.folder(name),
        n,
        client_tokens=-(-n // STREAMS_PER_TOKEN) * replicas,
        agent_tokens=-(-p.lifecycle_agents // STREAMS_PER_TOKEN) * replicas,
        store=store,
    )
    cps = [cp]
    try:
        if configure is not None:
            configure(cp, toks["admin"][0])
        for i in range(1, replicas):
            cps.append(ControlPlane(ctx.folder(f"{name}-replica{i}"), store=store).start())
        services = split(service_names(n), replicas)
        agent_ids = split([f"agent-{i:05d}" for i in range(p.lifecycle_agents)], replicas)
        ctok, atok = split(toks["deployer"], replicas), split(toks["agent"], replicas)
        with Workers() as ws:
            agents = [
                ws.add(
                    f"{name}-agents-{i}",
                    simagent.agents_worker,
                    simagent.AgentPlan(
                        addr=c.addr,
                        tokens=atok[i],
                        agent_ids=agent_ids[i],
                        agents_per_token=STREAMS_PER_TOKEN,
                        progress=3,
                    ),
                )
                for i, c in enumerate(cps)
            ]
            ready = [a.recv("ready", 120) for a in agents]
            cls = [
                ws.add(
                    f"{name}-clients-{i}",
                    clients.lifecycle_worker,
                    c.addr,
                    ctok[i],
                    artifact,
                    services[i],
                )
                for i, c in enumerate(cps)
            ]
            for c in cls:
                c.recv("ready", 60)
            for c in cls:
                c.send("go", go_args(p.lifecycle_duration, p))
            time.sleep(p.warmup)

            def server_cpu() -> float:
                return sum(cpu_seconds(c.pid) for c in cps)

            def load_cpu() -> float:
                # On two cores, what the clients and simulated agents spend a lifecycle
                # is not left for the control plane.
                return sum(cpu_seconds(w.pid) for w in [*cls, *agents])

            cpu0, load0 = server_cpu(), load_cpu()
            db0 = db_cpu() if db_cpu else math.nan
            with profiled(ctx, name, cp.pid):
                res = _merged([c.recv("result", p.lifecycle_duration + p.warmup + 90) for c in cls])
            cpu_ms = cpu_ms_per_call(server_cpu() - cpu0, res)
            load_ms = cpu_ms_per_call(load_cpu() - load0, res)
            db_ms = cpu_ms_per_call(db_cpu() - db0, res) if db_cpu else math.nan
            for a in agents:
                a.send("stop")
            ares = [a.recv("result", 60) for a in agents]
        errors_logged = sum(c.errors_logged() for c in cps)
    finally:
        for c in reversed(cps):
            c.stop()
    rate, p50, p99 = loop_stats(res)
    return {
        "rate": rate,
        "p50": p50,
        "p99": p99,
        "outcomes": res.get("outcomes"),
        "errors": error_counts(res, *ares),
        "agents": p.lifecycle_agents,
        "agents_connected": sum(r["connected"] for r in ready),
        "concurrent_lifecycles": n,
        "replicas": replicas,
        "server_cpu_ms_per_lifecycle": cpu_ms,
        "load_cpu_ms_per_lifecycle": load_ms,
        # None on SQLite: no database server (and no NaN in the JSON).
        "database_cpu_ms_per_lifecycle": db_ms if db_cpu else None,
        "control_log_errors": errors_logged,
    }


def fig_lifecycle(ctx: Ctx) -> list[Row]:
    p = ctx.params
    n = p.lifecycle_concurrency
    got = run_lifecycles(ctx, "lifecycle")
    rate, p50, p99 = got.pop("rate"), got.pop("p50"), got.pop("p99")
    cpu_ms, load_ms = got["server_cpu_ms_per_lifecycle"], got["load_cpu_ms_per_lifecycle"]
    # For figure 11 (the same on PostgreSQL), printed next to these.
    ctx.baseline["lifecycle_sqlite"] = rate
    ctx.baseline["lifecycle_sqlite_cpu_ms"] = cpu_ms
    ctx.baseline["lifecycle_sqlite_p99"] = p99
    # The grpc floor: a lifecycle is about 18 messages (create and its answer; the watch
    # request, the deployment and 7 events; assignment, ack, 3 progress, result, done),
    # i.e. 9 of the bidi baseline's round trips. (Commits are no floor: with group commit
    # one fsync carries the changes of many lifecycles.)
    floor = ctx.baseline.get("echo_bidi")
    ratio = ratio_of(rate, floor / 9 if floor else None)
    extra = {**got, "ratio_is_vs": "grpc.aio bidi round trips/s ÷ 9 (18 messages a lifecycle)"}
    return [
        Row(
            "3",
            f"full lifecycles, watched to the end ({n} parallel, {p.lifecycle_agents} agents)",
            rate,
            "/s",
            "≥ 500/s",
            ratio,
            rate >= 500 if not math.isnan(rate) else None,
            note=f"ratio: vs grpc bidi round trips/s ÷ 9; server CPU {cpu_ms:.2f} ms a lifecycle"
            f", clients and simulated agents {load_ms:.2f} ms",
            extra=extra,
        ),
        Row("3", "lifecycle latency p50 (create → watcher sees the end)", ms(p50), "ms"),
        Row("3", "lifecycle latency p99", ms(p99), "ms"),
    ]
