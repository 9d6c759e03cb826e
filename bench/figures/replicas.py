"""Figures 10-14, the control plane on PostgreSQL and as two replicas of one database
(docs/high-availability.md), next to figures 2-5 on SQLite in the same run:

10. CreateDeployment calls/s and CPU a call (control plane and PostgreSQL), figure 2's loop;
11. lifecycles/s with one and with two replicas, and what PostgreSQL adds to a lifecycle;
12. pickup latency when the agent is connected to the other replica than the creator;
13. watch delivery with the watchers on replica B and the events stored by replica A;
14. many idle agents over two replicas: RSS and CPU of each, pickup latency meanwhile.

One private PostgreSQL cluster for the run (tests/pg.py: initdb into /tmp, 127.0.0.1 and a
free port, fsync on), one database per measure. Without PostgreSQL's binaries the figures
say they were skipped.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import clients, simagent
from bench.common import CLK_TCK, Row, Skipped, cpu_seconds, percentile, rss_bytes
from bench.control import STREAMS_PER_TOKEN, ControlPlane, prepared, service_names
from bench.figures import calls
from bench.figures.delivery import measure_fanout, pickup_stats
from bench.figures.lifecycle import run_lifecycles
from bench.figures.shared import (
    MB,
    Ctx,
    error_counts,
    loop_stats,
    ms,
    profiled,
    ratio_of,
    shortfall,
    split,
)
from bench.workers import Worker, Workers
from tests.pg import PgCluster, find_bindir

# -- the database --------------------------------------------------------------------------------


def _process_cpu(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds of the process and of its children it has reaped)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and all its descendants, alive or ended: what PostgreSQL's
    postmaster and its backends (forked, one per connection) have spent so far."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)], cpu[int(entry.name)] = _process_cpu(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


@dataclass
class Database:
    url: str
    cpu: Callable[[], float]


def _cluster(ctx: Ctx) -> PgCluster:
    """The run's PostgreSQL cluster, started by the first figure that needs it."""
    cluster = ctx.shared.get("pg_cluster")
    if cluster is None:
        if find_bindir() is None:
            raise Skipped("no PostgreSQL (initdb, pg_ctl, psql not found; apt install postgresql)")
        cluster = ctx.resources.enter_context(PgCluster.started())
        ctx.shared["pg_cluster"] = cluster
    assert isinstance(cluster, PgCluster)
    return cluster


def database(ctx: Ctx, name: str) -> Database:
    """An empty database of its own for one measure, and its server's CPU counter."""
    cluster = _cluster(ctx)
    db = "bench_" + re.sub(r"[^a-z0-9_]", "_", name.lower())
    cluster.drop_database(db)
    url = cluster.create_database(db)
    postmaster = cluster.pid
    return Database(url, lambda: tree_cpu_seconds(postmaster))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "?" if value is None or math.isnan(value) else f"{value:.{digits}f}"


# -- 10: CreateDeployment on PostgreSQL ------------------------------------------------------


def fig_pg_create(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    for synced, used in ctx.params.create_runs:
        db = database(ctx, f"create_{synced}_{used}")
        res, info = calls.create_run(ctx, synced, used, store=db.url, db_cpu=db.cpu)
        rate, p50, p99 = loop_stats(res)
        key = f"create_sqlite_{synced}_{used}"
        lite, lite_cpu = ctx.baseline.get(key), ctx.baseline.get(f"{key}_cpu_ms")
        cpu, db_cpu = info["server_cpu_ms_per_call"], info["database_cpu_ms_per_call"]
        what = "1 service" if used == 1 else f"{used} services, {used} queued"
        rows.append(
            Row(
                "10",
                f"CreateDeployment on PostgreSQL: {what}",
                rate,
                "calls/s",
                ratio=ratio_of(rate, lite),
                note=f"ratio: vs SQLite ({_fmt(lite, 0)}/s, figure 2); control-plane CPU "
                f"{_fmt(cpu, 3)} ms a call (SQLite {_fmt(lite_cpu, 3)}), PostgreSQL's "
                f"{_fmt(db_cpu, 3)} ms; p50 {ms(p50):.1f} ms, p99 {ms(p99):.1f} ms",
                extra={"errors": res["errors"], "p50_ms": ms(p50), "p99_ms": ms(p99), **info},
            )
        )
    return rows


# -- 11: lifecycles on PostgreSQL, one and two replicas ---------------------------------------


def fig_pg_lifecycle(ctx: Ctx) -> list[Row]:
    lite = ctx.baseline.get("lifecycle_sqlite")
    lite_cpu = ctx.baseline.get("lifecycle_sqlite_cpu_ms")
    runs = []
    for replicas in (1, 2):
        db = database(ctx, f"lifecycle_{replicas}")
        runs.append(
            run_lifecycles(ctx, f"pg-lifecycle-{replicas}", db.url, replicas, db_cpu=db.cpu)
        )
    rows: list[Row] = []
    for got in runs:
        n = got["replicas"]
        cpu, db_cpu = got["server_cpu_ms_per_lifecycle"], got["database_cpu_ms_per_lifecycle"]
        rows.append(
            Row(
                "11",
                f"full lifecycles on PostgreSQL, {n} replica{'s' if n > 1 else ''} "
                f"({got['concurrent_lifecycles']} parallel, {got['agents']} agents)",
                got["rate"],
                "/s",
                ratio=ratio_of(got["rate"], lite),
                note=f"ratio: vs SQLite ({_fmt(lite, 0)}/s, figure 3); control plane"
                f"{'s together' if n > 1 else ''} {_fmt(cpu)} ms CPU a lifecycle, PostgreSQL"
                f" {_fmt(db_cpu)} ms; p50 {ms(got['p50']):.0f} ms, p99 {ms(got['p99']):.0f} ms",
                extra={**got, "p50_ms": ms(got["p50"]), "p99_ms": ms(got["p99"])},
            )
        )
    one = runs[0]
    total = one["server_cpu_ms_per_lifecycle"] + one["database_cpu_ms_per_lifecycle"]
    added = total - lite_cpu if lite_cpu is not None else math.nan
    rows.append(
        Row(
            "11",
            "  CPU PostgreSQL adds to a lifecycle (control plane + PostgreSQL - SQLite's)",
            added,
            "ms",
            ratio=ratio_of(total, lite_cpu),
            note=f"one replica: {_fmt(total)} ms a lifecycle in all, against"
            f" {_fmt(lite_cpu)} ms on SQLite (ratio: the two)",
        )
    )
    return rows


# -- 12: pickup across replicas --------------------------------------------------------------


def _agents(
    ws: Workers,
    name: str,
    cp: ControlPlane,
    tokens: list[str],
    ids: list[str],
    procs: int,
) -> list[Worker]:
    """Simulated agents on `cp`, `procs` processes, each agent recording when it got each
    assignment (it then reports success at once)."""
    out = []
    tok_groups = split(tokens, procs)
    for gi, group in enumerate(split(ids, procs)):
        out.append(
            ws.add(
                f"{name}-{gi}",
                simagent.agents_worker,
                simagent.AgentPlan(
                    addr=cp.addr,
                    tokens=tok_groups[gi],
                    agent_ids=group,
                    agents_per_token=STREAMS_PER_TOKEN,
                    progress=0,
                    record_receipts=True,
                    connect_timeout=300,
                ),
            )
        )
    return out


def _agent_tokens(agents: int, procs: int) -> int:
    """Tokens enough for `agents` split over `procs` processes (as `split` does), 25
    streams a token."""
    per_proc = -(-agents // procs)
    return procs * -(-per_proc // STREAMS_PER_TOKEN)


def _paced_pickups(
    ctx: Ctx,
    ws: Workers,
    create_on: ControlPlane,
    token: str,
    artifact: str,
    agents: list[Worker],
    rates: tuple[float, ...],
) -> list[dict[str, Any]]:
    """CreateDeployment on `create_on` at each of `rates` in turn (figure 4's paced
    client, for figure 4's duration), then the agents stopped: the pickup latencies of
    each rate."""
    p = ctx.params
    runs = []
    for i, rate in enumerate(rates):
        cl = ws.add(
            f"paced-client-{i}",
            clients.paced_worker,
            create_on.addr,
            token,
            artifact,
            service_names(p.pickup_services),
            rate,
        )
        cl.recv("ready", 60)
        cl.send("go", {"duration": p.pickup_duration})
        runs.append(cl.recv("result", p.pickup_duration + 90))
        time.sleep(0.5)  # assignments still on their way
    for w in agents:
        w.send("stop")
    results = [w.recv("result", 120) for w in agents]
    receipts: dict[str, float] = {}
    for r in results:
        receipts.update(r["receipts"])
    out = []
    for rate, res in zip(rates, runs, strict=True):
        got = pickup_stats(res["returned"], receipts)
        got.update(
            rate=rate,
            creates_per_s=len(res["returned"]) / res["elapsed"] if res["elapsed"] else math.nan,
            create_p99=percentile(res["latencies"], 99),
            sent=res["sent"],
            created=len(res["returned"]),
            errors=error_counts(res, *results),
            create_error_details=res["error_details"],
        )
        out.append(got)
    return out


def _pickup_note(got: dict[str, Any]) -> str:
    """What else a paced pickup run saw: its worst, the deployments no agent got (superseded
    by the next one for their service, or still queued when the run ended), and whether the
    creates kept the pace."""
    return (
        f"p50 {ms(got['p50']):.1f} ms, max {ms(got['max']):.0f} ms; {got['missing']} of "
        f"{got['created']} never reached an agent; CreateDeployment p99 "
        f"{ms(got['create_p99']):.0f} ms, {got['creates_per_s']:.0f}/s reached"
    )


def _two_replicas(
    ctx: Ctx, name: str, services: int, **tokens: int
) -> tuple[ControlPlane, ControlPlane, dict[str, list[str]], str]:
    a, b, toks, artifact, _ = _two_replicas_and_db(ctx, name, services, **tokens)
    return a, b, toks, artifact


def _two_replicas_and_db(
    ctx: Ctx, name: str, services: int, **tokens: int
) -> tuple[ControlPlane, ControlPlane, dict[str, list[str]], str, Database]:
    """Replica A prepared as figure 2's control plane (cluster, tokens, manifests, an
    artifact) on a new database, and replica B started on the same database."""
    db = database(ctx, name)
    a, toks, artifact = prepared(ctx.folder(f"{name}-a"), services, store=db.url, **tokens)
    try:
        b = ControlPlane(ctx.folder(f"{name}-b"), store=db.url).start()
    except BaseException:
        a.stop()
        raise
    return a, b, toks, artifact, db


def fig_pg_pickup(ctx: Ctx) -> list[Row]:
    p = ctx.params
    procs = p.pickup_procs
    a, b, toks, artifact = _two_replicas(
        ctx, "pickup", p.pickup_services, agent_tokens=_agent_tokens(p.pickup_agents, procs)
    )
    try:
        with Workers() as ws:
            ids = [f"agent-{i:05d}" for i in range(p.pickup_agents)]
            agents = _agents(ws, "pickup-agents-b", b, toks["agent"], ids, procs)
            ready = [w.recv("ready", 300) for w in agents]
            connected = sum(r["connected"] for r in ready)
            # A quarter of the pace first: the notice's own latency, below saturation.
            rates = (p.pickup_rate / 4, p.pickup_rate)
            with (
                profiled(ctx, "pg-pickup-creator-a", a.pid),
                profiled(ctx, "pg-pickup-agents-b", b.pid),
            ):
                slow, got = _paced_pickups(ctx, ws, a, toks["deployer"][0], artifact, agents, rates)
        errors_logged = a.errors_logged() + b.errors_logged()
    finally:
        b.stop()
        a.stop()
    details: dict[str, str] = {}
    for r in ready:
        details.update(r.get("error_details") or {})
    note = shortfall(p.pickup_agents, connected, details, "agents")
    extra = {
        "at_full_pace": got,
        "at_quarter_pace": slow,
        "agents_connected": connected,
        "control_log_errors": errors_logged,
    }
    same = ctx.baseline.get("pickup_p99")
    rows = []
    for run in (got, slow):
        p99 = run["p99"]
        rows.append(
            Row(
                "12",
                f"pickup p99 across replicas: created on A at {run['rate']:.0f}/s, "
                f"{connected} agents on B",
                ms(p99),
                "ms",
                "≤ 20 ms" if run is got else "",
                None,
                None if math.isnan(p99) or run is not got else ms(p99) <= 20,
                note=_pickup_note(run)
                + (f"; one SQLite process (figure 4): p99 {ms(same):.1f} ms" if same else "")
                + (f"; {note}" if note else ""),
                extra=extra if run is got else {},
            )
        )
    return rows


# -- 13: watch delivery across replicas ------------------------------------------------------


def fig_pg_watch(ctx: Ctx) -> list[Row]:
    p = ctx.params
    n, procs = p.replica_watchers, p.replica_watch_procs
    per_proc = -(-n // procs)
    ntok = -(-per_proc // STREAMS_PER_TOKEN)
    a, b, toks, artifact = _two_replicas(
        ctx, "watch", 1, reader_tokens=ntok * procs, agent_tokens=1
    )
    try:
        # The agent on A (A stores its reports), the watchers on B.
        run = measure_fanout(
            ctx, a, a.addr, b.addr, toks, artifact, n, procs, "pg-watch-replica-b", b.pid
        )
        errors_logged = a.errors_logged() + b.errors_logged()
    finally:
        b.stop()
        a.stop()
    caught, lat, details = run["caught"], run["lat"], run["details"]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    extra = {**run["extra"], "control_log_errors": errors_logged}
    same = ctx.baseline.get("fanout_p99")
    return [
        Row(
            "13",
            f"watch delivery p50, {caught} watchers on B, events stored by A",
            ms(p50),
            "ms",
            note=shortfall(n, caught, details, "watchers"),
            extra=extra,
        ),
        Row(
            "13",
            "watch delivery p99 across replicas",
            ms(p99),
            "ms",
            "≤ 100 ms",
            None,
            None if math.isnan(p99) else ms(p99) <= 100,
            note=f"{len(lat)} deliveries of {p.fanout_events + 1} events, one every "
            f"{p.fanout_interval * 1000:.0f} ms"
            + (
                f"; one SQLite process (figure 6, {ctx.baseline['fanout_watchers']:.0f} "
                f"watchers): p99 {ms(same):.1f} ms"
                if same
                else ""
            ),
        ),
    ]


# -- 14: idle agents over two replicas ---------------------------------------------------------


def fig_pg_idle(ctx: Ctx) -> list[Row]:
    p = ctx.params
    n, procs = p.replica_idle_agents, max(2, p.replica_idle_procs)
    per_replica = procs // 2
    a, b, toks, artifact, db = _two_replicas_and_db(
        ctx, "idle", p.pickup_services, agent_tokens=_agent_tokens(n, procs)
    )
    cps = (a, b)
    try:
        rss_before = [rss_bytes(c.pid) for c in cps]
        with Workers() as ws:
            ids = split([f"agent-{i:05d}" for i in range(n)], 2)
            tok_halves = split(toks["agent"], 2)
            by_replica = [
                _agents(ws, f"idle-agents-{'ab'[i]}", c, tok_halves[i], ids[i], per_replica)
                for i, c in enumerate(cps)
            ]
            agents = [w for group in by_replica for w in group]
            t0 = time.monotonic()
            ready_by = [[w.recv("ready", 400) for w in group] for group in by_replica]
            connect_s = time.monotonic() - t0
            ready = [r for group in ready_by for r in group]
            on_replica = [sum(r["connected"] for r in group) for group in ready_by]
            connected = sum(on_replica)
            time.sleep(p.idle_settle)
            cpu0, db0 = [cpu_seconds(c.pid) for c in cps], db.cpu()
            t1 = time.monotonic()
            time.sleep(p.idle_window)
            window = time.monotonic() - t1
            cpu_pct = [
                100 * (cpu_seconds(c.pid) - c0) / window for c, c0 in zip(cps, cpu0, strict=True)
            ]
            db_pct = 100 * (db.cpu() - db0) / window
            rss = [rss_bytes(c.pid) for c in cps]
            (got,) = _paced_pickups(
                ctx, ws, a, toks["deployer"][0], artifact, agents, (p.pickup_rate,)
            )
        errors_logged = a.errors_logged() + b.errors_logged()
    finally:
        b.stop()
        a.stop()
    details: dict[str, str] = {}
    for r in ready:
        details.update(r.get("error_details") or {})
    extra = {
        "agents_connected": connected,
        "connect_seconds": connect_s,
        "rss_before_agents_mb": [x / MB for x in rss_before],
        "rss_mb": [x / MB for x in rss],
        "cpu_pct": cpu_pct,
        "postgresql_cpu_pct": db_pct,
        "pickup": got,
        "control_log_errors": errors_logged,
    }
    rows = [
        Row(
            "14",
            f"replica {'AB'[i]}: RSS with {count} idle agents ({connected} over both)",
            rss[i] / MB,
            "MB",
            note=f"{(rss[i] - rss_before[i]) / max(1, count) / 1024:.0f} KB per agent; "
            f"idle CPU {cpu_pct[i]:.1f} % of a core ({p.idle_window:.0f} s window)"
            + (f"; PostgreSQL meanwhile {db_pct:.1f} %" if i == 0 else ""),
            extra=extra if i == 0 else {},
        )
        for i, count in enumerate(on_replica)
    ]
    short = shortfall(n, connected, details, "agents")
    rows.append(
        Row(
            "14",
            f"  pickup p99 meanwhile (created on A at {p.pickup_rate:.0f}/s, any agent)",
            ms(got["p99"]),
            "ms",
            "≤ 20 ms",
            None,
            None if math.isnan(got["p99"]) else ms(got["p99"]) <= 20,
            note=_pickup_note(got) + (f"; {short}" if short else ""),
        )
    )
    return rows
