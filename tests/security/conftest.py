"""Servers for the security tests: the real ControlServer on a loopback socket, in a thread
of this process, with the settings, TLS files and limits a test asks for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sami.v1 import (
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    artifact_pb2,
    artifact_pb2_grpc,
    cluster_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
)
from sami_control import offline
from sami_control.core.settings import Settings
from sami_control.server import ControlServer, ServeConfig
from tests import samples
from tests.harness import free_port

REF = "127.0.0.1:5000/web@sha256:" + "a" * 64

Metadata = tuple[tuple[str, str], ...]


def violations(err: grpc.RpcError) -> list[str]:
    """The fields a google.rpc.BadRequest detail of the error names."""
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:
        return []
    out: list[str] = []
    for d in status.details if status else ():
        br = error_details_pb2.BadRequest()
        if d.Unpack(br):
            out += [v.field for v in br.field_violations]
    return out


def md(token: str | None, **extra: str) -> Metadata:
    out = [("authorization", f"Bearer {token}")] if token else []
    out += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return tuple(out)


@dataclass
class Server:
    addr: str
    data: Path
    server: ControlServer
    loop: asyncio.AbstractEventLoop
    channels: list[grpc.Channel] = field(default_factory=list)

    def token(self, role: str, name: str = "", **kw: Any) -> str:
        return offline.add_token(self.data, role, name or f"t-{role}", **kw).plaintext

    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel(self.addr)
        self.channels.append(ch)
        return ch

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's event loop (for peeking at the core) and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


class Stubs:
    def __init__(self, ch: grpc.Channel) -> None:
        self.art = artifact_pb2_grpc.ArtifactServiceStub(ch)
        self.dep = deployment_pb2_grpc.DeploymentServiceStub(ch)
        self.clu = cluster_pb2_grpc.ClusterServiceStub(ch)
        self.man = manifest_pb2_grpc.ManifestServiceStub(ch)
        self.agent = agent_pb2_grpc.AgentServiceStub(ch)
        self.tok = admin_pb2_grpc.TokenServiceStub(ch)
        self.audit = admin_pb2_grpc.AuditServiceStub(ch)


def sync_request(extra: str = "") -> manifest_pb2.SyncManifestsRequest:
    files = samples.repo()
    if extra:
        files["README.md"] = extra.encode()
    return manifest_pb2.SyncManifestsRequest(
        files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()]
    )


def seed(srv: Server, admin: str, ch: grpc.Channel | None = None) -> tuple[Stubs, str]:
    """A cluster c1 (stage, production, pull_request), synced manifests, artifact web."""
    offline.add_cluster(srv.data, "c1", ["stage", "production", "pull_request"])
    s = Stubs(ch or srv.channel())
    s.man.SyncManifests(sync_request(), metadata=md(admin))
    art = s.art.RegisterArtifact(
        artifact_pb2.RegisterArtifactRequest(
            artifact=artifact_pb2.Artifact(artifact_name="web", ref=REF)
        ),
        metadata=md(admin),
    ).artifact.id
    return s, art


def create(s: Stubs, token: str, art: str, env: str = "stage", **kw: Any) -> str:
    return s.dep.CreateDeployment(
        deployment_pb2.CreateDeploymentRequest(service="web", environment=env, artifact=art, **kw),
        metadata=md(token),
    ).id


def start_server(data: Path, settings: Settings | None = None, **cfg: Any) -> Server:
    """The real server on a free loopback port, in a thread; `stop_server` ends it."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}
    stop = asyncio.Event()

    async def main() -> None:
        try:
            srv = ControlServer(
                ServeConfig(
                    listen=f"127.0.0.1:{port}",
                    data_dir=data,
                    settings=settings or Settings(),
                    grace=0.5,
                    **cfg,
                )
            )
            holder["s"] = srv
            await srv.start()
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
            raise
        ready.set()
        await stop.wait()
        await srv.stop()

    def run() -> None:
        with contextlib.suppress(BaseException):  # reported through holder
            loop.run_until_complete(main())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(20), "server did not start"
    if "error" in holder:
        t.join(5)
        loop.close()
        raise holder["error"]
    srv = Server(f"127.0.0.1:{port}", data, holder["s"], loop)
    srv._stop = (stop, t)  # type: ignore[attr-defined]
    return srv


def stop_server(srv: Server) -> None:
    stop, t = srv._stop  # type: ignore[attr-defined]
    for ch in srv.channels:
        ch.close()
    srv.loop.call_soon_threadsafe(stop.set)
    t.join(10)
    srv.loop.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """serve(settings=..., **ServeConfig fields) -> a running Server."""
    started: list[Server] = []

    def start(settings: Settings | None = None, **cfg: Any) -> Server:
        srv = start_server(tmp_path / f"data{len(started)}", settings, **cfg)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        stop_server(srv)


class AgentStream:
    """An agent's Connect stream driven by hand: Hello, then what the test sends; whatever
    the server sends is collected in `received`."""

    def __init__(
        self,
        s: Stubs,
        token: str,
        agent_id: str = "a1",
        first: agent_pb2.AgentMessage | None = None,
        **hello: Any,
    ) -> None:
        self.received: list[agent_pb2.ControlMessage] = []
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.fields: list[str] = []
        self.welcomed = threading.Event()
        self.done = threading.Event()
        self._outbox: list[agent_pb2.AgentMessage] = [
            first
            or agent_pb2.AgentMessage(
                hello=agent_pb2.Hello(
                    agent_id=agent_id, capabilities=hello.pop("capabilities", ["swarm"]), **hello
                )
            )
        ]
        self._closed = threading.Event()
        self._cond = threading.Condition()
        self._call = s.agent.Connect(self._messages(), metadata=md(token), timeout=600)
        threading.Thread(target=self._run, daemon=True).start()

    def send(self, **msg: Any) -> None:
        with self._cond:
            self._outbox.append(agent_pb2.AgentMessage(**msg))
            self._cond.notify()

    def _messages(self) -> Iterator[agent_pb2.AgentMessage]:
        while not self._closed.is_set():
            with self._cond:
                while not self._outbox and not self._closed.is_set():
                    self._cond.wait(0.1)
                batch, self._outbox[:] = list(self._outbox), []
            yield from batch

    def _run(self) -> None:
        try:
            for msg in self._call:
                self.received.append(msg)
                if msg.WhichOneof("msg") == "welcome":
                    self.welcomed.set()
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            self.code = err.code()
            self.details = err.details() or ""
            self.fields = violations(err)
        finally:
            self._closed.set()
            self.done.set()

    def wait_for(self, kind: str, timeout: float = 10, after: int = 0) -> agent_pb2.ControlMessage:
        """The first message of `kind` among those received from index `after` on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.received[after:]:
                if m.WhichOneof("msg") == kind:
                    return m
            if self.done.is_set():
                break
            time.sleep(0.02)
        raise AssertionError(f"no {kind} (got {[m.WhichOneof('msg') for m in self.received]})")

    def succeed(self, deployment_id: str, timeout: float = 10) -> agent_pb2.Assignment:
        """Take the deployment's assignment and report it SUCCEEDED; returns it once the
        result is stored (Done came back)."""
        lease = self.wait_for("assignment", timeout).assignment
        assert lease.deployment.id == deployment_id, lease.deployment.id
        self.send(
            result=agent_pb2.Result(
                deployment_id=deployment_id,
                lease_id=lease.lease_id,
                epoch=lease.deployment.epoch,
                outcome=agent_pb2.OUTCOME_SUCCEEDED,
            )
        )
        self.wait_for("done", timeout)
        return lease

    def close(self) -> None:
        self._closed.set()
        self._call.cancel()
        self.done.wait(5)


def live_service(
    lease: agent_pb2.Assignment, digest: str, replicas: int = 2
) -> agent_pb2.LiveService:
    """What an agent reports of the `web` service its deployment `lease` made, running
    `digest` (Sami's label says the deployment's; set `.image` to run another by hand)."""
    return agent_pb2.LiveService(
        stack_name=lease.deployment.stack_name,
        service="web",
        deployment_id=lease.deployment.id,
        label_digest=digest,
        image="web@" + digest,
        desired_replicas=replicas,
        running_replicas=replicas,
    )
