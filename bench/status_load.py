"""Figure 17: what agents reporting live status cost the control plane (issue 17, item 6).

One `sami-control serve` (SQLite) and `status_agents` simulated agents (bench/simagent.py,
over real gRPC, in `status_procs` processes of their own, so that /proc shows the control
plane's CPU alone). Each agent serves a swarm of its own: a cluster with `status_services`
services that Sami deployed there (SUCCEEDED deployments whose ids the services' labels
carry, so every report takes the control plane's real path: rows matched to their targets,
drift judged, rows written when they changed).

Sami serves one cluster per environment, three at most, and cannot create a thousand
clusters yet; the clusters and their deployments are written straight into the store
before it starts. (A thousand agents of one cluster would report one swarm: the same five
rows a thousand times over, which is not what a thousand swarms cost.)

The same control plane and agents are measured twice over the same window: idle (connected,
heartbeats only: the baseline), then reporting as sami_agent/live_status.py does: a full
report as status starts (every agent at once: a restart of the control plane looks like
that), then a full report every DEFAULT_FULL_INTERVAL (60 s, the agents' phases spread over
it, as agents connected at different times are) and, in between, one changed service (a
task replaced: its change time moves) every `status_change_interval` seconds on average
per agent (Poisson). Afterwards every row in the store is compared with what its agent last
sent, so the reports counted were handled, not only sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import simagent
from bench.common import Row, cpu_seconds, rss_bytes
from bench.control import IMAGE_REF, ControlPlane
from bench.figures.shared import MB, Ctx, error_counts, ratio_of, split
from bench.workers import Link, Workers
from sami.v1 import agent_pb2
from sami_agent.live_status import DEFAULT_FULL_INTERVAL

FIGURE = "17"
ENVIRONMENT = "stage"
# How long the initial full reports may take to be stored, at most.
BURST_TIMEOUT = 600.0


# -- what the agents run ---------------------------------------------------------------------


def cluster_of(agent: int) -> str:
    return f"swarm-{agent:05d}"


def agent_id_of(agent: int) -> str:
    return f"mgr-{agent:05d}"


def deployment_id(agent: int, service: int) -> str:
    # The shape of sami_control.core.ids.new_id("dep"): a prefix and 16 hex digits.
    return f"dep_{agent:010x}{service:06x}"


def app_digest(service: int) -> str:
    return "sha256:" + hashlib.sha256(f"bench-app-{service}".encode()).hexdigest()


def stack_of(service: int) -> str:
    return f"{ENVIRONMENT}_app{service}"


@dataclass
class StatusPlan:
    first_agent: int
    services: int
    full_interval: float
    change_interval: float
    seed: int


@dataclass
class StatusCounts:
    full: int = 0
    changes: int = 0
    rows: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "full": self.full,
            "changes": self.changes,
            "rows": self.rows,
            "errors": dict(self.errors),
        }


class SimStatus:
    """One agent's swarm as its live status reports describe it: `services` services of two
    replicas each, running the digest Sami deployed (no drift)."""

    def __init__(self, agent: simagent.SimAgent, index: int, plan: StatusPlan) -> None:
        self.agent = agent
        self.index = index
        self.plan = plan
        started = time.time() - 86_400  # deployed yesterday
        self.change_time = [started + k for k in range(plan.services)]

    def service(self, k: int) -> agent_pb2.LiveService:
        digest = app_digest(k)
        msg = agent_pb2.LiveService(
            stack_name=stack_of(k),
            service="web",
            deployment_id=deployment_id(self.index, k),
            label_digest=digest,
            image=f"registry.example.com/team/app{k}:1.{k}.0@{digest}",
            desired_replicas=2,
            running_replicas=2,
            unhealthy_tasks=0,
            update_state="completed",
            update_message="update completed",
        )
        msg.change_time.FromNanoseconds(int(self.change_time[k] * 1e9))
        return msg

    def report(self, full: bool, ks: list[int]) -> agent_pb2.AgentMessage:
        return agent_pb2.AgentMessage(
            live_status=agent_pb2.LiveStatus(full=full, services=[self.service(k) for k in ks])
        )

    async def run(self, counts: StatusCounts, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        every = list(range(self.plan.services))
        try:
            await self.agent._write(self.report(True, every))
            counts.full += 1
            counts.rows += len(every)
            next_full = loop.time() + rng.uniform(0, self.plan.full_interval)
            next_change = loop.time() + rng.expovariate(1 / self.plan.change_interval)
            while True:
                await asyncio.sleep(max(0.0, min(next_full, next_change) - loop.time()))
                if loop.time() >= next_full:
                    await self.agent._write(self.report(True, every))
                    counts.full += 1
                    counts.rows += len(every)
                    next_full += self.plan.full_interval
                else:
                    k = rng.randrange(self.plan.services)
                    self.change_time[k] = time.time()  # a task replaced
                    await self.agent._write(self.report(False, [k]))
                    counts.changes += 1
                    counts.rows += 1
                    next_change += rng.expovariate(1 / self.plan.change_interval)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            kind = type(exc).__name__
            counts.errors[kind] = counts.errors.get(kind, 0) + 1


def status_agents_worker(link: Link, plan: simagent.AgentPlan, status: StatusPlan) -> None:
    """Worker: connect the agents, say `ready`; on `report` start their live status; answer
    each `mark` with the counts so far; on `quiesce` stop reporting and send `quiet` with
    the change time last reported per (cluster, stack); on `stop` send the `result`."""
    asyncio.run(_status_agents(link, plan, status))


async def _status_agents(link: Link, plan: simagent.AgentPlan, status: StatusPlan) -> None:
    stats = simagent.Stats()
    gate = asyncio.Event()
    gate.set()
    agents = [
        simagent.SimAgent(plan, agent_id, plan.tokens[i], stats, gate)
        for i, agent_id in enumerate(plan.agent_ids)
    ]
    sims = [SimStatus(a, status.first_agent + i, status) for i, a in enumerate(agents)]
    counts = StatusCounts()
    rng = random.Random(status.seed)
    servers: list[asyncio.Task[None]] = []
    reporters: list[asyncio.Task[None]] = []
    try:
        up, connect_s = await simagent.connect_all(plan, agents, stats, servers)
        ups = {id(a) for a in up}
        link.send(
            "ready",
            {
                "connected": stats.connected,
                "errors": dict(stats.errors),
                "error_details": stats.error_details,
                "connect_seconds": connect_s,
            },
        )
        deadline = time.monotonic() + plan.max_lifetime
        while True:
            try:
                kind, _ = await link.recv(
                    ["report", "mark", "quiesce", "stop"], deadline - time.monotonic()
                )
            except TimeoutError:
                break
            if kind == "report":
                reporters = [
                    asyncio.create_task(s.run(counts, rng)) for s in sims if id(s.agent) in ups
                ]
            elif kind == "mark":
                link.send("marked", counts.to_dict())
            elif kind == "quiesce":
                for t in reporters:
                    t.cancel()
                await asyncio.gather(*reporters, return_exceptions=True)
                last = {
                    f"{cluster_of(s.index)}/{stack_of(k)}": s.change_time[k]
                    for s in sims
                    if id(s.agent) in ups
                    for k in range(status.services)
                }
                link.send("quiet", {"counts": counts.to_dict(), "last": last})
            else:
                break
        await asyncio.sleep(0.05)
    finally:
        for t in reporters:
            t.cancel()
        for s in servers:
            s.cancel()
        await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)
    link.send("result", {**stats.to_dict(), "status": counts.to_dict()})


# -- the control plane's data ------------------------------------------------------------------


def seed_store(data: Path, agents: int, services: int) -> tuple[str, list[str]]:
    """Clusters, their SUCCEEDED deployments, an agent token per cluster and an admin token,
    written straight into the SQLite store at `data` in one transaction. Returns (admin
    token, agent tokens by agent index)."""
    from sami_control.core import token_secrets
    from sami_control.core.model import (
        Artifact,
        ArtifactKind,
        Cluster,
        Deployment,
        Role,
        State,
        TokenRecord,
    )
    from sami_control.storage import open_store

    data.mkdir(parents=True, exist_ok=True)
    now = time.time()

    def token(role: Role, name: str, cluster: str = "") -> tuple[TokenRecord, str]:
        issued = token_secrets.issue(
            TokenRecord(
                id="",
                name=name,
                role=role,
                secret_hash="",
                cluster=cluster,
                services=[],
                environments=[],
                created_at=now,
                expires_at=0.0,
                created_by="bench",
            )
        )
        return issued.record, issued.plaintext

    async def write() -> tuple[str, list[str]]:
        store = open_store(None, data)
        await store.open()
        try:
            plaintexts = []
            async with store.tx() as tx:
                for k in range(services):
                    await tx.insert_artifact(
                        Artifact(
                            id=f"art_{k:016x}",
                            artifact_name=f"app{k}",
                            kind=ArtifactKind.IMAGE,
                            ref=IMAGE_REF,
                            digest=app_digest(k),
                            created_at=now - 90_000,
                            created_by="bench",
                        )
                    )
                admin, admin_text = token(Role.ADMIN, "bench-admin")
                await tx.insert_token(admin)
                for i in range(agents):
                    cluster = cluster_of(i)
                    await tx.insert_cluster(Cluster(id=cluster, environments=[], created_at=now))
                    rec, text = token(Role.AGENT, f"bench-status-{i}", cluster)
                    await tx.insert_token(rec)
                    plaintexts.append(text)
                    for k in range(services):
                        await tx.insert_deployment(
                            Deployment(
                                id=deployment_id(i, k),
                                service=f"app{k}",
                                environment=ENVIRONMENT,
                                pull_request=0,
                                artifact_id=f"art_{k:016x}",
                                cluster=cluster,
                                deployment_type="swarm",
                                stack_name=stack_of(k),
                                state=State.SUCCEEDED,
                                created_by="bench",
                                created_at=now - 86_500,
                                updated_at=now - 86_400,
                                finished_at=now - 86_400,
                            )
                        )
            return admin_text, plaintexts
        finally:
            await store.close()

    return asyncio.run(write())


def _db(data: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data / 'sami.db'}?mode=ro", uri=True, timeout=30)


def _stored(data: Path) -> tuple[int, int]:
    """(live rows, clusters with a full report) in the store."""
    with contextlib.closing(_db(data)) as db:
        rows = db.execute("SELECT count(*) FROM live_services").fetchone()[0]
        reports = db.execute("SELECT count(*) FROM live_reports").fetchone()[0]
    return int(rows), int(reports)


def _matching(data: Path, last: dict[str, float]) -> int:
    """Rows whose change time is what their agent last reported (to the microsecond: the
    Timestamp carries nanoseconds, the row a float)."""
    with contextlib.closing(_db(data)) as db:
        got = {
            f"{c}/{s}": t
            for c, s, t in db.execute(
                "SELECT cluster, stack_name, change_time FROM live_services WHERE NOT removed"
            )
        }
    return sum(1 for key, t in last.items() if key in got and abs(got[key] - t) < 1e-5)


# -- the figure --------------------------------------------------------------------------------


def _window(pid: int, seconds: float) -> dict[str, float]:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    return {
        "cpu_pct": 100.0 * (c1 - c0) / (t1 - t0),
        "cpu_s": c1 - c0,
        "seconds": t1 - t0,
        "rss_mb": rss_bytes(pid) / MB,
    }


def _sum_counts(marks: list[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(int(m[k]) for m in marks) for k in ("full", "changes", "rows")}


def fig_status(ctx: Ctx) -> list[Row]:
    p = ctx.params
    n, services = p.status_agents, p.status_services
    root = ctx.folder("status")
    ctx.say(f"status: seeding {n} clusters, {services} deployed services each")
    admin, tokens = seed_store(root / "data", n, services)
    del admin  # the figure reads the store itself: a GetStatus would cost the control plane
    cp = ControlPlane(root)
    cp.start()
    data = cp.data
    try:
        rss_empty = rss_bytes(cp.pid) / MB
        indexes = list(range(n))
        groups = split([str(i) for i in indexes], p.status_procs)
        with Workers() as ws:
            workers = []
            for gi, group in enumerate(groups):
                first = int(group[0])
                workers.append(
                    ws.add(
                        f"status-agents-{gi}",
                        status_agents_worker,
                        simagent.AgentPlan(
                            addr=cp.addr,
                            tokens=tokens[first : first + len(group)],
                            agent_ids=[agent_id_of(int(i)) for i in group],
                            agents_per_token=1,
                            progress=0,
                            connect_timeout=300,
                            max_lifetime=3600,
                        ),
                        StatusPlan(
                            first_agent=first,
                            services=services,
                            full_interval=DEFAULT_FULL_INTERVAL,
                            change_interval=p.status_change_interval,
                            seed=gi,
                        ),
                    )
                )
            ready = [w.recv("ready", 400) for w in workers]
            connected = sum(r["connected"] for r in ready)
            ctx.say(f"status: {connected} agents connected; idle window {p.status_window:.0f} s")
            time.sleep(p.status_settle)
            idle = _window(cp.pid, p.status_window)

            # Every agent's first full report at once.
            c0, t0 = cpu_seconds(cp.pid), time.monotonic()
            for w in workers:
                w.send("report")
            want = connected * services
            while _stored(data) != (want, connected):
                if time.monotonic() - t0 > BURST_TIMEOUT:
                    raise TimeoutError(f"{_stored(data)} of {want} rows stored")
                time.sleep(0.1)
            burst_s, burst_cpu = time.monotonic() - t0, cpu_seconds(cp.pid) - c0
            ctx.say(f"status: {connected} first full reports stored in {burst_s:.1f} s")
            time.sleep(p.status_settle)

            for w in workers:
                w.send("mark")
            before = _sum_counts([w.recv("marked", 60) for w in workers])
            ctx.say(f"status: reporting window {p.status_window:.0f} s")
            busy = _window(cp.pid, p.status_window)
            for w in workers:
                w.send("mark")
            after = _sum_counts([w.recv("marked", 60) for w in workers])

            for w in workers:
                w.send("quiesce")
            quiet = [w.recv("quiet", 120) for w in workers]
            time.sleep(2.0)  # the last reports in flight
            last: dict[str, float] = {}
            for q in quiet:
                last.update(q["last"])
            matched = _matching(data, last)
            for w in workers:
                w.send("stop")
            results = [w.recv("result", 120) for w in workers]
        errors_logged = cp.errors_logged()
    finally:
        cp.stop()

    sent = {k: after[k] - before[k] for k in after}
    seconds = busy["seconds"]
    reports = sent["full"] + sent["changes"]
    rate = reports / seconds
    extra_cpu_s = busy["cpu_s"] - idle["cpu_pct"] / 100 * seconds
    ms_per_report = 1000 * extra_cpu_s / reports if reports else float("nan")
    errors = error_counts(*results)
    for r in results:
        for k, v in r["status"]["errors"].items():
            errors[f"status:{k}"] = errors.get(f"status:{k}", 0) + v
    extra = {
        "agents": n,
        "agents_connected": connected,
        "services_per_agent": services,
        "full_interval_s": DEFAULT_FULL_INTERVAL,
        "change_interval_s": p.status_change_interval,
        "window_s": p.status_window,
        "idle": idle,
        "reporting": busy,
        "rss_before_agents_mb": rss_empty,
        "sent_in_window": sent,
        "reports_per_s": rate,
        "full_reports_per_s": sent["full"] / seconds,
        "change_reports_per_s": sent["changes"] / seconds,
        "cpu_ms_per_report_above_idle": ms_per_report,
        "first_full_reports_s": burst_s,
        "first_full_reports_cpu_s": burst_cpu,
        "rows_matching_last_report": matched,
        "rows_expected": len(last),
        "errors": errors,
        "control_log_errors": errors_logged,
    }
    consistent = f"{matched}/{len(last)} rows in the store as last reported"
    return [
        Row(
            FIGURE,
            f"control-plane CPU, {connected} agents reporting live status "
            f"({p.status_window:.0f} s window)",
            busy["cpu_pct"],
            "% core",
            "",
            ratio_of(busy["cpu_pct"], idle["cpu_pct"]),
            None,
            note=f"idle (same agents, heartbeats only) {idle['cpu_pct']:.2f} %; "
            f"{ms_per_report:.2f} ms CPU per report above idle",
            extra=extra,
        ),
        Row(
            FIGURE,
            f"control-plane RSS, {connected} agents reporting live status",
            busy["rss_mb"],
            "MB",
            "",
            ratio_of(busy["rss_mb"], idle["rss_mb"]),
            None,
            note=f"idle {idle['rss_mb']:.0f} MB; before any agent {rss_empty:.0f} MB",
        ),
        Row(
            FIGURE,
            f"live status reports handled ({services} services per agent)",
            rate,
            "reports/s",
            "",
            None,
            None,
            note=f"{sent['full'] / seconds:.1f} full + {sent['changes'] / seconds:.1f} changes"
            f" /s; first {connected} full reports stored in {burst_s:.1f} s"
            f" ({burst_cpu:.1f} s CPU); {consistent}"
            + (f"; errors {errors}" if errors else "")
            + (f"; {errors_logged} errors logged" if errors_logged else ""),
        ),
    ]
