"""Two real sami-control processes named together (`SAMI_ADDR=first,second`), the first
killed with SIGKILL: the CLI still answers, a deploy with a request id lands on the second,
a watch moves over without gaps or repeats, and an agent reconnects to the second within
5 s.

Replicas of one control plane share one database (PostgreSQL). Here each has its own SQLite
folder, copied from the first while it was stopped, so both start with the same tokens,
cluster, manifests, artifact and one queued deployment: for what these tests do, the second
knows what the first knew.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import FAST, REF, sync
from tests.harness import PY, ControlPlane, Proc, Result, base_env, sami, wait_for

pytestmark = pytest.mark.timeout(180)


@dataclass
class Replicas:
    tmp: Path
    first: ControlPlane
    second: ControlPlane
    admin: str
    agent_token: str
    queued: str  # A deployment QUEUED on both (no agent ran it).

    @property
    def both(self) -> str:
        return f"{self.first.addr},{self.second.addr}"

    def sami(self, *args: str, addr: str = "", timeout: float = 60) -> Result:
        return sami(
            self.first, self.admin, *args, timeout=timeout, env={"SAMI_ADDR": addr or self.both}
        )

    def connected_agents(self, control: ControlPlane) -> set[str]:
        r = self.sami("agents", "--output", "json", addr=control.addr)
        assert r.rc == 0, r.err
        return {a["agent_id"] for a in json.loads(r.out) if a["connected"]}


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = ControlPlane(tmp_path / "first", *FAST)
    first.cluster("local", "stage", "production", "pull_request")
    admin = first.token("admin", name="ci")
    agent_token = first.token("agent", "--cluster", "local", name="agent")
    first.start()
    second = ControlPlane(tmp_path / "second", *FAST)
    try:
        sync(first, admin)
        r = sami(first, admin, "artifact", "register", "web", "--ref", REF)
        assert r.rc == 0, r.err
        r = sami(first, admin, "deploy", "web", "--env", "stage", "--artifact", REF)
        assert r.rc == 0, r.err
        queued = r.last
        assert first.kill(signal.SIGTERM) == 0  # Stopped cleanly: its database is complete.
        shutil.copytree(first.data, second.data, ignore=shutil.ignore_patterns("sami.lock"))
        first.start()
        second.start()
        yield Replicas(tmp_path, first, second, admin, agent_token, queued)
    finally:
        for control in (first, second):
            if control.proc is not None:
                control.kill()


def test_reads_answer_after_the_first_replica_is_killed(replicas: Replicas) -> None:
    replicas.first.kill()
    for args in (("cluster", "list"), ("token", "list"), ("get", replicas.queued)):
        r = replicas.sami(*args)
        assert r.rc == 0, (args, r.err)
    assert replicas.queued in replicas.sami("list").out
    replicas.second.kill()
    r = replicas.sami("list")
    assert r.rc == 3
    assert f"is sami-control running at {replicas.first.addr} or {replicas.second.addr}?" in r.err


def test_a_deploy_with_a_request_id_lands_on_the_second(replicas: Replicas) -> None:
    replicas.first.kill()
    deploy = ("deploy", "web", "--env", "production", "--artifact", REF, "--request-id", "ci-9")
    r = replicas.sami(*deploy)
    assert r.rc == 0, r.err
    again = replicas.sami(*deploy)  # A CI retry: the same deployment, not a second one.
    assert (again.rc, again.last) == (0, r.last)
    got = replicas.sami("get", r.last, "--output", "json", addr=replicas.second.addr)
    assert got.rc == 0, got.err
    assert json.loads(got.out)["request_id"] == "ci-9"


def test_a_watch_moves_to_the_second_without_gaps_or_repeats(replicas: Replicas) -> None:
    env = base_env(SAMI_ADDR=replicas.both, SAMI_TOKEN=replicas.admin)
    watch = subprocess.Popen(
        [PY, "-m", "sami_client", "watch", replicas.queued, "--timeout", "90"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in watch.stdout], daemon=True)
    reader.start()
    agent: Proc | None = None
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while not any("  #1  QUEUED" in line for line in seen):
            seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
        replicas.first.kill()  # SIGKILL under the open watch.
        # The deployment goes on where the watch must now look: the second replica.
        agent = _agent(replicas, "a1", replicas.second.addr)
        assert watch.wait(timeout=90) == 0, watch.stderr.read() if watch.stderr else ""
    finally:
        if agent is not None:
            agent.kill()
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    reader.join(timeout=5)
    while not lines.empty():
        seen.append(lines.get())
    err = watch.stderr.read() if watch.stderr else ""
    sequences = [int(line.split("#")[1].split()[0]) for line in seen if "  #" in line]
    assert sequences == list(range(1, len(sequences) + 1)), seen
    assert len(sequences) >= 4
    assert seen[-1].startswith(f"SUCCEEDED: deployment {replicas.queued}")
    assert f"no connection to sami-control at {replicas.first.addr}" in err
    assert f"resuming the watch of deployment {replicas.queued} at {replicas.second.addr}" in err


def test_an_agent_reconnects_to_the_other_replica_within_5_seconds(replicas: Replicas) -> None:
    agent = _agent(replicas, "a1", replicas.both)
    try:
        controls = (replicas.first, replicas.second)
        on: list[ControlPlane] = []

        def connected_somewhere() -> bool:
            on[:] = [c for c in controls if "a1" in replicas.connected_agents(c)]
            return bool(on)

        wait_for(connected_somewhere, timeout=20, what="the agent connected")
        [was_on] = on
        other = replicas.second if was_on is replicas.first else replicas.first
        was_on.kill()
        killed = time.monotonic()
        # Its log says when it is connected (a `sami agents` process takes too long to start
        # to time this); the other replica's agent list then confirms it.
        wait_for(lambda: _connected_to(agent, other), timeout=5, interval=0.05)
        took = time.monotonic() - killed
        assert "a1" in replicas.connected_agents(other)
        assert f'"next_control": "{other.addr}"' in agent.log()
    finally:
        agent.kill()
    assert took < 5


def _connected_to(agent: Proc, control: ControlPlane) -> bool:
    for line in agent.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # Not a log line, or one still being written.
        if not isinstance(entry, dict):
            continue
        if (entry.get("event"), entry.get("control")) == ("control_plane_connected", control.addr):
            return True
    return False


def _agent(replicas: Replicas, agent_id: str, control: str) -> Proc:
    return Proc(
        [
            *(PY, "-m", "sami_agent", "--control", control, "--agent-id", agent_id),
            *("--dry-run", "--dry-run-step-seconds", "0.05"),
        ],
        replicas.tmp / f"agent-{agent_id}.log",
        env=base_env(SAMI_TOKEN=replicas.agent_token),
    ).start()
