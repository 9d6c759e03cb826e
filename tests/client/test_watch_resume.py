"""A wait survives a dropped stream and a control-plane restart: every event is shown once,
in order, none missing."""

from __future__ import annotations

import time

import pytest

from sami.v1 import deployment_pb2
from sami_client.client import SamiClient
from sami_client.errors import WatchGapError, WatchTimeout
from sami_common.backoff import Backoff
from sami_common.dial import Endpoint

from .fake_control import ADMIN_TOKEN, REF, FakeControl, FakeServer, WatchFault

DEPLOY = ("deploy", "web", "--env", "stage", "--artifact", REF, "--wait")


def test_resumes_after_the_stream_is_dropped_and_after_it_ends_early(
    sami, server, control: FakeControl
) -> None:
    control.watch_faults = [WatchFault("abort", after=2), WatchFault("end", after=4)]
    result = sami(*DEPLOY)
    assert result.code == 0, result.err
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]
    assert control.watch_calls == [("d1", 0), ("d1", 2), ("d1", 4)]
    assert result.err.count("resuming the watch of deployment d1") == 2
    assert "UNAVAILABLE: fake: connection dropped" in result.err


def test_resumes_across_a_server_restart_on_the_same_port(
    sami, server: FakeServer, control: FakeControl, background
) -> None:
    control.release_on_create = 3

    def restart_midway() -> None:
        control.wait_sent("d1", 3)
        server.stop()  # Cuts the open watch, like a crash of sami-control.
        time.sleep(0.5)  # Down long enough for reconnect attempts to be refused.
        control.release("d1")  # Progress made meanwhile is in its database.
        server.start()

    background(restart_midway)
    result = sami(*DEPLOY)
    assert result.code == 0, result.err
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]
    assert control.watch_calls[0] == ("d1", 0)
    assert set(control.watch_calls[1:]) == {("d1", 3)}
    assert "resuming the watch of deployment d1" in result.err


def test_gives_up_with_3_when_the_server_stays_down(
    sami, server: FakeServer, control: FakeControl, background
) -> None:
    control.release_on_create = 2

    def crash() -> None:
        control.wait_sent("d1", 2)
        server.stop()

    background(crash)
    result = sami(*DEPLOY, "--timeout", "1.5")
    assert result.code == 3
    assert result.event_sequences == [1, 2]
    assert "timed out after 1.5s waiting for deployment d1 (sami-control unreachable" in result.err
    assert f"is sami-control running at {server.addr}?" in result.err
    assert "sami watch d1" in result.err


def test_repeated_events_are_not_shown_twice(sami, server, control: FakeControl) -> None:
    control.watch_faults = [WatchFault("end", after=3), WatchFault("repeat", after=0)]
    result = sami(*DEPLOY)
    assert result.code == 0, result.err
    assert result.event_sequences == [1, 2, 3, 4, 5, 6]


def test_a_gap_is_a_bug_and_is_reported(sami, server, control: FakeControl) -> None:
    control.watch_faults = [WatchFault("gap", after=2)]
    result = sami(*DEPLOY)
    assert result.code == 3
    assert result.event_sequences == [1, 2]
    assert "expected event #3, received #4" in result.err


def _client(server: FakeServer) -> SamiClient:
    return SamiClient(
        Endpoint(addr=server.addr, token=ADMIN_TOKEN),
        backoff=lambda: Backoff(base=0.05, cap=0.2),
    )


def test_client_watch_yields_snapshot_then_each_event_once(
    server: FakeServer, control: FakeControl
) -> None:
    deployment_id = control.add_deployment()
    control.watch_faults = [WatchFault("abort", after=1), WatchFault("end", after=5)]
    reconnects = []
    with _client(server) as client:
        items = list(client.watch(deployment_id, on_reconnect=lambda e, d: reconnects.append(e)))
    assert isinstance(items[0], deployment_pb2.Deployment)
    assert [e.sequence for e in items[1:]] == [1, 2, 3, 4, 5, 6]
    assert [e.code.name if e else None for e in reconnects] == ["UNAVAILABLE", None]


def test_client_watch_resumes_after_a_given_sequence(
    server: FakeServer, control: FakeControl
) -> None:
    deployment_id = control.add_deployment()
    with _client(server) as client:
        items = list(client.watch(deployment_id, after_sequence=4))
    assert [getattr(i, "sequence", None) for i in items] == [None, 5, 6]


def test_client_watch_of_a_finished_deployment_after_its_last_event_ends(
    server: FakeServer, control: FakeControl
) -> None:
    deployment_id = control.add_deployment()
    with _client(server) as client:
        items = list(client.watch(deployment_id, after_sequence=6))
    assert len(items) == 1 and items[0].state == deployment_pb2.SUCCEEDED


def test_client_watch_errors(server: FakeServer, control: FakeControl) -> None:
    deployment_id = control.add_deployment(release=2)
    with _client(server) as client:
        with pytest.raises(WatchTimeout) as timeout:
            list(client.watch(deployment_id, timeout=0.3))
        assert timeout.value.exit_code == 3 and timeout.value.last_sequence == 2
        control.watch_faults = [WatchFault("gap", after=0)]
        control.release(deployment_id)
        with pytest.raises(WatchGapError):
            list(client.watch(deployment_id))
