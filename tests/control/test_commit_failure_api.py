"""A commit that fails (a disk I/O error at COMMIT), over the real API: the caller gets
UNAVAILABLE saying nothing was kept and what to do, nothing of the call is stored or
published, and the next call works. The real server and SQLite file; only the committer's
COMMIT is made to fail, once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from sami.v1 import agent_pb2, deployment_pb2, deployment_pb2_grpc
from sami_control.core.store import StorageFailed
from tests.control.conftest import LiveServer
from tests.control.test_streams_at_scale import Agent, create, md, prepare, run


def test_a_failed_commit_answers_unavailable_and_keeps_nothing(live_server: LiveServer) -> None:
    admin, artifact = prepare(live_server)
    store = live_server.server.store
    real = store._run_commit
    failures: list[int] = []

    def failing_commit() -> None:
        # Every commit fails until the test puts the real one back (a background pass of
        # the dispatch loop may commit too: it fails alike, having nothing to keep).
        failures.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    request = deployment_pb2.CreateDeploymentRequest(
        service="web", environment="stage", artifact=artifact, request_id="ci-run-1"
    )
    with grpc.insecure_channel(live_server.addr) as ch:
        stub = deployment_pb2_grpc.DeploymentServiceStub(ch)
        live_server.loop.call_soon_threadsafe(setattr, store, "_run_commit", failing_commit)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateDeployment(request, metadata=md(admin), timeout=10)
        live_server.loop.call_soon_threadsafe(setattr, store, "_run_commit", real)
        assert failures
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "could not store the change (disk I/O error)" in caught.value.details()
        assert "nothing of it was kept" in caught.value.details()
        listed = stub.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(admin))
        assert list(listed.deployments) == []
        # Retrying with the same request_id is safe: it was never stored, so it is new.
        d = stub.CreateDeployment(request, metadata=md(admin), timeout=10)
        again = stub.CreateDeployment(request, metadata=md(admin), timeout=10)
        assert again.id == d.id
        listed = stub.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(admin))
        assert [x.id for x in listed.deployments] == [d.id]


def test_an_agent_whose_report_was_lost_with_a_commit_reconnects_and_sends_it_again(
    live_server: LiveServer,
) -> None:
    """The agent got no error for its Result (the commit failed after its report was taken):
    without a word it would wait for a Done that never comes. The control plane closes its
    stream; the agent reconnects holding the lease and sends the Result again."""
    admin, artifact = prepare(live_server)
    agent_token = live_server.token("agent", cluster="c1")
    store = live_server.server.store
    real = store._run_commit

    def failing_commit() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    def swap(fn: object) -> None:
        live_server.loop.call_soon_threadsafe(setattr, store, "_run_commit", fn)

    async def state(stub: deployment_pb2_grpc.DeploymentServiceStub, ident: str) -> int:
        d = await stub.GetDeployment(
            deployment_pb2.GetDeploymentRequest(name=ident), metadata=md(admin)
        )
        return int(d.state)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(live_server.addr) as ch:
            stub = deployment_pb2_grpc.DeploymentServiceStub(ch)
            dep = await create(ch, admin, artifact)
            agent = Agent(ch, agent_token, "a1")
            await agent.next("welcome")
            a = (await agent.next("assignment")).assignment
            lease = {"deployment_id": dep.id, "lease_id": a.lease_id, "epoch": a.deployment.epoch}
            agent.send(ack=agent_pb2.Ack(**lease))
            while await state(stub, dep.id) != deployment_pb2.IN_PROGRESS:
                await asyncio.sleep(0.01)
            swap(failing_commit)
            agent.send(result=agent_pb2.Result(**lease, outcome=agent_pb2.OUTCOME_SUCCEEDED))
            # No Done: the stream ends instead (OK: reconnect, nothing is wrong with you).
            assert await agent.status() is grpc.StatusCode.OK
            swap(real)
            assert await state(stub, dep.id) == deployment_pb2.IN_PROGRESS  # nothing kept

            again = Agent(ch, agent_token, "a1", held=[agent_pb2.HeldLease(**lease)])
            welcome = (await again.next("welcome")).welcome
            assert [h.lease_id for h in welcome.resumed_leases] == [a.lease_id]
            again.send(result=agent_pb2.Result(**lease, outcome=agent_pb2.OUTCOME_SUCCEEDED))
            await again.next("done")
            assert await state(stub, dep.id) == deployment_pb2.SUCCEEDED
            again.outgoing.put_nowait(None)

    run(scenario())


def test_a_token_that_cannot_be_read_answers_unavailable(live_server: LiveServer) -> None:
    """Every call reads its token from the store once the cached row is older than the
    recheck interval: when the store is out of reach (PostgreSQL restarting), the caller
    gets UNAVAILABLE naming the store, which it retries — not UNKNOWN, which a CI job
    takes for a failure."""
    admin, _ = prepare(live_server)
    store = live_server.server.store
    tokens = live_server.server.core.tokens
    real = store.tx

    @contextlib.asynccontextmanager
    async def unreachable() -> AsyncIterator[None]:
        raise StorageFailed("the PostgreSQL database db:5432/sami is unavailable; retryable")
        yield

    def out_of_reach() -> None:
        tokens._cache.clear()  # the cached row has aged out
        store.tx = unreachable  # type: ignore[method-assign]

    with grpc.insecure_channel(live_server.addr) as ch:
        stub = deployment_pb2_grpc.DeploymentServiceStub(ch)
        live_server.loop.call_soon_threadsafe(out_of_reach)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListDeployments(
                    deployment_pb2.ListDeploymentsRequest(), metadata=md(admin), timeout=10
                )
        finally:
            live_server.loop.call_soon_threadsafe(setattr, store, "tx", real)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, caught.value.details()
        assert caught.value.details().startswith("the PostgreSQL database db:5432/sami")
        # Once the store is back, the same call works.
        stub.ListDeployments(deployment_pb2.ListDeploymentsRequest(), metadata=md(admin))
