"""Two real `sami-control serve` processes on one real PostgreSQL (a private cluster), the
CLI and dry-run agents as real processes over real sockets: what one replica is asked, the
other acts on at once — work reaches an agent connected to the other replica, a watcher on
one sees the events the other stores, a cancel reaches the agent through the replica its
stream is on, and a token revoked on one loses its streams on the other."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from sami.v1 import deployment_pb2, deployment_pb2_grpc
from tests import samples
from tests.e2e.conftest import FAST, REF, sync
from tests.harness import ControlPlane, Proc, agent, sami, sami_popen, wait_for
from tests.pg import PgDatabase

pytestmark = pytest.mark.timeout(180)


@dataclass
class Replicas:
    a: ControlPlane
    b: ControlPlane
    admin: str
    agent_token: str
    tmp: Path

    def agent_on(self, control: ControlPlane, agent_id: str, *extra: str) -> Proc:
        return agent(
            control,
            self.agent_token,
            agent_id,
            self.tmp,
            "--dry-run",
            "--ledger",
            str(self.tmp / "ledger.jsonl"),
            *extra,
        )

    def applies(self) -> list[str]:
        path = self.tmp / "ledger.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["deployment_id"] for line in path.read_text().splitlines()]


@pytest.fixture
def replicas(
    tmp_path: Path, pg_database: PgDatabase, request: pytest.FixtureRequest
) -> Iterator[Replicas]:
    # Tokens re-read every 60 s: a revocation that reaches the other replica sooner came
    # with its notice, not with the re-read (the safety net). Likewise the watchers' sweep
    # where a test says so (`peer_sweep(seconds)`).
    flags: tuple[str, ...] = (*FAST, "--token-recheck-interval", "60")
    sweep = request.node.get_closest_marker("peer_sweep")
    if sweep is not None:
        flags += ("--peer-sweep-interval", str(sweep.args[0]))
    a = ControlPlane(tmp_path, *flags, store=pg_database.url, name="replica-a")
    b = ControlPlane(tmp_path, *flags, store=pg_database.url, name="replica-b")
    a.cluster("local", "stage", "production", "pull_request")
    admin = a.token("admin", name="ci")
    agent_token = a.token("agent", "--cluster", "local", name="agent")
    a.start()
    b.start()
    try:
        sync(a, admin)
        r = sami(a, admin, "artifact", "register", "web", "--ref", REF)
        assert r.rc == 0, r.err
        yield Replicas(a, b, admin, agent_token, tmp_path)
    finally:
        for c in (a, b):
            if c.proc is not None and c.proc.alive():
                c.kill()


def _deploy(control: ControlPlane, token: str, *extra: str) -> str:
    r = sami(control, token, "deploy", "web", "--env", "stage", "--artifact", REF, *extra)
    assert r.rc == 0, r.err
    return r.last


def _events(out: str) -> list[dict[str, object]]:
    return [json.loads(line)["event"] for line in out.splitlines() if line.startswith('{"event"')]


def _seconds(rfc3339: object) -> float:
    return datetime.fromisoformat(str(rfc3339).replace("Z", "+00:00")).timestamp()


def _state(control: ControlPlane, token: str, dep: str) -> str:
    r = sami(control, token, "get", dep, "--output", "json")
    assert r.rc == 0, r.err
    return str(json.loads(r.out)["state"])


def test_work_created_on_one_replica_runs_on_an_agent_of_the_other(replicas: Replicas) -> None:
    agent_b = replicas.agent_on(replicas.b, "agent-b")
    try:
        wait_for(lambda: "agent-b" in sami(replicas.a, replicas.admin, "agents").out, what="agent")
        started = time.monotonic()
        # Created on A and waited for on A: the agent's reports are stored by B.
        r = sami(
            replicas.a,
            replicas.admin,
            "deploy",
            "web",
            "--env",
            "stage",
            "--artifact",
            REF,
            "--wait",
            "--timeout",
            "60",
            "--output",
            "json",
        )
        took = time.monotonic() - started
        assert r.rc == 0, r.out + r.err
        events = _events(r.out)
        assert [int(str(e["sequence"])) for e in events] == list(range(1, len(events) + 1))
        states = [e["state"] for e in events if e["type"] == "STATE_CHANGED"]
        assert states == ["QUEUED", "ASSIGNED", "IN_PROGRESS", "SUCCEEDED"]
        dep = str(events[0]["deployment_id"])
        # Offered to B's agent at once (the notice), not on B's once-a-second sweep.
        times = {e["state"]: _seconds(e["time"]) for e in events if e["type"] == "STATE_CHANGED"}
        assert times["ASSIGNED"] - times["QUEUED"] < 0.5, times
        assert _state(replicas.b, replicas.admin, dep) == "SUCCEEDED"
        assert replicas.applies() == [dep]
        # At once, not on the sweep: a few dry-run steps, far under a 3 s lease.
        assert took < 20, took
    finally:
        agent_b.kill()


@pytest.mark.peer_sweep(30)
def test_a_watcher_on_one_replica_sees_every_event_stored_by_the_other(
    replicas: Replicas,
) -> None:
    agent_a = replicas.agent_on(replicas.a, "agent-a", "--dry-run-step-seconds", "0.2")
    try:
        wait_for(lambda: "agent-a" in sami(replicas.b, replicas.admin, "agents").out, what="agent")
        dep = _deploy(replicas.a, replicas.admin)
        # Watched on B, from the start: every event, in order, once, up to the end, each
        # as soon as A stored it (the notice), not on B's once-a-second sweep.
        seqs: list[int] = []
        lags: list[float] = []
        with grpc.insecure_channel(replicas.b.addr) as ch:
            stream = deployment_pb2_grpc.DeploymentServiceStub(ch).WatchDeployment(
                deployment_pb2.WatchDeploymentRequest(name=dep),
                metadata=(("authorization", f"Bearer {replicas.admin}"),),
                timeout=60,
            )
            for item in stream:
                if item.WhichOneof("item") != "event":
                    continue
                seqs.append(item.event.sequence)
                lags.append(time.time() - item.event.time.ToDatetime(UTC).timestamp())
        assert seqs == list(range(1, len(seqs) + 1)), seqs
        assert len(seqs) >= 4  # queued, assigned, in progress, progress, succeeded
        # The first ones were stored before the watch began; the live ones came with their
        # notice: B's sweep of its watchers runs only every 30 s here.
        live = lags[3:]
        assert live and max(live) < 5.0, lags
        assert _state(replicas.b, replicas.admin, dep) == "SUCCEEDED"
    finally:
        agent_a.kill()


def test_a_cancel_on_one_replica_reaches_the_agent_on_the_other(replicas: Replicas) -> None:
    agent_b = replicas.agent_on(replicas.b, "agent-b", "--dry-run-step-seconds", "2")
    try:
        wait_for(lambda: "agent-b" in sami(replicas.a, replicas.admin, "agents").out, what="agent")
        dep = _deploy(replicas.a, replicas.admin)
        wait_for(
            lambda: _state(replicas.a, replicas.admin, dep) == "IN_PROGRESS",
            timeout=20,
            what="in progress",
        )
        r = sami(replicas.a, replicas.admin, "cancel", dep, "--reason", "wrong build")
        assert r.rc == 0, r.err
        # The agent learns of it through B and stops: the deployment ends CANCELLED well
        # before the dry run's steps (2 s each) would have finished it.
        wait_for(
            lambda: _state(replicas.b, replicas.admin, dep) == "CANCELLED",
            timeout=10,
            what="cancelled",
        )
    finally:
        agent_b.kill()


def test_a_token_revoked_on_one_replica_loses_its_streams_on_the_other(
    replicas: Replicas,
) -> None:
    watcher_token = replicas.a.token("reader", name="dashboard")
    agent_b = replicas.agent_on(replicas.b, "agent-b", "--dry-run-step-seconds", "30")
    try:
        wait_for(lambda: "agent-b" in sami(replicas.a, replicas.admin, "agents").out, what="agent")
        dep = _deploy(replicas.a, replicas.admin)
        watch = sami_popen(replicas.b, watcher_token, "watch", dep)
        try:
            # The watch is streaming on B (its first lines are out) before the revoke.
            assert watch.stdout is not None and watch.stdout.readline()
            r = sami(replicas.a, replicas.admin, "token", "revoke", _token_id(watcher_token))
            assert r.rc == 0, r.err
            # From the revoke's answer (not its CLI's start-up, which a loaded machine
            # stretches): the revocation is committed, the notice on its way.
            started = time.monotonic()
            rc = watch.wait(timeout=10)
            ended = time.monotonic() - started
            assert rc != 0
            assert "revoked" in (watch.stderr.read() if watch.stderr else "")
            # The notice ends it at once (within 2 s), not the token recheck (60 s here).
            assert ended < 2.0, ended
        finally:
            if watch.poll() is None:
                watch.kill()
    finally:
        agent_b.kill()


def _token_id(token: str) -> str:
    from sami_control.core.token_secrets import parse

    return parse(token)[0]


def test_an_approval_on_one_replica_runs_on_an_agent_of_the_other(replicas: Replicas) -> None:
    """Issue 21 item 2: approving on A is new work for B's agent, told at once (the notice)."""
    files = samples.repo()
    files["services/web/swarm/stage/sami.yaml"] += b"approval: required\n"
    sync(replicas.a, replicas.admin, files)
    reviewer = replicas.a.token("deployer", name="reviewer")
    agent_b = replicas.agent_on(replicas.b, "agent-b")
    try:
        wait_for(lambda: "agent-b" in sami(replicas.a, replicas.admin, "agents").out, what="agent")
        dep = _deploy(replicas.a, replicas.admin)
        time.sleep(1.5)  # B's dispatch runs at least once a second: it must leave it alone
        assert _state(replicas.b, replicas.admin, dep) == "AWAITING_APPROVAL"
        r = sami(replicas.a, reviewer, "approve", dep)
        assert r.rc == 0, r.err
        r = sami(replicas.b, replicas.admin, "watch", dep, "--timeout", "60", "--output", "json")
        assert r.rc == 0, r.out + r.err
        events = [e for e in _events(r.out) if e["type"] == "STATE_CHANGED"]
        states = [e["state"] for e in events]
        assert states == ["AWAITING_APPROVAL", "QUEUED", "ASSIGNED", "IN_PROGRESS", "SUCCEEDED"]
        times = {e["state"]: _seconds(e["time"]) for e in events}
        assert times["ASSIGNED"] - times["QUEUED"] < 0.5, times
        assert replicas.applies() == [dep]
    finally:
        agent_b.kill()


def test_logs_and_plans_reach_the_replica_the_agent_is_on(replicas: Replicas) -> None:
    """An agent query (logs, a plan) can only be answered by the replica that holds the
    agent's stream. Given both addresses, the CLI asks the other replica first, which says
    UNAVAILABLE, and moves on to the one that holds it: the answer is the agent's own (a
    dry-run agent says it cannot read a swarm), not "no agent connected"."""
    agent_b = replicas.agent_on(replicas.b, "agent-b")
    both = {"SAMI_ADDR": f"{replicas.a.addr},{replicas.b.addr}"}
    try:
        wait_for(lambda: "agent-b" in sami(replicas.a, replicas.admin, "agents").out, what="agent")
        alone = sami(replicas.a, replicas.admin, "logs", "web", "--env", "stage", "--tail", "5")
        assert alone.rc != 0 and "connected to this control-plane replica" in alone.err, alone
        for args in (
            ("logs", "web", "--env", "stage", "--tail", "5"),
            ("deploy", "web", "--env", "stage", "--artifact", REF, "--plan"),
        ):
            r = sami(replicas.a, replicas.admin, *args, env=both)
            assert r.rc != 0, r
            assert "cannot read a swarm" in r.err, (args, r.err)
            assert "connected to this control-plane replica" not in r.err, (args, r.err)
    finally:
        agent_b.kill()
