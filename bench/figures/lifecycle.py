"""Figure 3: whole deployment lifecycles, from CreateDeployment to a watcher seeing the end."""

from __future__ import annotations

import math
import time

from bench import clients, simagent
from bench.common import (
    Row,
    cpu_seconds,
)
from bench.control import (
    STREAMS_PER_TOKEN,
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
)
from bench.workers import Workers

# -- 3: whole lifecycles ------------------------------------------------------------------------


def fig_lifecycle(ctx: Ctx) -> list[Row]:
    p = ctx.params
    n = p.lifecycle_concurrency
    cp, toks, artifact = prepared(
        ctx.folder("lifecycle"),
        n,
        client_tokens=-(-n // STREAMS_PER_TOKEN),
        agent_tokens=-(-p.lifecycle_agents // STREAMS_PER_TOKEN),
    )
    try:
        with Workers() as ws:
            agents = ws.add(
                "lifecycle-agents",
                simagent.agents_worker,
                simagent.AgentPlan(
                    addr=cp.addr,
                    tokens=toks["agent"],
                    agent_ids=[f"agent-{i:05d}" for i in range(p.lifecycle_agents)],
                    agents_per_token=STREAMS_PER_TOKEN,
                    progress=3,
                ),
            )
            ready = agents.recv("ready", 120)
            cl = ws.add(
                "lifecycle-clients",
                clients.lifecycle_worker,
                cp.addr,
                toks["deployer"],
                artifact,
                service_names(n),
            )
            cl.recv("ready", 60)
            cl.send("go", go_args(p.lifecycle_duration, p))
            time.sleep(p.warmup)
            cpu0 = cpu_seconds(cp.pid)
            # The load's own CPU too: on two cores, what the clients and simulated agents
            # spend a lifecycle is not left for the control plane.
            load0 = cpu_seconds(cl.pid) + cpu_seconds(agents.pid)
            with profiled(ctx, "lifecycle", cp.pid):
                res = cl.recv("result", p.lifecycle_duration + p.warmup + 90)
            cpu_ms = cpu_ms_per_call(cpu_seconds(cp.pid) - cpu0, res)
            load_ms = cpu_ms_per_call(cpu_seconds(cl.pid) + cpu_seconds(agents.pid) - load0, res)
            agents.send("stop")
            ares = agents.recv("result", 60)
        errors_logged = cp.errors_logged()
    finally:
        cp.stop()
    rate, p50, p99 = loop_stats(res)
    # The grpc floor: a lifecycle is about 18 messages (create and its answer; the watch
    # request, the deployment and 7 events; assignment, ack, 3 progress, result, done),
    # i.e. 9 of the bidi baseline's round trips. (Commits are no floor: with group commit
    # one fsync carries the changes of many lifecycles.)
    floor = ctx.baseline.get("echo_bidi")
    ratio = ratio_of(rate, floor / 9 if floor else None)
    extra = {
        "outcomes": res.get("outcomes"),
        "errors": error_counts(res, ares),
        "agents": p.lifecycle_agents,
        "agents_connected": ready["connected"],
        "concurrent_lifecycles": n,
        "ratio_is_vs": "grpc.aio bidi round trips/s ÷ 9 (18 messages a lifecycle)",
        "server_cpu_ms_per_lifecycle": cpu_ms,
        "load_cpu_ms_per_lifecycle": load_ms,
        "control_log_errors": errors_logged,
    }
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
