"""Cut and slow the network between an agent and the control plane with a TCP proxy on
loopback: the agent reconnects with backoff, its leases resume, nothing is lost or applied
twice."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import FAST, REF, Stack, sync
from tests.faults.proxy import Proxy
from tests.harness import ControlPlane, agent, sami, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def stack_behind_proxy(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    # A test may ask for a longer lease (marker `lease_ttl`) to stay within it, and for
    # faster gRPC keepalives on the agent (marker `keepalive`, SAMI_KEEPALIVE_SECONDS).
    marker = request.node.get_closest_marker("lease_ttl")
    flags = [*FAST]
    if marker is not None:
        flags[flags.index("--lease-ttl") + 1] = str(marker.args[0])
    keepalive = request.node.get_closest_marker("keepalive")
    agent_env = {"SAMI_KEEPALIVE_SECONDS": str(keepalive.args[0])} if keepalive else None
    control = ControlPlane(tmp_path, *flags)
    control.cluster("local", "stage", "production", "pull_request")
    admin = control.token("admin", name="ci")
    agent_token = control.token("agent", "--cluster", "local", name="agent")
    control.start()
    proxy = Proxy(control.port).start()
    s = Stack(tmp_path, control, admin, agent_token)
    try:
        sync(control, admin)
        r = sami(control, admin, "artifact", "register", "web", "--ref", REF)
        assert r.rc == 0, r.err
        s.artifact = r.last
        # The agent reaches the control plane only through the proxy.
        behind = ControlPlane(tmp_path)
        behind.addr = proxy.addr
        s.agents.append(
            agent(
                behind,
                agent_token,
                "a1",
                tmp_path,
                "--dry-run",
                "--dry-run-step-seconds",
                "0.4",
                "--ledger",
                str(s.ledger),
                env=agent_env,
            )
        )
        yield s, proxy
    finally:
        for p in s.agents:
            p.kill()
        proxy.stop()
        control.kill()


def applies(s: Stack) -> collections.Counter[str]:
    return collections.Counter(
        json.loads(line)["deployment_id"] for line in s.ledger.read_text().splitlines() if line
    )


def test_connection_cuts_mid_deployment(stack_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    s, proxy = stack_behind_proxy
    deps = [
        s.sami("deploy", svc, "--env", env, "--artifact", s.artifact).last
        for svc, env in (("web", "stage"), ("api", "stage"), ("web", "production"))
    ]
    wait_for(lambda: s.ledger.exists() and len(applies(s)) >= 1, what="a first apply")
    for _ in range(3):
        proxy.cut()
        time.sleep(0.7)
    for dep in deps:
        w = s.sami("watch", dep, "--timeout", "60")
        assert w.rc == 0, w.out + w.err
    assert sorted(applies(s).values()) == [1, 1, 1], applies(s)
    log = s.agents[0].log()
    assert log.count("control_plane_connected") >= 2


def test_slow_network_still_delivers(stack_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    s, proxy = stack_behind_proxy
    proxy.delay = 0.15
    dep = s.sami("deploy", "web", "--env", "stage", "--artifact", s.artifact).last
    w = s.sami("watch", dep, "--timeout", "60")
    assert w.rc == 0, w.out + w.err
    assert list(applies(s).values()) == [1]


@pytest.mark.lease_ttl(15)
def test_blackholed_link_is_noticed_by_silence(stack_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    # Shorter than the lease: the agent must notice on its own, reconnect, and keep its
    # lease (resumed, not redelivered), so the work is applied once.
    s, proxy = stack_behind_proxy
    wait_for(lambda: "control_plane_connected" in s.agents[0].log(), what="a1 up")
    dep = s.sami("deploy", "web", "--env", "stage", "--artifact", s.artifact).last
    wait_for(lambda: s.ledger.exists(), what="a1 applying")
    before = s.agents[0].log().count("control_plane_connected")
    proxy.blackholed = True  # no error, no data: only the silence tells
    wait_for(
        lambda: "no answer from the control plane" in s.agents[0].log(),
        timeout=12,
        interval=0.2,
        what="the agent to notice the dead link",
    )
    proxy.blackholed = False
    w = s.sami("watch", dep, "--timeout", "60")
    assert w.rc == 0, w.out + w.err
    assert s.agents[0].log().count("control_plane_connected") > before
    assert list(applies(s).values()) == [1]


@pytest.mark.keepalive(1)
def test_blackholed_link_of_an_idle_agent_is_noticed_by_keepalive(stack_behind_proxy) -> None:  # type: ignore[no-untyped-def]
    # An agent holding no lease heartbeats only every 12 heartbeat intervals
    # (docs/agent-protocol.md); meanwhile gRPC keepalive pings, unanswered on a dead link,
    # end the connection before any heartbeat could go unanswered.
    s, proxy = stack_behind_proxy
    wait_for(lambda: "control_plane_connected" in s.agents[0].log(), what="a1 up")
    before = s.agents[0].log().count("control_plane_connected")
    proxy.blackholed = True
    wait_for(
        lambda: "control_plane_unreachable" in s.agents[0].log(),
        timeout=12,
        interval=0.2,
        what="the agent to notice the dead link",
    )
    assert "no answer from the control plane" not in s.agents[0].log()
    proxy.blackholed = False
    wait_for(
        lambda: s.agents[0].log().count("control_plane_connected") > before,
        timeout=30,
        what="a1 to reconnect",
    )
    dep = s.sami("deploy", "web", "--env", "stage", "--artifact", s.artifact).last
    w = s.sami("watch", dep, "--timeout", "60")
    assert w.rc == 0, w.out + w.err
