"""What lets one control plane serve thousands of streams: the hub's fan-out, a watched
event serialized once for all its watchers, an agent stream that writes only when it has
something to write, and a serving process that imports only what serving needs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from sami.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    artifact_pb2,
    artifact_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
)
from sami_control import offline
from sami_control.api.servicers import EventBytes
from sami_control.core.commands import RevokeCommand
from sami_control.core.hub import QUEUE_LIMIT, Hub
from sami_control.core.model import Event, EventType, State
from sami_control.core.sessions import LeaseIds, Outbox
from sami_control.server import ControlServer, ServeConfig
from tests import samples
from tests.control.conftest import LiveServer

REF = "127.0.0.1:5000/web@sha256:" + "a" * 64
TERMINAL = {deployment_pb2.SUCCEEDED, deployment_pb2.FAILED, deployment_pb2.ROLLED_BACK}


def event(seq: int, message: str = "", deployment_id: str = "dep_1") -> Event:
    return Event(deployment_id, seq, EventType.PROGRESS, State.IN_PROGRESS, message=message)


# -- in process -------------------------------------------------------------------------------


def test_hub_offers_in_subscription_order_and_a_full_queue_turns_into_lagged() -> None:
    async def scenario() -> None:
        hub = Hub()
        subs = [hub.subscribe("dep_1") for _ in range(3)]
        other = hub.subscribe("dep_2")
        hub.publish([event(1)])
        assert [s.queue.qsize() for s in subs] == [1, 1, 1] and other.queue.empty()
        assert all(s.wakeup.is_set() for s in subs) and not other.wakeup.is_set()
        assert list(hub._subs["dep_1"]) == subs  # the order they came in
        subs[1].close()
        assert hub.watcher_count() == 3
        assert subs[0].queue.get_nowait().sequence == 1
        with pytest.raises(asyncio.QueueEmpty):
            subs[0].queue.get_nowait()
        hub.publish([event(n) for n in range(2, QUEUE_LIMIT + 2)])
        assert subs[2].lagged and subs[2].queue.full()
        assert not subs[0].lagged and subs[0].queue.qsize() == QUEUE_LIMIT
        for s in (subs[0], subs[2], other):
            s.close()
        assert hub.watcher_count() == 0 and not hub._subs

    asyncio.run(scenario())


def test_leases_hold_a_set_only_while_there_are_leases() -> None:
    leases = LeaseIds()
    assert len(leases) == 0 and list(leases) == [] and leases == set() and leases._ids is None
    leases.add("d1")
    leases.add("d2")
    leases.discard("nope")
    assert "d1" in leases and sorted(leases) == ["d1", "d2"] and leases == {"d1", "d2"}
    leases.discard("d1")
    leases.discard("d2")
    assert len(leases) == 0 and leases._ids is None


def test_an_outbox_calls_its_consumer_on_each_command() -> None:
    box = Outbox()
    box.put_nowait(RevokeCommand("d0", "l0", "before a consumer"))
    woken: list[int] = []
    box.on_put = lambda: woken.append(box.qsize())
    box.put_nowait(RevokeCommand("d1", "l1", "why"))
    assert woken == [2]
    assert [box.get_nowait().deployment_id for _ in range(2)] == ["d0", "d1"]  # type: ignore[union-attr]
    assert box.empty()
    with pytest.raises(IndexError):
        box.get_nowait()


def test_an_event_is_serialized_once_for_all_its_watchers() -> None:
    cache = EventBytes(limit=3)
    e = event(1, "hello")
    data = cache.serialized(e)
    assert cache.serialized(e) is data
    # The same event read back from the store (an equal object): the same bytes.
    assert cache.serialized(event(1, "hello")) is data
    parsed = deployment_pb2.WatchDeploymentResponse.FromString(data)
    assert parsed.event.sequence == 1 and parsed.event.message == "hello"
    # Never the bytes of another event, even under the same key.
    other = cache.serialized(event(1, "changed"))
    assert deployment_pb2.WatchDeploymentResponse.FromString(other).event.message == "changed"
    for n in range(2, 10):
        cache.serialized(event(n))
    assert len(cache._by_key) == 3


# -- over the API -------------------------------------------------------------------------------


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def prepare(srv: LiveServer) -> tuple[str, str]:
    """A cluster c1 (stage) with the sample manifests and an artifact; (admin, artifact)."""
    offline.add_cluster(srv.data, "c1", ["stage", "production"])
    admin = srv.token("admin")
    with grpc.insecure_channel(srv.addr) as ch:
        manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
            manifest_pb2.SyncManifestsRequest(
                files=[
                    manifest_pb2.ManifestFile(path=p, content=c) for p, c in samples.repo().items()
                ]
            ),
            metadata=md(admin),
        )
        art = artifact_pb2_grpc.ArtifactServiceStub(ch).RegisterArtifact(
            artifact_pb2.RegisterArtifactRequest(
                artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF)
            ),
            metadata=md(admin),
        )
    return admin, art.artifact.id


def create(ch: grpc.aio.Channel, admin: str, artifact: str) -> deployment_pb2.Deployment:
    return deployment_pb2_grpc.DeploymentServiceStub(ch).CreateDeployment(
        deployment_pb2.CreateDeploymentRequest(
            service="web", environment="stage", artifact=artifact
        ),
        metadata=md(admin),
    )


class Agent:
    """A hand-driven agent stream on a grpc.aio channel."""

    def __init__(
        self,
        ch: grpc.aio.Channel,
        token: str,
        agent_id: str,
        held: list[agent_pb2.HeldLease] | None = None,
    ) -> None:
        self.outgoing: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
        self.outgoing.put_nowait(
            agent_pb2.AgentMessage(
                hello=agent_pb2.Hello(
                    agent_id=agent_id, capabilities=["swarm"], held_leases=held or []
                )
            )
        )
        self.call = agent_pb2_grpc.AgentServiceStub(ch).Connect(self._send(), metadata=md(token))

    async def _send(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        while (msg := await self.outgoing.get()) is not None:
            yield msg

    def send(self, **msg: object) -> None:
        self.outgoing.put_nowait(agent_pb2.AgentMessage(**msg))  # type: ignore[arg-type]

    async def next(self, kind: str) -> agent_pb2.ControlMessage:
        while True:
            msg = await asyncio.wait_for(self.call.read(), 10)
            assert msg is not grpc.aio.EOF, f"the stream ended waiting for {kind}"
            if msg.WhichOneof("msg") == kind:
                return msg

    async def status(self) -> grpc.StatusCode:
        """How the stream ended (reading what was still sent until then)."""
        try:
            while await asyncio.wait_for(self.call.read(), 10) is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return await self.call.code()


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


def test_every_watcher_gets_every_event_of_a_deployment(live_server: LiveServer) -> None:
    admin, artifact = prepare(live_server)
    agent_token = live_server.token("agent", cluster="c1")

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(live_server.addr) as ch:
            dep = await create(ch, admin, artifact)
            stub = deployment_pb2_grpc.DeploymentServiceStub(ch)

            async def watch() -> list[bytes]:
                seen: list[bytes] = []
                call = stub.WatchDeployment(
                    deployment_pb2.WatchDeploymentRequest(name=dep.id), metadata=md(admin)
                )
                async for item in call:
                    if item.WhichOneof("item") == "event":
                        seen.append(item.event.SerializeToString())
                        if item.event.state in TERMINAL:
                            break
                    else:
                        assert item.deployment.id == dep.id
                return seen

            watchers = [asyncio.create_task(watch()) for _ in range(8)]
            agent = Agent(ch, agent_token, "a1")
            await agent.next("welcome")
            a = (await agent.next("assignment")).assignment
            lease = {"deployment_id": dep.id, "lease_id": a.lease_id, "epoch": a.deployment.epoch}
            agent.send(ack=agent_pb2.Ack(**lease))
            for n in range(1, 4):
                agent.send(progress=agent_pb2.Progress(**lease, sequence=n, message=f"step {n}"))
            agent.send(result=agent_pb2.Result(**lease, outcome=agent_pb2.OUTCOME_SUCCEEDED))
            await agent.next("done")
            seen = await asyncio.gather(*watchers)
            assert all(s == seen[0] for s in seen)
            events = [deployment_pb2.DeploymentEvent.FromString(b) for b in seen[0]]
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert [e.message for e in events if e.message.startswith("step")] == [
                "step 1",
                "step 2",
                "step 3",
            ]
            assert events[-1].state == deployment_pb2.SUCCEEDED
            agent.outgoing.put_nowait(None)
            assert await agent.status() is grpc.StatusCode.OK  # the agent closed its side

    run(scenario())


def test_an_agent_stream_answers_heartbeats_and_ends_when_the_agent_connects_again(
    live_server: LiveServer,
) -> None:
    prepare(live_server)
    token = live_server.token("agent", cluster="c1")

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(live_server.addr) as ch:
            first = Agent(ch, token, "a1")
            await first.next("welcome")
            for _ in range(3):
                first.send(heartbeat=agent_pb2.Heartbeat())
                await first.next("heartbeat_ack")
            second = Agent(ch, token, "a1")
            await second.next("welcome")
            assert await first.status() is grpc.StatusCode.OK
            second.send(heartbeat=agent_pb2.Heartbeat())
            await second.next("heartbeat_ack")
            second.call.cancel()

    run(scenario())


def test_a_report_on_another_clusters_deployment_ends_the_stream(
    live_server: LiveServer,
) -> None:
    admin, artifact = prepare(live_server)
    offline.add_cluster(live_server.data, "c2", ["pull_request"])
    other = live_server.token("agent", cluster="c2")

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(live_server.addr) as ch:
            dep = await create(ch, admin, artifact)  # stage: c1's
            agent = Agent(ch, other, "b1")
            await agent.next("welcome")
            agent.send(heartbeat=agent_pb2.Heartbeat())
            agent.send(progress=agent_pb2.Progress(deployment_id=dep.id, lease_id="x", epoch=1))
            assert await agent.status() is grpc.StatusCode.PERMISSION_DENIED
            assert "another cluster" in (await agent.call.details() or "")

    run(scenario())


def test_a_token_revoked_ends_an_idle_agent_stream(live_server: LiveServer) -> None:
    """The writer ends the stream (a fatal CloseCommand) while the handler waits to read."""
    prepare(live_server)
    token = live_server.token("agent", cluster="c1")
    core = live_server.server.core

    def revoke_all() -> None:
        for token_id in core.streams.token_ids():
            core.streams.end_token(token_id, f"token {token_id} was revoked")

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(live_server.addr) as ch:
            agent = Agent(ch, token, "a1")
            await agent.next("welcome")
            live_server.loop.call_soon_threadsafe(revoke_all)
            assert await agent.status() is grpc.StatusCode.UNAUTHENTICATED
            assert "revoked" in (await agent.call.details() or "")

    run(scenario())


# -- the serving process ------------------------------------------------------------------------


def test_serving_imports_neither_cryptography_nor_prometheus() -> None:
    """`tls init` (cryptography) and prometheus_client (when metrics or the webhook are
    served) are imported when used, not by every `sami-control serve`."""
    code = (
        "import sys, sami_control.cli; "
        "print([m for m in ('cryptography', 'prometheus_client') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_server_without_http_endpoints_keeps_no_metrics(tmp_path: Path) -> None:
    async def scenario() -> None:
        srv = ControlServer(ServeConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"))
        try:
            assert srv.metrics is None
            assert (srv.http.metrics_port, srv.http.webhook_port) == (0, 0)
        finally:
            srv.close()

    asyncio.run(scenario())


def test_a_serving_process_tunes_its_garbage_collector(tmp_path: Path) -> None:
    """Observed in a process serving as `sami-control serve` does (run_until_signalled),
    then stopped by SIGTERM."""
    code = f"""
import asyncio, gc, os, signal
from pathlib import Path
from sami_control import server

async def main():
    cfg = server.ServeConfig(listen="127.0.0.1:0", data_dir=Path({str(tmp_path / "data")!r}))
    serving = asyncio.create_task(server.ControlServer(cfg).run_until_signalled())
    for _ in range(400):
        if gc.get_freeze_count() > 0:
            break
        await asyncio.sleep(0.05)
    print("gc", gc.get_threshold()[0] == server.GC_THRESHOLD, gc.get_freeze_count() > 0)
    os.kill(os.getpid(), signal.SIGTERM)
    await serving

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    seen = [line.split() for line in out.stdout.splitlines() if line.startswith("gc ")]
    assert seen == [["gc", "True", "True"]]  # (the rest of stdout is the server's log)
