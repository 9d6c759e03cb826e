"""The agent's side of docs/agent-protocol.md, against a scripted control plane served by a
real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from agent_fakes import (
    TOKEN,
    WAIT,
    FakeControl,
    FakeStream,
    ScriptedExecutor,
    assignment,
    connect,
    held,
    make_agent,
    running_agent,
    start_server,
)

from sami.v1 import agent_pb2
from sami_agent import package_version
from sami_agent.connection import AgentAuthError
from sami_agent.executors import DryRunExecutor

pytestmark = pytest.mark.timeout(30)


async def progress_until_result(
    stream: FakeStream,
) -> tuple[list[agent_pb2.Progress], agent_pb2.Result]:
    reports: list[agent_pb2.Progress] = []
    while True:
        message = await stream.recv()
        kind = message.WhichOneof("msg")
        if kind == "result":
            return reports, message.result
        assert kind == "progress", f"unexpected {message}"
        reports.append(message.progress)


def test_hello_comes_first_with_identity_capabilities_and_token() -> None:
    async def scenario() -> None:
        async with running_agent(ScriptedExecutor()) as (control, _, _):
            stream = await control.next_stream()
            first = await stream.recv()
            assert first.WhichOneof("msg") == "hello"
            assert first.hello.agent_id == "agent-1"
            assert first.hello.version == package_version()
            assert list(first.hello.capabilities) == ["swarm", "compose", "dry-run"]
            assert list(first.hello.held_leases) == []
            assert stream.metadata["authorization"] == f"Bearer {TOKEN}"

    asyncio.run(scenario())


def test_assignment_is_acked_then_progress_in_order_then_result_until_done() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor(before=("pull", "apply"), after=("converge", "converge"))
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control, heartbeat=0.05)
            a = assignment()
            stream.send(assignment=a)
            ack = (await stream.recv_kind("ack")).ack
            assert (ack.deployment_id, ack.lease_id, ack.epoch) == ("d1", "l1", 1)
            executor.gate.set()
            reports, result = await progress_until_result(stream)
            assert [p.sequence for p in reports] == [1, 2, 3, 4]
            assert [p.phase for p in reports] == ["pull", "apply", "converge", "converge"]
            assert all((p.deployment_id, p.lease_id, p.epoch) == ("d1", "l1", 1) for p in reports)
            assert result.outcome == agent_pb2.OUTCOME_SUCCEEDED
            assert (result.deployment_id, result.lease_id, result.epoch) == ("d1", "l1", 1)
            # Until Done, the lease is still held and renewed.
            beat = (await stream.recv_kind("heartbeat")).heartbeat
            assert list(beat.leases) == [held(a)]
            stream.send(done=agent_pb2.Done(deployment_id="d1", lease_id="l1"))
            for _ in range(3):  # one heartbeat may already be queued before Done landed
                beat = (await stream.recv_kind("heartbeat")).heartbeat
            assert list(beat.leases) == []

    asyncio.run(scenario())


def test_heartbeats_arrive_every_interval_listing_held_leases() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor()
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control, heartbeat=0.05)
            first = (await stream.recv_kind("heartbeat")).heartbeat
            assert list(first.leases) == []
            a = assignment()
            stream.send(assignment=a)
            loop = asyncio.get_running_loop()
            start = loop.time()
            beats = 0
            while beats < 3:
                message = await stream.recv(heartbeats=True)
                if message.WhichOneof("msg") == "heartbeat" and message.heartbeat.leases:
                    assert list(message.heartbeat.leases) == [held(a)]
                    beats += 1
            assert loop.time() - start < 2.0

    asyncio.run(scenario())


def test_cancel_stops_the_job_and_reports_cancelled() -> None:
    async def scenario() -> None:
        async with running_agent(DryRunExecutor(step_seconds=0.2)) as (control, _, _):
            stream, _ = await connect(control)
            stream.send(assignment=assignment())
            await stream.recv_kind("ack")
            assert (await stream.recv_kind("progress")).progress.phase == "plan"
            stream.send(cancel=agent_pb2.Cancel(deployment_id="d1", lease_id="l1", reason="user"))
            reports, result = await progress_until_result(stream)
            assert result.outcome == agent_pb2.OUTCOME_CANCELLED
            assert "cancelled" in result.reason
            assert [p.sequence for p in reports] == list(range(2, len(reports) + 2))

    asyncio.run(scenario())


def test_stream_closed_mid_job_reconnects_and_resends_everything_unconfirmed() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor(before=("pull", "apply"), after=("converge",))
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control)
            a = assignment()
            stream.send(assignment=a)
            await stream.recv_kind("ack")
            first = [(await stream.recv_kind("progress")).progress.sequence for _ in range(2)]
            assert first == [1, 2]
            stream.close()  # the control plane goes away mid-deployment

            second = await control.next_stream()
            hello = (await second.recv_kind("hello")).hello
            assert list(hello.held_leases) == [held(a)]
            # The job keeps running while the agent is between streams.
            executor.gate.set()
            await asyncio.to_thread(executor.finished.wait, WAIT)
            await asyncio.sleep(0.05)
            second.welcome(resumed=[held(a)])
            reports, result = await progress_until_result(second)
            assert [p.sequence for p in reports] == [1, 2, 3]
            assert [p.phase for p in reports] == ["pull", "apply", "converge"]
            assert result.outcome == agent_pb2.OUTCOME_SUCCEEDED

            # No Done yet, so the result is sent again after the next reconnect.
            second.close(grpc.StatusCode.UNAVAILABLE, "restarting")
            third = await control.next_stream()
            hello = (await third.recv_kind("hello")).hello
            assert list(hello.held_leases) == [held(a)]
            third.welcome(resumed=[held(a)])
            reports, result = await progress_until_result(third)
            assert [p.sequence for p in reports] == [1, 2, 3]
            assert result.outcome == agent_pb2.OUTCOME_SUCCEEDED
            third.send(done=agent_pb2.Done(deployment_id="d1", lease_id="l1"))
            third.close()
            _, hello = await connect(control)
            assert list(hello.held_leases) == []
            assert executor.runs == ["d1"]

    asyncio.run(scenario())


def test_control_plane_restart_while_job_runs() -> None:
    """The server disappears (the port refuses connections for a while) and comes back on
    the same address: the agent retries, resumes the lease, and no sequence is lost."""

    async def scenario() -> None:
        executor = ScriptedExecutor(before=("pull",), after=("converge",))
        control = FakeControl()
        server, port = await start_server(control)
        agent = make_agent(port, executor)
        task = asyncio.create_task(agent.run())
        try:
            stream, _ = await connect(control)
            a = assignment()
            stream.send(assignment=a)
            await stream.recv_kind("ack")
            assert (await stream.recv_kind("progress")).progress.sequence == 1
            await server.stop(None)
            await asyncio.sleep(0.3)  # several failed attempts to connect
            executor.gate.set()
            control = FakeControl()
            server, _ = await start_server(control, port)
            stream, hello = await connect(control, resumed=[held(a)])
            assert list(hello.held_leases) == [held(a)]
            reports, result = await progress_until_result(stream)
            assert [p.sequence for p in reports] == [1, 2]
            assert result.outcome == agent_pb2.OUTCOME_SUCCEEDED
        finally:
            executor.gate.set()
            agent.stop()
            try:
                await asyncio.wait_for(task, WAIT)
            finally:
                await server.stop(None)

    asyncio.run(scenario())


def test_lease_not_resumed_after_reconnect_is_dropped() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor()
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control)
            stream.send(assignment=assignment())
            await stream.recv_kind("ack")
            await stream.recv_kind("progress")
            stream.close()
            second, hello = await connect(control, heartbeat=0.05)  # resumes nothing
            assert len(hello.held_leases) == 1
            executor.gate.set()
            assert await second.quiet(0.3) == []
            beat = (await second.recv_kind("heartbeat")).heartbeat
            assert list(beat.leases) == []

    asyncio.run(scenario())


def test_revoke_stops_all_reports_for_the_lease() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor()
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control, heartbeat=0.05)
            stream.send(assignment=assignment())
            await stream.recv_kind("ack")
            await stream.recv_kind("progress")
            await stream.recv_kind("progress")
            stream.send(revoke=agent_pb2.Revoke(deployment_id="d1", lease_id="l1", reason="x"))
            await asyncio.sleep(0.05)
            executor.gate.set()
            assert await stream.quiet(0.3) == []
            # Revoked is not cancelled: the run was not told to roll back.
            assert executor.finished.is_set()
            beat = (await stream.recv_kind("heartbeat")).heartbeat
            assert list(beat.leases) == []

    asyncio.run(scenario())


def test_jobs_of_different_services_run_at_once() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor(before=("pull",), after=())
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control)
            stream.send(assignment=assignment("d1", "l1", service="web"))
            stream.send(assignment=assignment("d2", "l2", service="api"))
            got = [await stream.recv() for _ in range(4)]  # two acks, two first reports
            kinds = sorted(m.WhichOneof("msg") for m in got)
            assert kinds == ["ack", "ack", "progress", "progress"]  # both ran before the gate
            executor.gate.set()
            results = [(await stream.recv_kind("result")).result for _ in range(2)]
            assert sorted(r.deployment_id for r in results) == ["d1", "d2"]

    asyncio.run(scenario())


def test_unsupported_deployment_type_fails_with_a_clear_reason() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor()
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control)
            stream.send(assignment=assignment(deployment_type="k8s"))
            await stream.recv_kind("ack")
            result = (await stream.recv_kind("result")).result
            assert result.outcome == agent_pb2.OUTCOME_FAILED
            assert "cannot run k8s deployments" in result.reason
            assert executor.runs == []

    asyncio.run(scenario())


def test_redelivered_assignment_is_acked_again_but_runs_once() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor(before=(), after=())
        async with running_agent(executor) as (control, _, _):
            stream, _ = await connect(control)
            stream.send(assignment=assignment())
            stream.send(assignment=assignment())
            await stream.recv_kind("ack")
            await stream.recv_kind("ack")
            executor.gate.set()
            await stream.recv_kind("result")
            assert await stream.quiet(0.1) == []
            assert executor.runs == ["d1"]

    asyncio.run(scenario())


def test_rejected_token_is_retried_until_accepted() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor()
        async with running_agent(executor) as (control, _, _):
            control.refuse = grpc.StatusCode.UNAUTHENTICATED
            while control.refused < 3:
                await asyncio.sleep(0.01)
            control.refuse = None  # the token was re-created
            _, hello = await connect(control)
            assert hello.agent_id == "agent-1"

    asyncio.run(scenario())


def test_rejected_token_ends_the_loop_with_exit_on_auth_error() -> None:
    async def scenario() -> None:
        control = FakeControl(refuse=grpc.StatusCode.PERMISSION_DENIED)
        server, port = await start_server(control)
        try:
            agent = make_agent(port, ScriptedExecutor(), exit_on_auth_error=True)
            with pytest.raises(AgentAuthError, match="SAMI_TOKEN") as raised:
                await asyncio.wait_for(agent.run(), WAIT)
            assert "PERMISSION_DENIED" in str(raised.value)
            assert control.refused == 1
        finally:
            await server.stop(None)

    asyncio.run(scenario())
