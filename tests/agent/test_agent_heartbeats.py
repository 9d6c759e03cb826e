"""The agent's heartbeat policy (docs/agent-protocol.md, step 6), against a scripted control
plane served by a real grpc.aio server on 127.0.0.1: an agent holding no lease heartbeats
every IDLE_HEARTBEAT_FACTOR Welcome intervals, one holding a lease every interval; and a
heartbeat left unanswered makes the agent reconnect, while the silence between two idle
heartbeats does not."""

from __future__ import annotations

import asyncio
import itertools
import statistics

import pytest
from agent_fakes import FakeStream, ScriptedExecutor, assignment, connect, held, running_agent

from sami.v1 import agent_pb2
from sami_agent import connection
from sami_common.dial import IDLE_HEARTBEAT_FACTOR

pytestmark = pytest.mark.timeout(60)

INTERVAL = 0.2  # the Welcome's heartbeat interval in these tests
IDLE = IDLE_HEARTBEAT_FACTOR * INTERVAL


async def heartbeats(
    stream: FakeStream, count: int, *, ack: bool = True
) -> list[tuple[float, agent_pb2.Heartbeat]]:
    """The agent's next `count` heartbeats, with the loop time each arrived at (each
    answered with a HeartbeatAck when `ack`); other messages are skipped."""
    loop = asyncio.get_running_loop()
    got: list[tuple[float, agent_pb2.Heartbeat]] = []
    while len(got) < count:
        message = await asyncio.wait_for(stream.recv(heartbeats=True), IDLE * 4)
        if message.WhichOneof("msg") != "heartbeat":
            continue
        got.append((loop.time(), message.heartbeat))
        if ack:
            stream.send(heartbeat_ack=agent_pb2.HeartbeatAck())
    return got


def gaps(beats: list[tuple[float, agent_pb2.Heartbeat]]) -> list[float]:
    return [b[0] - a[0] for a, b in itertools.pairwise(beats)]


def test_idle_agent_heartbeats_every_idle_period_and_with_a_lease_every_interval() -> None:
    assert IDLE_HEARTBEAT_FACTOR == 12  # docs/agent-protocol.md says so

    async def scenario() -> None:
        executor = ScriptedExecutor()
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control, heartbeat=INTERVAL)
            loop = asyncio.get_running_loop()
            welcomed = loop.time()
            idle = await heartbeats(stream, 3)
            assert all(list(beat.leases) == [] for _, beat in idle)
            # Timers never fire early: each idle heartbeat is an idle period after the last
            # (the margin is for the delivery of each one, which may vary).
            assert idle[0][0] - welcomed > IDLE - INTERVAL
            assert min(gaps(idle)) > IDLE - INTERVAL

            # A lease arrives: from the next period on, it is renewed every interval.
            a = assignment(lease_ttl=30.0)
            stream.send(assignment=a)
            await stream.recv_kind("ack")
            active = [b for b in await heartbeats(stream, 8) if list(b[1].leases) == [held(a)]]
            assert len(active) >= 6
            assert statistics.median(gaps(active)) < IDLE / 2

            # Done: the agent holds nothing again and goes back to the idle period.
            executor.gate.set()
            while (await stream.recv()).WhichOneof("msg") != "result":
                pass  # the job's last progress
            stream.send(done=agent_pb2.Done(deployment_id="d1", lease_id="l1"))
            while list((await heartbeats(stream, 1))[0][1].leases):
                pass  # heartbeats queued before Done landed
            idle = await heartbeats(stream, 2)
            assert all(list(beat.leases) == [] for _, beat in idle)
            assert min(gaps(idle)) > IDLE - INTERVAL

    asyncio.run(scenario())


def test_silence_between_idle_heartbeats_is_not_a_dead_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With the floor out of the way, an idle period (12 intervals) is longer than the four
    # intervals a heartbeat may wait for its answer: only an unanswered heartbeat counts.
    monkeypatch.setattr(connection, "SILENCE_FLOOR", 0.05)

    async def scenario() -> None:
        async with running_agent(ScriptedExecutor()) as (control, _, _):
            stream, _ = await connect(control, heartbeat=INTERVAL)
            await heartbeats(stream, 3)
            assert control.streams.empty()
            assert not stream.ended.is_set()

    asyncio.run(scenario())


def test_idle_agent_reconnects_when_a_heartbeat_goes_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "SILENCE_FLOOR", 0.05)

    async def scenario() -> None:
        async with running_agent(ScriptedExecutor()) as (control, _, _):
            stream, _ = await connect(control, heartbeat=INTERVAL)
            await heartbeats(stream, 1)  # answered: this control plane acks heartbeats
            loop = asyncio.get_running_loop()
            ((sent, _),) = await heartbeats(stream, 1, ack=False)  # then it stops answering
            second = await asyncio.wait_for(control.streams.get(), IDLE * 4)
            # Given up four intervals after the unanswered heartbeat (not sooner), then the
            # agent dialled again.
            assert loop.time() - sent > 4 * INTERVAL - 0.1
            assert (await second.recv_kind("hello")).hello.agent_id == "agent-1"
            await asyncio.wait_for(stream.ended.wait(), IDLE)

    asyncio.run(scenario())
