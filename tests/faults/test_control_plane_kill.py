"""Kill -9 the control plane at random moments under load (agents connected, deployments
queued and in flight, watchers streaming), restart it, and check what users rely on:
every acknowledged CreateDeployment reaches exactly one terminal state, no deployment is
applied twice (the dry-run executors' ledger), every watch resumes without gap or duplicate.

SAMI_FAULT_CYCLES sets the number of kills (20 here; `make soak` runs 100)."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from sami.v1 import deployment_pb2, deployment_pb2_grpc
from tests.e2e.conftest import FAST, Stack, sync
from tests.faults.checkers import TERMINAL, Load, RawWatcher, md
from tests.harness import ControlPlane, sami, wait_for

CYCLES = int(os.environ.get("SAMI_FAULT_CYCLES", "20"))
SERVICES = ["web", "api"]

pytestmark = pytest.mark.timeout(300 + 10 * CYCLES)


def test_kill9_under_load_loses_nothing_and_applies_once(tmp_path: Path) -> None:
    # The default restart grace (30 s): longer than an agent's largest reconnect backoff
    # (10 s), so agents that reconnect keep their leases however often the control plane
    # restarts; with a shorter grace a lease may expire and the work go to another agent.
    flags = [*FAST]
    flags[flags.index("--restart-grace") + 1] = "30"
    control = ControlPlane(tmp_path, *flags)
    control.cluster("local", "stage", "production", "pull_request")
    admin = control.token("admin", name="ci")
    agent_token = control.token("agent", "--cluster", "local", name="agent")
    control.start()
    s = Stack(tmp_path, control, admin, agent_token)
    try:
        sync(control, admin)
        r = sami(
            control,
            admin,
            "artifact",
            "register",
            "web",
            "--ref",
            "127.0.0.1:5000/web@sha256:" + "a" * 64,
        )
        assert r.rc == 0, r.err
        for i in (1, 2):
            s.agent(f"a{i}", "--dry-run-step-seconds", "0.1")
        load = Load(control.addr, admin, r.last, SERVICES, interval=0.08)
        loader = threading.Thread(target=load.run, daemon=True)
        loader.start()
        watchers: list[RawWatcher] = []
        threads: list[threading.Thread] = []
        rng = random.Random(7)
        deadline = time.monotonic() + 120 + 6 * CYCLES
        for _ in range(CYCLES):
            time.sleep(rng.uniform(0.3, 1.0))
            # Watch a few of the newest deployments through the next crash.
            for dep_id in list(load.acked.values())[-2:]:
                w = RawWatcher(control.addr, admin, dep_id)
                t = threading.Thread(target=w.run, args=(deadline,), daemon=True)
                t.start()
                watchers.append(w)
                threads.append(t)
            control.kill(signal.SIGKILL)
            time.sleep(rng.uniform(0.0, 0.5))
            control.start()
        load.stop.set()
        loader.join(30)
        assert not load.errors, load.errors[:5]
        acked = set(load.acked.values())
        assert len(acked) >= CYCLES

        def all_terminal() -> bool:
            with grpc.insecure_channel(control.addr) as ch:
                stub = deployment_pb2_grpc.DeploymentServiceStub(ch)
                for dep_id in acked:
                    d = stub.GetDeployment(
                        deployment_pb2.GetDeploymentRequest(name=dep_id),
                        metadata=md(admin),
                        timeout=5,
                    )
                    if d.state not in TERMINAL:
                        return False
            return True

        wait_for(all_terminal, timeout=120, interval=0.5, what="every deployment to end")
        # Exactly one terminal event per deployment, and it is the last one.
        redeliveries: list[float] = []
        with grpc.insecure_channel(control.addr) as ch:
            stub = deployment_pb2_grpc.DeploymentServiceStub(ch)
            for dep_id in acked:
                events = [
                    i.event
                    for i in stub.WatchDeployment(
                        deployment_pb2.WatchDeploymentRequest(name=dep_id),
                        metadata=md(admin),
                        timeout=10,
                    )
                    if i.WhichOneof("item") == "event"
                ]
                seqs = [e.sequence for e in events]
                assert seqs == list(range(1, len(seqs) + 1)), (dep_id, seqs)
                terminal = [
                    e
                    for e in events
                    if e.type == deployment_pb2.STATE_CHANGED and e.state in TERMINAL
                ]
                assert len(terminal) == 1 and terminal[0] is events[-1], dep_id
                # Redelivery delay: from a lost lease back to QUEUED until the next ASSIGNED.
                lost_at = None
                for e in events:
                    if e.state == deployment_pb2.QUEUED and "lost" in e.message:
                        lost_at = e.time.ToNanoseconds() / 1e9
                    elif e.state == deployment_pb2.ASSIGNED and lost_at is not None:
                        redeliveries.append(e.time.ToNanoseconds() / 1e9 - lost_at)
                        lost_at = None
        applies = collections.Counter(
            json.loads(line)["deployment_id"] for line in s.ledger.read_text().splitlines() if line
        )
        twice = {d: n for d, n in applies.items() if n > 1}
        assert not twice, f"applied more than once: {twice}"
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        for w in watchers:
            assert w.ended, (w.deployment_id, w.sequences, w.violations)
            assert not w.violations, (w.deployment_id, w.violations)
        reconnected = sum(w.reconnects for w in watchers)
        print(
            f"cycles={CYCLES} deployments={len(acked)} watchers={len(watchers)} "
            f"watch_reconnects={reconnected} applies={sum(applies.values())} "
            f"redeliveries={len(redeliveries)} "
            f"max_redelivery_delay={max(redeliveries, default=0.0):.2f}s"
        )
    finally:
        for p in s.agents:
            p.kill()
        if control.proc is not None:
            control.kill()
