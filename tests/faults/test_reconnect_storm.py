"""1,000 agents connected; the control plane is killed -9 and restarted: every agent
reconnects (jittered backoff spreads them), and the control plane answers meanwhile."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import PY, ControlPlane, base_env

AGENTS = 1000
pytestmark = pytest.mark.timeout(240)


def latest(log: Path) -> dict[str, int]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"connected": 0, "welcomes": 0}


def wait_connected(log: Path, want: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if latest(log)["connected"] >= want:
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"only {latest(log)} of {want} agents connected")


def health(addr: str) -> int:
    with grpc.insecure_channel(addr) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(resp.status)


def test_reconnect_storm_of_1000_agents_is_absorbed(tmp_path: Path) -> None:
    control = ControlPlane(tmp_path, "--max-streams-per-token", str(AGENTS * 2))
    control.cluster("local", "stage")
    token = control.token("agent", "--cluster", "local", name="crowd")
    control.start()
    log = tmp_path / "storm.log"
    crowd = subprocess.Popen(
        [PY, "-m", "tests.faults.storm_agents", control.addr, token, "--agents", str(AGENTS)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=base_env(),
        start_new_session=True,
    )
    try:
        first = wait_connected(log, AGENTS, 120)
        control.kill(signal.SIGKILL)
        time.sleep(1)
        welcomes_before = latest(log)["welcomes"]
        control.start()
        # Serving while it absorbs the storm: asked before the agents are all back.
        during = health(control.addr)
        reconnected_when_asked = latest(log)["connected"]
        again = wait_connected(log, AGENTS, 120)
        assert during == health_pb2.HealthCheckResponse.SERVING
        assert reconnected_when_asked < AGENTS, "the storm was over before the check"
        assert health(control.addr) == health_pb2.HealthCheckResponse.SERVING
        assert latest(log)["welcomes"] >= welcomes_before + AGENTS
        print(f"agents={AGENTS} first_connect={first:.1f}s reconnect_after_kill={again:.1f}s")
    finally:
        crowd.kill()
        crowd.wait(10)
        control.kill()
