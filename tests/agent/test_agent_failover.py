"""An agent given several control-plane replicas (`--control a:7443,b:7443`): agents spread
over them, and one whose replica dies moves to another at once, taking its running job's
lease and unsent progress along. Scripted replicas on real grpc.aio servers on 127.0.0.1;
tests/e2e/test_failover_processes.py does it with real processes."""

from __future__ import annotations

import asyncio
import random

import grpc.aio
import pytest
from agent_fakes import (
    TOKEN,
    WAIT,
    FakeControl,
    FakeStream,
    ScriptedExecutor,
    assignment,
    held,
    start_server,
)

from sami.v1 import agent_pb2
from sami_agent.connection import Agent
from sami_agent.executors import DryRunExecutor
from sami_common.addresses import AddressRing
from sami_common.dial import Endpoint

pytestmark = pytest.mark.timeout(30)


def replica_agent(ports: list[int], executor: object, **kwargs: object) -> Agent:
    # The default backoff: what a real agent waits before trying the next replica.
    return Agent(
        Endpoint(addr=",".join(f"127.0.0.1:{p}" for p in ports), token=TOKEN),
        executor,  # type: ignore[arg-type]
        "agent-1",
        welcome_timeout=WAIT,
        **kwargs,  # type: ignore[arg-type]
    )


async def first_stream(controls: list[FakeControl]) -> tuple[int, FakeStream]:
    """The index of the replica the agent dialled, and its stream (the Hello still unread)."""
    waits = [asyncio.create_task(c.streams.get()) for c in controls]
    done, pending = await asyncio.wait(waits, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "the agent dialled no replica"
    task = done.pop()
    return waits.index(task), task.result()


async def start_replicas(n: int) -> tuple[list[FakeControl], list[grpc.aio.Server], list[int]]:
    controls = [FakeControl() for _ in range(n)]
    started = [await start_server(c) for c in controls]
    return controls, [s for s, _ in started], [p for _, p in started]


def test_a_dying_replica_is_left_for_another_at_once_with_the_running_lease() -> None:
    async def scenario() -> None:
        controls, servers, ports = await start_replicas(2)
        executor = ScriptedExecutor(before=("pull",), after=("converge",))
        agent = replica_agent(ports, executor)
        task = asyncio.create_task(agent.run())
        try:
            index, stream = await first_stream(controls)
            await stream.recv_kind("hello")
            stream.welcome()
            a = assignment()
            stream.send(assignment=a)
            await stream.recv_kind("ack")
            assert (await stream.recv_kind("progress")).progress.sequence == 1
            executor.gate.set()  # The job goes on while the agent has no stream.
            loop = asyncio.get_running_loop()
            died = loop.time()
            await servers[index].stop(None)
            other = controls[1 - index]
            stream = await other.next_stream()
            moved_after = loop.time() - died
            hello = (await stream.recv_kind("hello")).hello
            assert moved_after < 1.0, f"took {moved_after:.2f}s to dial the other replica"
            assert list(hello.held_leases) == [held(a)]
            stream.welcome(resumed=[held(a)])
            sequences = []
            while (message := await stream.recv()).WhichOneof("msg") != "result":
                sequences.append(message.progress.sequence)
            # Nothing the first replica had not confirmed is lost on the way.
            assert sequences == [1, 2]
            assert message.result.outcome == agent_pb2.OUTCOME_SUCCEEDED
        finally:
            executor.gate.set()
            agent.stop()
            await asyncio.wait_for(task, WAIT)
            for server in servers:
                await server.stop(None)

    asyncio.run(scenario())


def test_agents_given_the_same_list_spread_over_the_replicas() -> None:
    async def scenario() -> list[int]:
        controls, servers, ports = await start_replicas(2)
        agents = [replica_agent(ports, DryRunExecutor(), rng=random.Random(i)) for i in range(8)]
        tasks = [asyncio.create_task(agent.run()) for agent in agents]
        try:
            for _ in agents:
                await asyncio.sleep(0)
            await asyncio.sleep(0.5)
            return [c.streams.qsize() for c in controls]
        finally:
            for agent in agents:
                agent.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
            for server in servers:
                await server.stop(None)

    per_replica = asyncio.run(scenario())
    assert sum(per_replica) == 8
    assert min(per_replica) >= 2, per_replica


def test_a_refused_replica_is_skipped_at_start() -> None:
    async def scenario() -> None:
        controls, servers, ports = await start_replicas(2)
        await servers[0].stop(None)  # Its port now refuses connections.
        addresses = [f"127.0.0.1:{p}" for p in ports]
        # This agent's order starts with the refused one.
        assert AddressRing.shuffled(addresses, random.Random(0)).current == addresses[0]
        agent = replica_agent(ports, DryRunExecutor(), rng=random.Random(0))
        task = asyncio.create_task(agent.run())
        try:
            stream = await controls[1].next_stream()
            assert (await stream.recv_kind("hello")).hello.agent_id == "agent-1"
        finally:
            agent.stop()
            await asyncio.wait_for(task, WAIT)
            await servers[1].stop(None)

    asyncio.run(scenario())
