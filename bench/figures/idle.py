"""Figures 5 and 7, what the processes cost at rest: the control plane with many idle
agents, and the RSS of an idle control plane and of a real dry-run agent."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from bench import echo, simagent
from bench.common import (
    PY,
    Row,
    cpu_percent_over,
    cpu_seconds,
    fd_count,
    rss_bytes,
    thread_count,
    wait_for_text,
)
from bench.control import (
    CLUSTER,
    STREAMS_PER_TOKEN,
    ControlPlane,
    deployments_repo,
    prepared,
    service_names,
)
from bench.figures.params import Params
from bench.figures.shared import (
    MB,
    Ctx,
    EchoServer,
    error_counts,
    ratio_of,
    shortfall,
    split,
)
from bench.workers import Workers
from sami_common.dial import IDLE_HEARTBEAT_FACTOR
from sami_control.core.settings import Settings

# -- 5: connected idle agents -------------------------------------------------------------------

# The Welcome's heartbeat interval of the benchmark's control plane (its default), and how often
# an agent holding no lease heartbeats: IDLE_HEARTBEAT_FACTOR times less often (the real agent
# and the simulated ones alike).
_WELCOME_HEARTBEAT_S = Settings.heartbeat_interval
_IDLE_HEARTBEAT_S = IDLE_HEARTBEAT_FACTOR * _WELCOME_HEARTBEAT_S


def _measure_idle(pid: int, window: float) -> dict[str, float]:
    rss = rss_bytes(pid)
    cpu = cpu_percent_over(pid, window)
    return {
        "rss_mb": rss / MB,
        "cpu_pct": cpu,
        "threads": float(thread_count(pid)),
        "fds": float(fd_count(pid)),
        "rss_after_mb": rss_bytes(pid) / MB,
    }


def fig_idle(ctx: Ctx) -> list[Row]:
    p = ctx.params
    n = p.idle_agents
    ids = [f"agent-{i:05d}" for i in range(n)]
    groups = split(ids, p.idle_procs)
    cp, toks, _ = prepared(
        ctx.folder("idle"), 1, agent_tokens=-(-n // STREAMS_PER_TOKEN) + p.idle_procs
    )
    try:
        time.sleep(p.idle_settle)
        before = rss_bytes(cp.pid)
        with Workers() as ws:
            agent_ws = []
            tok_index = 0
            for gi, group in enumerate(groups):
                ntok = -(-len(group) // STREAMS_PER_TOKEN)
                agent_ws.append(
                    ws.add(
                        f"idle-agents-{gi}",
                        simagent.agents_worker,
                        simagent.AgentPlan(
                            addr=cp.addr,
                            tokens=toks["agent"][tok_index : tok_index + ntok],
                            agent_ids=group,
                            agents_per_token=STREAMS_PER_TOKEN,
                            progress=0,
                            connect_timeout=300,
                        ),
                    )
                )
                tok_index += ntok
            t0 = time.monotonic()
            ready = [w.recv("ready", 400) for w in agent_ws]
            connect_s = time.monotonic() - t0
            connected = sum(r["connected"] for r in ready)
            time.sleep(p.idle_settle)
            m = _measure_idle(cp.pid, p.idle_window)
            for w in agent_ws:
                w.send("stop")
            results = [w.recv("result", 120) for w in agent_ws]
        errors_logged = cp.errors_logged()
    finally:
        cp.stop()
    base = _idle_baseline(ctx, p, connected)
    per_agent = (m["rss_mb"] * MB - before) / max(1, connected)
    # Below 5,000 agents (--quick), the goal is judged on the RSS projected to 5,000.
    projected_mb = (before + per_agent * 5000) / MB
    judged = m["rss_mb"] if connected >= 5000 else projected_mb
    extra = {
        "agents_connected": connected,
        "connect_seconds": connect_s,
        "connects_per_s": connected / connect_s if connect_s else None,
        "rss_before_agents_mb": before / MB,
        "rss_per_agent_kb": per_agent / 1024,
        "rss_projected_5000_mb": projected_mb,
        "threads": m["threads"],
        "fds": m["fds"],
        "heartbeat_interval_s": _IDLE_HEARTBEAT_S,
        "welcome_heartbeat_interval_s": _WELCOME_HEARTBEAT_S,
        "heartbeats_sent_total": sum(r["heartbeats"] for r in results),
        "errors": error_counts(*results),
        "baseline": base,
        "control_log_errors": errors_logged,
    }
    details: dict[str, str] = {}
    for r in ready:
        details.update(r.get("error_details") or {})
    extra["error_details"] = details
    note = (
        f"{per_agent / 1024:.0f} KB per agent; baseline {base['rss_mb']:.0f} MB, "
        f"{base['rss_per_stream_kb']:.0f} KB per stream"
    )
    if connected < 5000:
        note += f"; projected to 5,000 agents: {projected_mb:.0f} MB"
    short = shortfall(n, connected, details, "agents")
    if short:
        note += "; " + short
    return [
        Row(
            "5",
            f"control-plane RSS, {connected} idle agents connected",
            m["rss_mb"],
            "MB",
            "< 300 MB at 5,000",
            ratio_of(m["rss_mb"], base["rss_mb"]),
            judged < 300,
            note=note,
            extra=extra,
        ),
        Row(
            "5",
            f"control-plane idle CPU, {connected} agents ({p.idle_window:.0f} s window)",
            m["cpu_pct"],
            "% core",
            "< 5 %",
            ratio_of(m["cpu_pct"], base["cpu_pct"]),
            m["cpu_pct"] < 5,
            note=f"baseline {base['cpu_pct']:.1f} %; idle agents heartbeat every"
            f" {_IDLE_HEARTBEAT_S:.0f} s",
        ),
    ]


def _idle_baseline(ctx: Ctx, p: Params, count: int) -> dict[str, float]:
    """As many idle streams as agents connected to Sami, one connection each with the agents'
    channel options (keepalives), held by a bare grpc.aio server, with an idle Sami agent's
    traffic: a first message answered, then a message answered every idle heartbeat period."""
    with EchoServer(ctx.folder("idle-baseline")) as srv, Workers() as ws:
        time.sleep(p.idle_settle)
        before = rss_bytes(srv.pid)
        per = -(-count // p.idle_procs)
        streams = [
            ws.add(
                f"idle-streams-{i}",
                echo.idle_streams_worker,
                srv.addr,
                min(per, count - i * per),
                _IDLE_HEARTBEAT_S,
                100,
                simagent.OPTIONS,
                True,
            )
            for i in range(p.idle_procs)
            if count - i * per > 0
        ]
        connected = sum(s.recv("ready", 400)["connected"] for s in streams)
        time.sleep(p.idle_settle)
        m = _measure_idle(srv.pid, p.idle_window)
        m["connected"] = float(connected)
        m["rss_before_mb"] = before / MB
        m["rss_per_stream_kb"] = (m["rss_mb"] * MB - before) / max(1, connected) / 1024
        for s in streams:
            s.send("stop")
        m["heartbeats_sent_total"] = float(
            sum(s.recv("result", 120)["heartbeats"] for s in streams)
        )
    return m


# -- 7: idle footprint --------------------------------------------------------------------------


def fig_footprint(ctx: Ctx) -> list[Row]:
    p = ctx.params
    root = ctx.folder("footprint")
    cp = ControlPlane(root)
    cp.create_cluster()
    admin = cp.token("admin", name="bench-admin")
    agent_token = cp.token("agent", cluster=CLUSTER, name="bench-real-agent")
    cp.start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        cp.sync_manifests(admin, deployments_repo(service_names(1)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
        env.update(SAMI_TOKEN=agent_token, SAMI_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
        with open(root / "agent.log", "ab") as log:
            agent = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "sami_agent",
                    "--control",
                    cp.addr,
                    "--agent-id",
                    "bench-real-agent",
                    "--dry-run",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_for_text(root / "agent.log", "control_plane_connected", 30)
        time.sleep(p.footprint_settle)
        cp_rss, agent_rss = rss_bytes(cp.pid), rss_bytes(agent.pid)
        c0, a0, t0 = cpu_seconds(cp.pid), cpu_seconds(agent.pid), time.monotonic()
        time.sleep(p.footprint_settle)
        dt = time.monotonic() - t0
        cp_cpu = 100 * (cpu_seconds(cp.pid) - c0) / dt
        agent_cpu = 100 * (cpu_seconds(agent.pid) - a0) / dt
    finally:
        if agent is not None and agent.poll() is None:
            os.kill(agent.pid, signal.SIGTERM)
            try:
                agent.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait(5)
        cp.stop()
    # Baseline: a bare grpc.aio server holding one stream, and the process holding it.
    with EchoServer(ctx.folder("footprint-baseline")) as srv, Workers() as ws:
        w = ws.add("footprint-stream", echo.idle_streams_worker, srv.addr, 1, 10.0, 1)
        w.recv("ready", 60)
        time.sleep(p.footprint_settle)
        base_server, base_client = rss_bytes(srv.pid), rss_bytes(w.pid)
        w.send("stop")
        w.recv("result", 30)
    return [
        Row(
            "7",
            "idle control plane RSS (1 agent connected)",
            cp_rss / MB,
            "MB",
            "≤ 60 MB",
            ratio_of(cp_rss, base_server),
            cp_rss / MB <= 60,
            note=f"baseline grpc.aio server {base_server / MB:.0f} MB; CPU {cp_cpu:.1f} %",
            extra={"cpu_pct": cp_cpu, "baseline_mb": base_server / MB},
        ),
        Row(
            "7",
            "idle agent RSS (python -m sami_agent --dry-run)",
            agent_rss / MB,
            "MB",
            "≤ 40 MB",
            ratio_of(agent_rss, base_client),
            agent_rss / MB <= 40,
            note=f"baseline grpc.aio client {base_client / MB:.0f} MB; CPU {agent_cpu:.1f} %",
            extra={"cpu_pct": agent_cpu, "baseline_mb": base_client / MB},
        ),
    ]
