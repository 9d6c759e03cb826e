"""Faults of a control plane that runs as two replicas on one PostgreSQL, with real
processes: a replica killed -9 under a CI-like load, PostgreSQL restarted as a crash
(`pg_ctl restart -m immediate`), and a cut between one replica and the database (a TCP
proxy). What users rely on: agents and watchers move to the live replica within seconds;
calls fail UNAVAILABLE (retryable, naming the database) while the database is out of
reach, and everything recovers by itself; every acknowledged CreateDeployment reaches
exactly one terminal state, no request id makes two deployments, no deployment is applied
twice (docs/high-availability.md, "When something fails")."""

from __future__ import annotations

import collections
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from sami.v1 import cluster_pb2, cluster_pb2_grpc, deployment_pb2, deployment_pb2_grpc
from tests.e2e.conftest import FAST, REF, sync
from tests.faults.checkers import TERMINAL, Load, RawWatcher, md
from tests.faults.proxy import Proxy
from tests.harness import ControlPlane, Proc, agent, sami, wait_for
from tests.pg import PgDatabase

pytestmark = pytest.mark.timeout(180)

SERVICES = ["web", "api"]
# Each dry-run step takes this long: a deployment is in flight for about 1.5 s, so some are
# when a fault strikes.
STEP = "0.3"
MOVE_WITHIN = 5.0  # seconds for agents and watchers to be back on a live replica


@dataclass
class Pair:
    a: ControlPlane
    b: ControlPlane
    admin: str
    agent_token: str
    artifact: str
    db: PgDatabase
    tmp: Path
    agents: list[Proc] = field(default_factory=list)

    @property
    def both(self) -> str:
        return f"{self.a.addr},{self.b.addr}"

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.jsonl"

    def agent(self, agent_id: str, addrs: str) -> Proc:
        """A dry-run agent dialling `addrs` (one replica's address, or both)."""
        to = ControlPlane(self.tmp)
        to.addr = addrs
        p = agent(
            to,
            self.agent_token,
            agent_id,
            self.tmp,
            "--dry-run",
            "--dry-run-step-seconds",
            STEP,
            "--ledger",
            str(self.ledger),
        )
        self.agents.append(p)
        return p

    def applies(self) -> list[dict[str, object]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line]


def _start_pair(tmp: Path, db: PgDatabase, store_a: str = "") -> Pair:
    a = ControlPlane(tmp, *FAST, store=store_a or db.url, name="replica-a")
    b = ControlPlane(tmp, *FAST, store=db.url, name="replica-b")
    b.cluster("local", "stage", "production", "pull_request")
    admin = b.token("admin", name="ci")
    agent_token = b.token("agent", "--cluster", "local", name="agent")
    a.start()
    b.start()
    sync(b, admin)
    r = sami(b, admin, "artifact", "register", "web", "--ref", REF)
    assert r.rc == 0, r.err
    return Pair(a, b, admin, agent_token, r.last, db, tmp)


def _stop_pair(p: Pair) -> None:
    for proc in p.agents:
        proc.kill()
    for c in (p.a, p.b):
        if c.proc is not None and c.proc.alive():
            c.kill()


@pytest.fixture
def pair(tmp_path: Path, pg_database: PgDatabase) -> Iterator[Pair]:
    p = _start_pair(tmp_path, pg_database)
    try:
        yield p
    finally:
        _stop_pair(p)


def connected_on(addr: str, token: str) -> set[str]:
    """The agents whose stream is on the replica at `addr` (a replica lists as connected
    only the agents connected to it)."""
    with grpc.insecure_channel(addr) as ch:
        resp = cluster_pb2_grpc.ClusterServiceStub(ch).ListAgents(
            cluster_pb2.ListAgentsRequest(cluster="local"), metadata=md(token), timeout=5
        )
    return {a.agent_id for a in resp.agents if a.connected}


def _start_load(addr: str, p: Pair) -> tuple[Load, threading.Thread]:
    load = Load(addr, p.admin, p.artifact, SERVICES, interval=0.3)
    t = threading.Thread(target=load.run, daemon=True)
    t.start()
    return load, t


def _stop_load(load: Load, t: threading.Thread) -> None:
    load.stop.set()
    t.join(30)
    assert not load.errors, load.errors[:5]


def _watch(addr: str, p: Pair, dep_ids: list[str], deadline: float) -> list[RawWatcher]:
    watchers = []
    for dep_id in dep_ids:
        w = RawWatcher(addr, p.admin, dep_id)
        threading.Thread(target=w.run, args=(deadline,), daemon=True).start()
        watchers.append(w)
    return watchers


def _state(addr: str, token: str, dep_id: str) -> int:
    with grpc.insecure_channel(addr) as ch:
        d = deployment_pb2_grpc.DeploymentServiceStub(ch).GetDeployment(
            deployment_pb2.GetDeploymentRequest(name=dep_id), metadata=md(token), timeout=5
        )
    return int(d.state)


def _events(addr: str, token: str, dep_id: str) -> list[deployment_pb2.DeploymentEvent]:
    with grpc.insecure_channel(addr) as ch:
        stream = deployment_pb2_grpc.DeploymentServiceStub(ch).WatchDeployment(
            deployment_pb2.WatchDeploymentRequest(name=dep_id), metadata=md(token), timeout=10
        )
        return [i.event for i in stream if i.WhichOneof("item") == "event"]


def check_nothing_lost_nor_doubled(p: Pair, addr: str, load: Load) -> dict[str, int]:
    """Every acknowledged deployment ends exactly once; each request id made one deployment;
    each deployment was applied once per attempt, and a second attempt only after its lease
    was lost. Returns counts for the report."""
    acked = set(load.acked.values())
    assert acked

    def all_terminal() -> bool:
        return all(_state(addr, p.admin, d) in TERMINAL for d in acked)

    wait_for(all_terminal, timeout=60, interval=0.5, what="every acknowledged deployment to end")
    # Request ids: the database holds one deployment per id, the one acknowledged (at most
    # one more, made by the call in flight when the load stopped, not acknowledged).
    rows = p.db.sql("SELECT request_id, id FROM deployments WHERE request_id LIKE 'load-%'")
    made = dict(line.split("|") for line in rows.splitlines())
    for rid, dep_id in load.acked.items():
        assert made.get(rid) == dep_id, (rid, dep_id, made.get(rid))
    assert len(set(made) - set(load.acked)) <= 1, sorted(set(made) - set(load.acked))
    per_attempt = collections.Counter(
        (str(r["deployment_id"]), int(str(r["attempt"]))) for r in p.applies()
    )
    twice = {k: n for k, n in per_attempt.items() if n > 1}
    assert not twice, f"applied twice in one attempt: {twice}"
    attempts = collections.Counter(d for d, _ in per_attempt)
    succeeded = 0
    for dep_id in acked:
        events = _events(addr, p.admin, dep_id)
        seqs = [e.sequence for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), (dep_id, seqs)
        terminal = [
            e for e in events if e.type == deployment_pb2.STATE_CHANGED and e.state in TERMINAL
        ]
        assert len(terminal) == 1 and terminal[0] is events[-1], (dep_id, terminal)
        succeeded += terminal[0].state == deployment_pb2.SUCCEEDED
        if attempts[dep_id] > 1:
            # Applied again only because the first attempt's lease was lost (requeued), and
            # the earlier attempt's outcome changed nothing: one terminal event, above.
            requeued = [
                e
                for e in events
                if e.type == deployment_pb2.STATE_CHANGED and e.state == deployment_pb2.QUEUED
            ]
            assert len(requeued) >= attempts[dep_id], (dep_id, [e.message for e in events])
    return {
        "deployments": len(acked),
        "succeeded": succeeded,
        "applies": sum(per_attempt.values()),
        "reapplied": sum(1 for n in attempts.values() if n > 1),
    }


def _wall(iso: object) -> float:
    return datetime.fromisoformat(str(iso)).timestamp()


def _unavailable_naming(p: Pair, failures: list[tuple[float, str, grpc.StatusCode, str]]) -> None:
    assert failures, "no call failed while the database was out of reach"
    for _, _, code, details in failures:
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
    assert any(
        p.db.name in details and "PostgreSQL database" in details for *_, details in failures
    ), failures[:3]


def test_kill9_of_a_replica_moves_its_agents_and_watchers_and_loses_nothing(pair: Pair) -> None:
    p = pair
    for i in (1, 2, 3):
        p.agent(f"agent-{i}", p.both)
    every = {"agent-1", "agent-2", "agent-3"}
    wait_for(
        lambda: connected_on(p.a.addr, p.admin) | connected_on(p.b.addr, p.admin) == every,
        what="every agent connected",
    )
    # Kill the replica holding more agents (each starts on a replica chosen at random).
    on_a = connected_on(p.a.addr, p.admin)
    victim, survivor = (p.a, p.b) if len(on_a) >= 2 else (p.b, p.a)
    moving = on_a if victim is p.a else every - on_a
    load, loader = _start_load(p.both, p)
    wait_for(lambda: len(load.acked) >= 6, timeout=30, what="a first few deployments")
    deadline = time.monotonic() + 90
    in_flight = [
        d for d in list(load.acked.values()) if _state(p.b.addr, p.admin, d) not in TERMINAL
    ]
    # The watchers start on the replica about to die, then move to the next address.
    order = f"{victim.addr},{survivor.addr}"
    watchers = _watch(order, p, in_flight[-3:], deadline)
    assert watchers, "no deployment in flight to watch"
    wait_for(lambda: all(w.sequences for w in watchers), what="the watchers streaming")

    victim.kill(signal.SIGKILL)
    killed = time.monotonic()
    killed_wall = time.time()
    wait_for(
        lambda: connected_on(survivor.addr, p.admin) == every,
        timeout=MOVE_WITHIN,
        interval=0.05,
        what=f"agents {sorted(moving)} to move to the other replica",
    )
    agents_moved = time.monotonic() - killed
    # The moved agents work again: one of them applies a deployment after the kill.
    wait_for(
        lambda: any(
            x["agent_id"] in moving and _wall(x["time"]) > killed_wall for x in p.applies()
        ),
        timeout=MOVE_WITHIN,
        interval=0.05,
        what="a moved agent to apply again",
    )
    moved_applied = time.monotonic() - killed
    wait_for(
        lambda: all(w.ended or w.resumed_at for w in watchers),
        timeout=MOVE_WITHIN,
        interval=0.05,
        what="the watchers to resume",
    )
    resumed = [w.resumed_at[0] - killed for w in watchers if w.resumed_at]
    assert all(0 <= s < MOVE_WITHIN for s in resumed), resumed
    time.sleep(2)  # more deployments acknowledged by the survivor alone
    _stop_load(load, loader)
    counts = check_nothing_lost_nor_doubled(p, survivor.addr, load)
    # The killed replica, restarted, serves again: a deployment created and waited for
    # through it alone succeeds.
    victim.start()
    r = sami(victim, p.admin, "deploy", "web", "--env", "stage", "--artifact", REF, "--wait")
    assert r.rc == 0, r.out + r.err
    for w in watchers:
        assert w.ended and not w.violations, (w.deployment_id, w.sequences, w.violations)
    print(
        f"moved={sorted(moving)} agents_moved={agents_moved:.2f}s "
        f"moved_agent_applied={moved_applied:.2f}s "
        f"watchers_resumed={[round(s, 2) for s in resumed]} failed_calls={len(load.failures)} "
        f"{counts}"
    )


def test_postgres_crash_restart_fails_calls_unavailable_then_recovers(pair: Pair) -> None:
    p = pair
    cluster = p.db.cluster
    for i in (1, 2):
        p.agent(f"agent-{i}", p.both)
    every = {"agent-1", "agent-2"}
    wait_for(
        lambda: connected_on(p.a.addr, p.admin) | connected_on(p.b.addr, p.admin) == every,
        what="every agent connected",
    )
    load, loader = _start_load(p.both, p)
    wait_for(lambda: len(load.acked) >= 4, timeout=30, what="a first few deployments")
    deadline = time.monotonic() + 90
    watchers = _watch(p.both, p, list(load.acked.values())[-2:], deadline)

    # `pg_ctl restart -m immediate`: a crash, every connection cut, WAL replayed at start.
    started = time.monotonic()
    cluster.restart(mode="immediate")
    restart_took = time.monotonic() - started
    # The same crash, with the database kept down long enough to look at a failed call:
    # through the CLI (exit 3: retryable), and raw (UNAVAILABLE naming the database).
    failures_before = len(load.failures)
    down = time.monotonic()
    try:
        cluster.stop_server(mode="immediate")
        r = sami(p.a, p.admin, "get", next(iter(load.acked.values())))
        assert r.rc == 3, (r.rc, r.out, r.err)
        assert p.db.name in r.err and "unavailable" in r.err.lower(), r.err
        wait_for(lambda: len(load.failures) > failures_before, what="the load to see a failure")
    finally:
        time.sleep(max(0.0, 2.0 - (time.monotonic() - down)))
        cluster.start_server()
    up = time.monotonic()
    _unavailable_naming(p, load.failures[failures_before:])

    # Recovery by itself: new deployments are acknowledged and applied, agents connected.
    acked_at_up = len(load.acked)
    wait_for(lambda: len(load.acked) > acked_at_up, timeout=15, what="a deployment after")
    first_ack = time.monotonic() - up
    wait_for(
        lambda: connected_on(p.a.addr, p.admin) | connected_on(p.b.addr, p.admin) == every,
        timeout=15,
        what="every agent connected again",
    )
    agents_back = time.monotonic() - up
    time.sleep(2)
    _stop_load(load, loader)
    counts = check_nothing_lost_nor_doubled(p, p.a.addr, load)
    for w in watchers:
        assert w.ended and not w.violations, (w.deployment_id, w.sequences, w.violations)
    # Both replicas serve again: one sees the other's new deployments at once.
    r = sami(p.b, p.admin, "deploy", "web", "--env", "stage", "--artifact", REF, "--wait")
    assert r.rc == 0, r.out + r.err
    print(
        f"pg_restart={restart_took:.2f}s first_ack_after_up={first_ack:.2f}s "
        f"agents_connected_after_up={agents_back:.2f}s failed_calls={len(load.failures)} "
        f"{counts}"
    )


@pytest.fixture
def pair_a_behind_proxy(tmp_path: Path, pg_database: PgDatabase) -> Iterator[tuple[Pair, Proxy]]:
    cluster = pg_database.cluster
    proxy = Proxy(cluster.port).start()
    via_proxy = pg_database.url.replace(f":{cluster.port}/", f":{proxy.port}/")
    assert via_proxy != pg_database.url
    p = _start_pair(tmp_path, pg_database, store_a=via_proxy)
    try:
        yield p, proxy
    finally:
        _stop_pair(p)
        proxy.stop()


def test_a_cut_between_a_replica_and_postgres(pair_a_behind_proxy: tuple[Pair, Proxy]) -> None:
    p, proxy = pair_a_behind_proxy
    # One agent on each replica, and only there: after the cut, work created on B must
    # reach A's agent through A (its LISTEN connection back).
    on_a = p.agent("agent-a", p.a.addr)
    p.agent("agent-b", p.b.addr)
    wait_for(lambda: connected_on(p.a.addr, p.admin) == {"agent-a"}, what="agent-a on A")
    wait_for(lambda: connected_on(p.b.addr, p.admin) == {"agent-b"}, what="agent-b on B")
    load, loader = _start_load(p.b.addr, p)
    wait_for(lambda: len(load.acked) >= 3, timeout=30, what="a first few deployments")

    proxy.down()
    cut = time.monotonic()
    try:
        acked_at_cut = len(load.acked)
        # A cannot reach the database: its calls fail UNAVAILABLE, naming the database.
        probe_failures: list[tuple[float, str, grpc.StatusCode, str]] = []

        def a_fails() -> bool:
            try:
                _state(p.a.addr, p.admin, next(iter(load.acked.values())))
            except grpc.RpcError as e:
                probe_failures.append((time.monotonic(), p.a.addr, e.code(), e.details() or ""))
                return True
            return False

        wait_for(a_fails, timeout=10, what="a call on A to fail")
        r = sami(p.a, p.admin, "get", next(iter(load.acked.values())))
        assert r.rc == 3 and p.db.name in r.err, (r.rc, r.err)
        # B keeps serving meanwhile.
        wait_for(lambda: len(load.acked) >= acked_at_cut + 3, timeout=10, what="B serving")
        time.sleep(max(0.0, 3.0 - (time.monotonic() - cut)))
    finally:
        proxy.up()
    restored = time.monotonic()
    _unavailable_naming(p, probe_failures)
    del probe_failures[:]

    wait_for(
        lambda: "bus_reconnected" in p.a.log_path.read_text(),
        timeout=10,
        what="A's LISTEN connection back",
    )
    listen_back = time.monotonic() - restored
    # A answers calls again, without a restart.
    wait_for(lambda: not a_fails(), timeout=5, what="A to answer calls again")
    _stop_load(load, loader)
    counts = check_nothing_lost_nor_doubled(p, p.b.addr, load)
    # Work created on B now goes to A's agent (the only one left), offered by A when B's
    # notice arrives.
    p.agents[1].kill()
    wait_for(lambda: connected_on(p.a.addr, p.admin) == {"agent-a"}, what="agent-a on A")
    r = sami(p.b, p.admin, "deploy", "api", "--env", "stage", "--artifact", REF)
    assert r.rc == 0, r.err
    dep = r.last
    wait_for(
        lambda: _state(p.b.addr, p.admin, dep) == deployment_pb2.SUCCEEDED,
        timeout=20,
        what="the deployment created on B to succeed on A's agent",
    )
    assert [x["agent_id"] for x in p.applies() if x["deployment_id"] == dep] == ["agent-a"]
    times = {
        e.state: e.time.ToNanoseconds() / 1e9
        for e in _events(p.b.addr, p.admin, dep)
        if e.type == deployment_pb2.STATE_CHANGED
    }
    offered = times[deployment_pb2.ASSIGNED] - times[deployment_pb2.QUEUED]
    # Offered at once on B's notice (A listens again), not on A's once-a-second sweep.
    assert offered < 0.5, offered
    assert on_a.alive()
    print(
        f"cut=3s listen_back_after_restore={listen_back:.2f}s "
        f"queued_to_assigned_via_A={offered:.3f}s failed_calls_on_A_after={len(probe_failures)} "
        f"{counts}"
    )
