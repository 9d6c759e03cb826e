"""`sami deploy --wait` while nothing picks the deployment up: it says so within seconds
(no agent of the cluster connected, and when one last was), again at intervals, and
`--queue-timeout` ends the wait with exit 3."""

from __future__ import annotations

import time

import pytest
from google.protobuf import timestamp_pb2

from sami.v1 import cluster_pb2
from sami_client.follow import Follower

from .fake_control import REF, FakeControl

DEPLOY = ("deploy", "web", "--env", "stage", "--artifact", REF, "--wait")


@pytest.fixture(autouse=True)
def _quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI checks after 5s, then every minute; a test cannot wait that long.
    monkeypatch.setattr(Follower, "queue_first_check", 0.2)
    monkeypatch.setattr(Follower, "queue_check_every", 0.4)


def seconds_ago(seconds: float) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=int(time.time() - seconds))


def gone(agent_id: str, last_seen: float) -> cluster_pb2.Agent:
    return cluster_pb2.Agent(
        agent_id=agent_id,
        cluster="vps1",
        connected=False,
        connect_time=seconds_ago(last_seen + 3600),
        last_heartbeat_time=seconds_ago(last_seen),
    )


def test_no_agent_connected_is_said_at_once_and_again(sami, server, control: FakeControl) -> None:
    control.release_on_create = 1  # QUEUED, and nothing more
    control.agents = [gone("manager-1", 600), gone("manager-2", 7200)]
    result = sami(*DEPLOY, "--queue-timeout", "1.5")
    assert result.code == 3, result.err
    said = (
        "deployment d1 still QUEUED after 0s: no agent of cluster vps1 is connected (agent "
        "manager-1 was last seen 10m ago): start or check sami-agent (`sami agents --cluster "
        "vps1`)"
    )
    notes = [line for line in result.err.splitlines() if "still QUEUED after" in line]
    assert len(notes) >= 2, result.err
    assert notes[0] == said
    assert result.err.splitlines()[-1] == (
        "sami: DEADLINE_EXCEEDED: deployment d1 was still QUEUED after 1.5s (--queue-timeout): "
        "no agent of cluster vps1 is connected (agent manager-1 was last seen 10m ago): start "
        "or check sami-agent (`sami agents --cluster vps1`); it stays queued and runs when an "
        "agent picks it up, or cancel it with `sami cancel d1`"
    )
    # The watch was resumed at each check: the QUEUED event still shows once.
    assert result.event_sequences == [1]
    assert len(control.watch_calls) >= 3


def test_a_cluster_without_any_agent_says_how_to_start_one(
    sami, server, control: FakeControl
) -> None:
    control.release_on_create = 1
    control.agents = []
    result = sami(*DEPLOY, "--queue-timeout", "0.5")
    assert result.code == 3
    assert "no agent of cluster vps1 has ever connected: start sami-agent with a token" in (
        result.err
    )


def test_a_deployment_picked_up_later_is_followed_to_its_end(
    sami, server, control: FakeControl, background
) -> None:
    control.release_on_create = 1

    def agent_takes_it() -> None:
        control.wait_sent("d1", 1)
        time.sleep(1.0)
        control.release("d1")

    background(agent_takes_it)
    result = sami(*DEPLOY, "--queue-timeout", "30")
    assert result.code == 0, result.err
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]
    assert "agents of cluster vps1 are connected (manager-1) but none has taken it" in result.err


def test_queue_timeout_needs_wait(sami, server) -> None:
    result = sami("deploy", "web", "--env", "stage", "--artifact", REF, "--queue-timeout", "5")
    assert result.code == 2
    assert "--queue-timeout limits --wait" in result.err


def test_rollback_and_promote_take_queue_timeout_with_wait(sami, server) -> None:
    promote = ("promote", "web", "--from", "stage", "--to", "production")
    result = sami(*promote, "--queue-timeout", "5")
    assert result.code == 2 and "--queue-timeout limits --wait" in result.err
    rollback = sami("rollback", "web", "--env", "stage", "--queue-timeout", "5")
    assert rollback.code == 2 and "--queue-timeout limits --wait" in rollback.err


def test_a_queue_timeout_while_sami_control_is_gone_says_so(
    sami, server, control: FakeControl, background
) -> None:
    control.release_on_create = 1

    def control_plane_goes_away() -> None:
        control.wait_sent("d1", 1)
        server.stop()

    background(control_plane_goes_away)
    result = sami(*DEPLOY, "--queue-timeout", "1.5")
    assert result.code == 3
    assert "was still QUEUED after 1.5s (--queue-timeout): sami-control could not be reached" in (
        result.err
    )
