"""Test doubles for the agent tests: a scripted control plane served by a real grpc.aio
server on 127.0.0.1, a scripted executor, and assignment builders.

The fake control plane knows nothing about deployments; each test plays the control plane's
side of docs/agent-protocol.md by hand through `FakeStream.recv`/`send`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
import grpc.aio

from sami.v1 import agent_pb2, agent_pb2_grpc, artifact_pb2, deployment_pb2, manifest_pb2
from sami_agent.connection import Agent
from sami_agent.executor import ExecutionResult, Executor, Job, Outcome, ProgressReporter
from sami_common.backoff import Backoff
from sami_common.dial import Endpoint

TOKEN = "agent-token-for-tests"
DIGEST = "sha256:" + "ab" * 32
REF = f"127.0.0.1:5000/web@{DIGEST}"
STACK = b"services:\n  web:\n    image: nginx:1\n  worker:\n    image: busybox\n"
WAIT = 5.0  # upper bound for anything a test waits for; normal runs take milliseconds


@dataclass
class _End:
    code: grpc.StatusCode | None = None
    details: str = ""


class FakeStream:
    """One Connect call, seen from the control plane."""

    def __init__(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata
        # None marks the end of the agent's side (half-close, cancel or disconnect).
        self.received: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
        self.outbox: asyncio.Queue[agent_pb2.ControlMessage | _End] = asyncio.Queue()
        self.ended = asyncio.Event()

    async def recv(self, *, heartbeats: bool = False) -> agent_pb2.AgentMessage:
        """The agent's next message (skipping heartbeats unless asked for)."""
        while True:
            message = await asyncio.wait_for(self.received.get(), WAIT)
            if message is None:
                raise AssertionError("the agent's stream ended")
            if heartbeats or message.WhichOneof("msg") != "heartbeat":
                return message

    async def recv_kind(self, kind: str) -> agent_pb2.AgentMessage:
        message = await self.recv(heartbeats=kind == "heartbeat")
        assert message.WhichOneof("msg") == kind, f"expected {kind}, got {message}"
        return message

    async def quiet(self, seconds: float) -> list[agent_pb2.AgentMessage]:
        """Everything but heartbeats the agent sends within `seconds`."""
        got: list[agent_pb2.AgentMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                message = await asyncio.wait_for(self.received.get(), left)
            except TimeoutError:
                break
            if message is not None and message.WhichOneof("msg") != "heartbeat":
                got.append(message)
        return got

    async def wait_agent_gone(self) -> None:
        while True:
            message = await asyncio.wait_for(self.received.get(), WAIT)
            if message is None:
                return

    def send(self, **kwargs: object) -> None:
        self.outbox.put_nowait(agent_pb2.ControlMessage(**kwargs))  # type: ignore[arg-type]

    def welcome(
        self,
        resumed: Iterable[agent_pb2.HeldLease] = (),
        heartbeat: float = 30.0,
        cluster: str = "local",
    ) -> None:
        self.send(
            welcome=agent_pb2.Welcome(
                cluster=cluster,
                heartbeat_interval=timedelta(seconds=heartbeat),
                resumed_leases=list(resumed),
            )
        )

    def close(self, code: grpc.StatusCode | None = None, details: str = "") -> None:
        """End the call: OK when `code` is None, else with that status."""
        self.outbox.put_nowait(_End(code, details))


@dataclass
class FakeControl(agent_pb2_grpc.AgentServiceServicer):
    streams: asyncio.Queue[FakeStream] = field(default_factory=asyncio.Queue)
    # When set, every Connect is refused with this status before reading Hello.
    refuse: grpc.StatusCode | None = None
    refused: int = 0

    async def next_stream(self) -> FakeStream:
        return await asyncio.wait_for(self.streams.get(), WAIT)

    async def Connect(  # the generated servicer's method name
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> None:
        if self.refuse is not None:
            self.refused += 1
            await context.abort(self.refuse, "token rejected by the fake control plane")
        stream = FakeStream({k: v for k, v in context.invocation_metadata() or ()})
        self.streams.put_nowait(stream)

        async def pump() -> None:
            with contextlib.suppress(Exception):
                async for message in request_iterator:
                    stream.received.put_nowait(message)
            stream.received.put_nowait(None)

        pumping = asyncio.create_task(pump())
        try:
            while True:
                item = await stream.outbox.get()
                if isinstance(item, _End):
                    if item.code is not None:
                        await context.abort(item.code, item.details)
                    return
                await context.write(item)
        finally:
            stream.ended.set()
            pumping.cancel()


async def start_server(control: FakeControl, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(control, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


class ScriptedExecutor:
    """Reports `before`, waits for `gate` (or a cancel), reports `after`, returns."""

    capabilities: tuple[str, ...] = ("swarm", "compose", "dry-run")

    def __init__(
        self,
        before: tuple[str, ...] = ("pull", "apply"),
        after: tuple[str, ...] = ("converge",),
        outcome: Outcome = Outcome.SUCCEEDED,
    ) -> None:
        self.before = before
        self.after = after
        self.outcome = outcome
        self.gate = threading.Event()
        self.finished = threading.Event()
        self.runs: list[str] = []

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        self.runs.append(job.deployment_id)
        try:
            for i, phase in enumerate(self.before, 1):
                report(phase, f"{job.service} before {i}")
            while not self.gate.wait(0.005):
                if cancelled.is_set():
                    report("rollback", f"{job.service} rolled back")
                    return ExecutionResult(Outcome.CANCELLED, "stopped on request")
            for i, phase in enumerate(self.after, 1):
                report(phase, f"{job.service} after {i}")
            return ExecutionResult(self.outcome, f"{job.service} {self.outcome.value}")
        finally:
            self.finished.set()


def assignment(
    deployment_id: str = "d1",
    lease_id: str = "l1",
    epoch: int = 1,
    *,
    service: str = "web",
    environment: str = "stage",
    deployment_type: str = "swarm",
    attempt: int = 1,
    lease_ttl: float = 30.0,
) -> agent_pb2.Assignment:
    return agent_pb2.Assignment(
        lease_id=lease_id,
        deployment=deployment_pb2.Deployment(
            id=deployment_id,
            epoch=epoch,
            attempt=attempt,
            manifest_revision="rev-1",
            name=f"deployments/{deployment_id}",
            service=service,
            environment=environment,
            cluster="local",
            deployment_type=deployment_type,
            stack_name=f"{environment}_{service}",
            artifact=artifact_pb2.Artifact(
                artifact_name=service, kind=artifact_pb2.ARTIFACT_KIND_IMAGE, ref=REF, digest=DIGEST
            ),
        ),
        files={"sami.yaml": b"version: v1beta\n", "stack.yml": STACK},
        lease_ttl=timedelta(seconds=lease_ttl),
        manifest=manifest_pb2.ManifestEntry(
            service=service,
            deployment_type=deployment_type,
            environment=environment,
            stack_files=["stack.yml"],
            image_services=["web"],
            converge_timeout_seconds=60,
        ),
    )


def held(a: agent_pb2.Assignment) -> agent_pb2.HeldLease:
    return agent_pb2.HeldLease(
        deployment_id=a.deployment.id, lease_id=a.lease_id, epoch=a.deployment.epoch
    )


def make_agent(port: int, executor: Executor, **kwargs: object) -> Agent:
    return Agent(
        Endpoint(addr=f"127.0.0.1:{port}", token=TOKEN),
        executor,
        "agent-1",
        backoff=Backoff(base=0.02, cap=0.1),
        welcome_timeout=WAIT,
        **kwargs,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running_agent(
    executor: Executor, **kwargs: object
) -> AsyncIterator[tuple[FakeControl, Agent, int]]:
    """A fake control plane and an agent connected to it; both stopped on exit."""
    control = FakeControl()
    server, port = await start_server(control)
    agent = make_agent(port, executor, **kwargs)
    task = asyncio.create_task(agent.run())
    try:
        yield control, agent, port
    finally:
        try:
            agent.stop()
            await asyncio.wait_for(task, WAIT)
        finally:
            await server.stop(None)
            gate = getattr(executor, "gate", None)
            if isinstance(gate, threading.Event):
                gate.set()  # let the job thread end so no test leaves a thread behind


async def connect(control: FakeControl, **welcome: object) -> tuple[FakeStream, agent_pb2.Hello]:
    """Accept the agent's next stream: read its Hello, answer with a Welcome."""
    stream = await control.next_stream()
    hello = (await stream.recv_kind("hello")).hello
    stream.welcome(**welcome)  # type: ignore[arg-type]
    return stream, hello
