"""Figures 4 and 6, delivery over streams: an assignment's pickup by one of many agents,
and a deployment's events fanned out to many watchers."""

from __future__ import annotations

import math
import time
from typing import Any

from bench import clients, echo, simagent
from bench.common import (
    Row,
    percentile,
)
from bench.control import (
    STREAMS_PER_TOKEN,
    ControlPlane,
    prepared,
    service_names,
)
from bench.figures.params import Params
from bench.figures.shared import (
    Ctx,
    EchoServer,
    error_counts,
    ms,
    profiled,
    ratio_of,
    shortfall,
    split,
)
from bench.workers import Workers

# -- 4: pickup latency --------------------------------------------------------------------------


def pickup_stats(returned: dict[str, float], receipts: dict[str, float]) -> dict[str, Any]:
    """Pickup latencies: deployment id -> when CreateDeployment returned, and -> when an
    agent held its assignment (wall clock, one machine)."""
    lat = [receipts[k] - t for k, t in returned.items() if k in receipts]
    early = sum(1 for x in lat if x <= 0)
    clamped = [max(0.0, x) for x in lat]
    return {
        "p50": percentile(clamped, 50),
        "p99": percentile(clamped, 99),
        "max": max(clamped) if clamped else math.nan,
        "matched": len(lat),
        "missing": len(returned) - len(lat),
        "before_return": early,
    }


def fig_pickup(ctx: Ctx) -> list[Row]:
    p = ctx.params
    ids = [f"agent-{i:05d}" for i in range(p.pickup_agents)]
    groups = split(ids, p.pickup_procs)
    cp, toks, artifact = prepared(
        ctx.folder("pickup"),
        p.pickup_services,
        agent_tokens=-(-p.pickup_agents // STREAMS_PER_TOKEN),
    )
    try:
        with Workers() as ws:
            agent_ws = []
            tok_index = 0
            for gi, group in enumerate(groups):
                ntok = -(-len(group) // STREAMS_PER_TOKEN)
                agent_ws.append(
                    ws.add(
                        f"pickup-agents-{gi}",
                        simagent.agents_worker,
                        simagent.AgentPlan(
                            addr=cp.addr,
                            tokens=toks["agent"][tok_index : tok_index + ntok],
                            agent_ids=group,
                            agents_per_token=STREAMS_PER_TOKEN,
                            progress=0,
                            record_receipts=True,
                        ),
                    )
                )
                tok_index += ntok
            ready = [w.recv("ready", 180) for w in agent_ws]
            connected = sum(r["connected"] for r in ready)
            cl = ws.add(
                "pickup-client",
                clients.paced_worker,
                cp.addr,
                toks["deployer"][0],
                artifact,
                service_names(p.pickup_services),
                p.pickup_rate,
            )
            cl.recv("ready", 60)
            cl.send("go", {"duration": p.pickup_duration})
            with profiled(ctx, "pickup", cp.pid):
                res = cl.recv("result", p.pickup_duration + 90)
            time.sleep(0.5)  # assignments still on their way
            for w in agent_ws:
                w.send("stop")
            agent_results = [w.recv("result", 60) for w in agent_ws]
        errors_logged = cp.errors_logged()
    finally:
        cp.stop()
    receipts: dict[str, float] = {}
    for r in agent_results:
        receipts.update(r["receipts"])
    got = pickup_stats(res["returned"], receipts)
    ctx.baseline["pickup_p99"] = got["p99"]  # for figure 12, across replicas

    base = _pickup_baseline(ctx, p)
    extra = {
        "agents_connected": connected,
        "sent": res["sent"],
        "created": len(res["returned"]),
        "matched": got["matched"],
        "missing": got["missing"],
        "received_before_create_returned": got["before_return"],
        "max_ms": ms(got["max"]),
        "late_sends": res["late"],
        "create_p99_ms": ms(percentile(res["latencies"], 99)),
        "errors": error_counts(res, *agent_results),
        "baseline": {k: (ms(v) if k in ("p50", "p99", "max") else v) for k, v in base.items()},
        "control_log_errors": errors_logged,
    }
    details: dict[str, str] = {}
    for r in [*ready, *agent_results]:
        details.update(r.get("error_details") or {})
    extra["error_details"] = details
    extra["create_error_details"] = res["error_details"]
    note = shortfall(p.pickup_agents, connected, details, "agents")
    if len(res["returned"]) < res["sent"]:
        why = "; ".join(f"{k}: {v}" for k, v in res["error_details"].items())
        note = (note + "; " if note else "") + (
            f"{res['sent'] - len(res['returned'])} of {res['sent']} CreateDeployment failed ({why})"
        )
    rate = p.pickup_rate
    achieved = len(res["returned"]) / res["elapsed"] if res["elapsed"] else math.nan
    extra["creates_per_s"] = achieved
    return [
        Row(
            "4",
            f"pickup latency p50 ({rate:.0f}/s, {connected} agents)",
            ms(got["p50"]),
            "ms",
            ratio=ratio_of(got["p50"], base["p50"]),
            note=note,
            extra=extra,
        ),
        Row(
            "4",
            "pickup latency p99",
            ms(got["p99"]),
            "ms",
            "≤ 10 ms",
            ratio_of(got["p99"], base["p99"]),
            None if math.isnan(got["p99"]) else ms(got["p99"]) <= 10,
            note=f"baseline (grpc.aio broker) p99 {ms(base['p99']):.2f} ms",
        ),
        Row(
            "4",
            f"  CreateDeployment latency p99 meanwhile (asked {rate:.0f}/s, got {achieved:.0f}/s)",
            ms(percentile(res["latencies"], 99)),
            "ms",
            note=f"p50 {ms(percentile(res['latencies'], 50)):.1f} ms" if res["latencies"] else "",
        ),
    ]


def _pickup_baseline(ctx: Ctx, p: Params) -> dict[str, Any]:
    """The same pattern on bare grpc.aio: a unary Publish hands an id to one of N
    subscribed streams, each on its own connection, in the same number of processes."""
    with EchoServer(ctx.folder("pickup-baseline")) as srv, Workers() as ws:
        per = -(-p.pickup_agents // p.pickup_procs)
        subs = [
            ws.add(f"pickup-subs-{i}", echo.subscribers_worker, srv.addr, per, 1, 600)
            for i in range(p.pickup_procs)
        ]
        for s in subs:
            s.recv("ready", 180)
        pub = ws.add(
            "pickup-pub",
            echo.publisher_worker,
            srv.addr,
            "one",
            p.pickup_rate,
            clients.PACED_CLIENTS,
        )
        pub.recv("ready", 60)
        pub.send("go", {"duration": p.pickup_duration})
        res = pub.recv("result", p.pickup_duration + 90)
        time.sleep(0.5)
        receipts: dict[str, float] = {}
        for s in subs:
            s.send("stop")
        for s in subs:
            receipts.update(s.recv("result", 60)["receipts"])
    return pickup_stats(res["returned"], receipts)


# -- 6: watch fan-out ---------------------------------------------------------------------------


def measure_fanout(
    ctx: Ctx,
    creator: ControlPlane,
    agent_addr: str,
    watch_addr: str,
    toks: dict[str, list[str]],
    artifact: str,
    n: int,
    procs: int,
    name: str,
    profile_pid: int,
) -> dict[str, Any]:
    """One deployment, `n` watchers on `watch_addr` (in `procs` processes), a simulated agent
    on `agent_addr` that reports `fanout_events` progress events once every watcher caught
    up: what each watcher measured (figures 6 and 13; the control planes are the caller's)."""
    p = ctx.params
    per_proc = -(-n // procs)
    ntok = -(-per_proc // STREAMS_PER_TOKEN)
    with Workers() as ws:
        # The agent first (its stream must not be the one refused if the server caps
        # streams); it holds the assignment until every watcher has caught up.
        driver = ws.add(
            f"{name}-agent",
            simagent.agents_worker,
            simagent.AgentPlan(
                addr=agent_addr,
                tokens=toks["agent"],
                agent_ids=[f"{name}-agent"],
                agents_per_token=1,
                progress=p.fanout_events,
                step_interval=p.fanout_interval,
                hold_until_go=True,
            ),
        )
        if driver.recv("ready", 60)["connected"] != 1:
            raise RuntimeError(f"the {name} agent could not connect")
        dep = creator.create_deployment(toks["admin"][0], service_names(1)[0], artifact)
        watchers = [
            ws.add(
                f"watchers-{name}-{i}",
                clients.watchers_worker,
                watch_addr,
                toks["reader"][i * ntok : (i + 1) * ntok],
                dep,
                min(per_proc, n - i * per_proc),
                25,
                p.fanout_events * p.fanout_interval + 120,
            )
            for i in range(procs)
        ]
        ready = [w.recv("ready", 180) for w in watchers]
        caught = sum(r["caught_up"] for r in ready)
        driver.send("go")
        with profiled(ctx, name, profile_pid):
            results = [
                w.recv("result", p.fanout_events * p.fanout_interval + 180) for w in watchers
            ]
        driver.send("stop")
        dres = driver.recv("result", 60)
    lat = [x for r in results for x in r["latencies"]]
    details: dict[str, str] = {}
    for r in [*ready, *results, dres]:
        details.update(r.get("error_details") or {})
    return {
        "caught": caught,
        "lat": lat,
        "details": details,
        "extra": {
            "watchers_requested": n,
            "watchers_caught_up": caught,
            "watchers_saw_end": sum(r["ended"] for r in results),
            "events_per_watcher": p.fanout_events + 1,
            "deliveries": len(lat),
            "max_ms": ms(max(lat)) if lat else None,
            "errors": error_counts(*results, dres),
            "error_details": details,
        },
    }


def fig_fanout(ctx: Ctx) -> list[Row]:
    p = ctx.params
    n = p.fanout_watchers
    per_proc = -(-n // p.fanout_procs)
    ntok = -(-per_proc // STREAMS_PER_TOKEN)
    cp, toks, artifact = prepared(
        ctx.folder("fanout"), 1, reader_tokens=ntok * p.fanout_procs, agent_tokens=1
    )
    try:
        run = measure_fanout(
            ctx, cp, cp.addr, cp.addr, toks, artifact, n, p.fanout_procs, "fanout", cp.pid
        )
        errors_logged = cp.errors_logged()
    finally:
        cp.stop()
    caught, lat, details = run["caught"], run["lat"], run["details"]
    base = _fanout_baseline(ctx, p, caught)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    ctx.baseline["fanout_p99"] = p99  # for figure 13, across replicas
    ctx.baseline["fanout_watchers"] = caught
    extra = {
        **run["extra"],
        "baseline_p50_ms": ms(base["p50"]),
        "baseline_p99_ms": ms(base["p99"]),
        "baseline_deliveries": base["deliveries"],
        "control_log_errors": errors_logged,
    }
    short = shortfall(n, caught, details, "watchers")
    return [
        Row(
            "6",
            f"watch fan-out delivery p50 ({caught} watchers, 1 deployment)",
            ms(p50),
            "ms",
            ratio=ratio_of(p50, base["p50"]),
            note=short,
            extra=extra,
        ),
        Row(
            "6",
            "watch fan-out delivery p99",
            ms(p99),
            "ms",
            "≤ 50 ms",
            ratio_of(p99, base["p99"]),
            None if math.isnan(p99) else ms(p99) <= 50,
            note=f"baseline (grpc.aio broadcast) p99 {ms(base['p99']):.1f} ms",
        ),
    ]


def _fanout_baseline(ctx: Ctx, p: Params, count: int) -> dict[str, float]:
    """As many subscribers as watchers caught up, in as many processes, 25 per connection;
    the same number of broadcasts at the same pace."""
    with EchoServer(ctx.folder("fanout-baseline")) as srv, Workers() as ws:
        per = -(-count // p.fanout_procs)
        subs = [
            ws.add(
                f"fanout-subs-{i}",
                echo.subscribers_worker,
                srv.addr,
                min(per, count - i * per),
                25,
                120,
            )
            for i in range(p.fanout_procs)
            if count - i * per > 0
        ]
        for s in subs:
            s.recv("ready", 180)
        pub = ws.add("fanout-pub", echo.publisher_worker, srv.addr, "all", 1 / p.fanout_interval)
        pub.recv("ready", 60)
        pub.send("go", {"count": p.fanout_events})
        pub.recv("result", p.fanout_events * p.fanout_interval + 60)
        lat: list[float] = []
        # Each worker ends once all its subscribers got the END broadcast (or after its
        # timeout), as the watchers end on the deployment's last event: stopping them as
        # soon as END was published used to drop most END deliveries from the baseline.
        for s in subs:
            lat += s.recv("result", 180)["latencies"]
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "deliveries": len(lat)}
