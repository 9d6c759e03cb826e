"""Figures 1 and 2, unary calls in closed loops: the grpc.aio echo and bidi baselines,
CreateDeployment's bare-work floor, SQLite durable commits, then CreateDeployment on the
control plane."""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from bench import clients, disk, echo
from bench.common import (
    Row,
    cpu_seconds,
    rss_bytes,
)
from bench.control import (
    prepared,
    service_names,
)
from bench.figures.shared import (
    MB,
    Ctx,
    EchoServer,
    cpu_ms_per_call,
    go_args,
    loop_stats,
    ms,
    profiled,
    ratio_of,
)
from bench.workers import Workers

# -- 1: baseline --------------------------------------------------------------------------------


def fig_echo(ctx: Ctx) -> list[Row]:
    p = ctx.params
    root = ctx.folder("echo")
    rows: list[Row] = []
    with EchoServer(root) as srv:
        for kind in ("unary", "bidi"):
            with Workers() as ws:
                w = ws.add(f"echo-{kind}", echo.client_worker, srv.addr, kind, p.concurrency)
                w.recv("ready", 60)
                w.send("go", go_args(p.duration, p))
                time.sleep(p.warmup)
                cpu0 = cpu_seconds(srv.pid)
                res = w.recv("result", p.duration + p.warmup + 60)
                cpu_ms = cpu_ms_per_call(cpu_seconds(srv.pid) - cpu0, res)
            rate, p50, p99 = loop_stats(res)
            ctx.baseline[f"echo_{kind}_cpu_ms"] = cpu_ms
            ctx.baseline[f"echo_{kind}"] = rate
            ctx.baseline[f"echo_{kind}_p50"] = p50
            ctx.baseline[f"echo_{kind}_p99"] = p99
            label = "unary echo calls" if kind == "unary" else "bidi round trips"
            rows.append(
                Row(
                    "1",
                    f"baseline grpc.aio {label} ({p.concurrency} coroutines)",
                    rate,
                    "/s",
                    note=f"p50 {ms(p50):.2f} ms, p99 {ms(p99):.2f} ms; "
                    f"server CPU {cpu_ms:.3f} ms a call",
                    extra={
                        "p50_ms": ms(p50),
                        "p99_ms": ms(p99),
                        "errors": res["errors"],
                        "server_cpu_ms_per_call": cpu_ms,
                    },
                )
            )
    rows.append(_create_floor(ctx))
    # The storage floor, on the disk the control plane's data lives on.
    with Workers() as ws:
        w = ws.add(
            "disk", disk.commits_worker, str(ctx.folder("disk")), p.duration / 2, p.max_calls
        )
        w.recv("ready", 60)
        w.send("go")
        res = w.recv("result", p.duration + 60)
    commits = res["commits"] / res["elapsed"]
    ctx.baseline["sqlite_commits"] = commits
    rows.append(
        Row(
            "1",
            "baseline SQLite durable commits (WAL, synchronous=FULL)",
            commits,
            "/s",
            note="one fsync per commit; every deployment state change costs one",
        )
    )
    return rows


def _create_floor(ctx: Ctx) -> Row:
    """CreateDeployment's bare work on grpc.aio (bench/floor.py), driven by the same client
    as figure 2's first run: how close to the echo limit any durable implementation gets."""
    p = ctx.params
    token = "bench-floor-token"
    root = ctx.folder("floor")
    used = p.create_runs[0][1]
    digest = hashlib.sha256(token.encode()).hexdigest()
    db = str(root / "floor.db")
    with EchoServer(root, "bench.floor", "--db", db, "--token-sha256", digest) as srv:
        res, cpu_ms, _ = _drive_creates(ctx, srv.addr, srv.pid, token, "art_floor", used)
    rate, p50, p99 = loop_stats(res)
    ctx.baseline["create_floor"] = rate
    ctx.baseline["create_floor_cpu_ms"] = cpu_ms
    return Row(
        "1",
        "baseline CreateDeployment's bare work on grpc.aio (bench/floor.py)",
        rate,
        "/s",
        ratio=ratio_of(rate, ctx.baseline.get("echo_unary")),
        note=f"parse, token hash, supersede, 3 rows, group commit, answer; p50 {ms(p50):.2f}"
        f" ms, p99 {ms(p99):.2f} ms; server CPU {cpu_ms:.3f} ms a call",
        extra={"errors": res["errors"], "server_cpu_ms_per_call": cpu_ms},
    )


# -- 2: CreateDeployment ------------------------------------------------------------------------


def _drive_creates(
    ctx: Ctx,
    addr: str,
    pid: int,
    token: str,
    artifact: str,
    used: int,
    profile: str = "",
    db_cpu: Callable[[], float] | None = None,
) -> tuple[dict[str, Any], float, float]:
    """CreateDeployment in a closed loop over `used` services from a client process: the
    loop's result, the server's CPU per call (`profile`: sample it under that name) and the
    database server's (`db_cpu`: its CPU seconds so far; NaN without)."""
    p = ctx.params
    with Workers() as ws:
        w = ws.add(
            "create",
            clients.create_worker,
            addr,
            token,
            artifact,
            service_names(used),
            p.concurrency,
        )
        w.recv("ready", 60)
        w.send("go", go_args(p.duration, p))
        time.sleep(p.warmup)
        cpu0 = cpu_seconds(pid)
        db0 = db_cpu() if db_cpu else math.nan
        with profiled(ctx, profile, pid) if profile else contextlib.nullcontext():
            res = w.recv("result", p.duration + p.warmup + 60)
        db_ms = cpu_ms_per_call(db_cpu() - db0, res) if db_cpu else math.nan
        return res, cpu_ms_per_call(cpu_seconds(pid) - cpu0, res), db_ms


def create_run(
    ctx: Ctx,
    synced: int,
    used: int,
    store: str | None = None,
    db_cpu: Callable[[], float] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figure 2's measure of one (synced, used) entry, on SQLite or on the PostgreSQL
    database `store` (whose server's CPU `db_cpu` counts)."""
    name = f"create-{synced}-{used}" + ("-pg" if store else "")
    cp, toks, artifact = prepared(ctx.folder(name), synced, store=store)
    try:
        res, cpu_ms, db_ms = _drive_creates(
            ctx, cp.addr, cp.pid, toks["deployer"][0], artifact, used, name, db_cpu
        )
        info = {
            "control_rss_mb": rss_bytes(cp.pid) / MB,
            "control_log_errors": cp.errors_logged(),
            "server_cpu_ms_per_call": cpu_ms,
            "database_cpu_ms_per_call": db_ms if db_cpu else None,
        }
    finally:
        cp.stop()
    return res, info


def fig_create(ctx: Ctx) -> list[Row]:
    p = ctx.params
    base = ctx.baseline.get("echo_unary")
    echo_cpu = ctx.baseline.get("echo_unary_cpu_ms")
    floor, floor_cpu = ctx.baseline.get("create_floor"), ctx.baseline.get("create_floor_cpu_ms")
    rows: list[Row] = []
    for i, (synced, used) in enumerate(p.create_runs):
        res, info = create_run(ctx, synced, used)
        rate, p50, p99 = loop_stats(res)
        # For figure 10 (the same on PostgreSQL), printed next to these.
        ctx.baseline[f"create_sqlite_{synced}_{used}"] = rate
        ctx.baseline[f"create_sqlite_{synced}_{used}_cpu_ms"] = info["server_cpu_ms_per_call"]
        ctx.baseline[f"create_sqlite_{synced}_{used}_p99"] = p99
        ratio = ratio_of(rate, base)
        extra = {"errors": res["errors"], "services_synced": synced, "services_used": used}
        extra.update(info)
        cpu = info["server_cpu_ms_per_call"]
        versus: list[str] = []
        if echo_cpu:
            versus.append(f"{cpu / echo_cpu:.1f} x echo's")
        if floor_cpu:
            versus.append(f"{cpu / floor_cpu:.1f} x the floor's")
        cpu_note = f"server CPU {cpu:.3f} ms a call"
        if versus:
            cpu_note += f" ({', '.join(versus)})"
        if floor:
            cpu_note += f"; {rate / floor:.2f} x the floor's calls/s"
        what = (
            "1 service (each call supersedes the queued one)"
            if used == 1
            else f"{used} services, {used} queued"
        )
        if synced > 1:
            what += f", {synced} in the manifests"
        rows.append(
            Row(
                "2",
                f"CreateDeployment: {what}",
                rate,
                "calls/s",
                "≥ 0.5 x echo",
                ratio,
                None if ratio is None else ratio >= 0.5,
                note=cpu_note,
                extra=extra,
            )
        )
        if i == 0:
            rows += [
                Row(
                    "2",
                    "CreateDeployment latency p50",
                    ms(p50),
                    "ms",
                    ratio=ratio_of(p50, ctx.baseline.get("echo_unary_p50")),
                ),
                Row(
                    "2",
                    "CreateDeployment latency p99",
                    ms(p99),
                    "ms",
                    ratio=ratio_of(p99, ctx.baseline.get("echo_unary_p99")),
                ),
            ]
        else:
            rows[-1].note = f"p50 {ms(p50):.1f} ms, p99 {ms(p99):.1f} ms; {cpu_note}"
    return rows
