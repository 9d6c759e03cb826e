"""Simulated agents: a lean asyncio client of `sami.v1.AgentService/Connect` that speaks
the agent protocol (docs/agent-protocol.md) and does no work: Hello, then for each
Assignment an Ack, `progress` Progress reports and a Result; Heartbeats as the real agent
sends them (sami_agent/connection.py): at the interval the Welcome gives while holding a
lease, IDLE_HEARTBEAT_FACTOR times less often while holding none. Many agents per process,
each on a connection of its own (as real agents, one per swarm manager, would be), with the
real agent's channel options (keepalives)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from bench.workers import Link
from sami.v1 import agent_pb2, agent_pb2_grpc
from sami_common.dial import CHANNEL_OPTIONS, IDLE_HEARTBEAT_FACTOR

# Every channel gets its own subchannel pool, hence its own TCP connection, instead of
# grpc sharing one connection between channels with the same target and options.
OPTIONS = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


@dataclass
class AgentPlan:
    addr: str
    tokens: list[str]
    agent_ids: list[str]
    agents_per_token: int
    progress: int = 3
    # Seconds between the Ack and each Progress, and before the Result (0: back to back).
    step_interval: float = 0.0
    heartbeats: bool = True
    record_receipts: bool = False
    # Ack every assignment, then hold it (no progress yet) until the orchestrator says `go`.
    hold_until_go: bool = False
    connect_batch: int = 100
    connect_timeout: float = 120.0
    # The process ends on its own after this, whatever happens.
    max_lifetime: float = 900.0


@dataclass
class Stats:
    connected: int = 0
    assignments: int = 0
    results: int = 0
    dones: int = 0
    revokes: int = 0
    heartbeats: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # The first message seen for each kind of error, to say what it was.
    error_details: dict[str, str] = field(default_factory=dict)
    receipts: dict[str, float] = field(default_factory=dict)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.error_details.setdefault(kind, detail[:300])

    def to_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "assignments": self.assignments,
            "results": self.results,
            "dones": self.dones,
            "revokes": self.revokes,
            "heartbeats": self.heartbeats,
            "errors": dict(self.errors),
            "error_details": self.error_details,
            "receipts": self.receipts,
        }


class SimAgent:
    def __init__(
        self, plan: AgentPlan, agent_id: str, token: str, stats: Stats, gate: asyncio.Event
    ) -> None:
        self.plan = plan
        self.gate = gate
        self.agent_id = agent_id
        self.token = token
        self.stats = stats
        self.channel = grpc.aio.insecure_channel(plan.addr, options=OPTIONS)
        self.call: Any = None
        self.heartbeat_interval = 10.0
        self.held: dict[str, agent_pb2.HeldLease] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.call = stub.Connect(metadata=(("authorization", f"Bearer {self.token}"),))
        await self.call.write(
            agent_pb2.AgentMessage(
                hello=agent_pb2.Hello(
                    agent_id=self.agent_id, version="bench", capabilities=["swarm"]
                )
            )
        )
        first = await self.call.read()
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "welcome":
            raise RuntimeError(f"agent {self.agent_id}: no Welcome")
        hb = first.welcome.heartbeat_interval
        self.heartbeat_interval = (hb.seconds + hb.nanos / 1e9) or 10.0

    async def _write(self, msg: agent_pb2.AgentMessage) -> None:
        async with self._lock:
            await self.call.write(msg)

    async def serve(self) -> None:
        beats = asyncio.create_task(self._heartbeats()) if self.plan.heartbeats else None
        try:
            while True:
                msg = await self.call.read()
                if msg is grpc.aio.EOF:
                    return
                kind = msg.WhichOneof("msg")
                if kind == "assignment":
                    if self.plan.record_receipts:
                        self.stats.receipts[msg.assignment.deployment.id] = time.time()
                    self.stats.assignments += 1
                    task = asyncio.create_task(self._work(msg.assignment))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif kind == "done":
                    self.stats.dones += 1
                elif kind == "revoke":
                    self.stats.revokes += 1
                    self.held.pop(msg.revoke.deployment_id, None)
        except grpc.aio.AioRpcError as exc:
            self.stats.error(f"stream:{exc.code().name}", str(exc.details()))
        except asyncio.CancelledError:
            pass
        finally:
            if beats is not None:
                beats.cancel()

    async def _heartbeats(self) -> None:
        # As the real agent: wake every interval, heartbeat if a lease is held or if the
        # idle period (IDLE_HEARTBEAT_FACTOR intervals) has passed since the last one.
        # Spread the agents' heartbeats over the idle period, as independent hosts would be.
        await asyncio.sleep(random.uniform(0, self.heartbeat_interval))
        periods = random.randrange(IDLE_HEARTBEAT_FACTOR)
        while True:
            periods += 1
            if self.held or periods >= IDLE_HEARTBEAT_FACTOR:
                await self._write(
                    agent_pb2.AgentMessage(
                        heartbeat=agent_pb2.Heartbeat(leases=list(self.held.values()))
                    )
                )
                self.stats.heartbeats += 1
                periods = 0
            await asyncio.sleep(self.heartbeat_interval)

    async def _work(self, a: agent_pb2.Assignment) -> None:
        dep, epoch = a.deployment.id, a.deployment.epoch
        self.held[dep] = agent_pb2.HeldLease(deployment_id=dep, lease_id=a.lease_id, epoch=epoch)
        try:
            await self._write(
                agent_pb2.AgentMessage(
                    ack=agent_pb2.Ack(deployment_id=dep, lease_id=a.lease_id, epoch=epoch)
                )
            )
            await self.gate.wait()
            for seq in range(1, self.plan.progress + 1):
                if self.plan.step_interval:
                    await asyncio.sleep(self.plan.step_interval)
                await self._write(
                    agent_pb2.AgentMessage(
                        progress=agent_pb2.Progress(
                            deployment_id=dep,
                            lease_id=a.lease_id,
                            epoch=epoch,
                            sequence=seq,
                            phase="converge",
                            message=f"web {seq}/{self.plan.progress} running (simulated)",
                        )
                    )
                )
            if self.plan.step_interval:
                await asyncio.sleep(self.plan.step_interval)
            await self._write(
                agent_pb2.AgentMessage(
                    result=agent_pb2.Result(
                        deployment_id=dep,
                        lease_id=a.lease_id,
                        epoch=epoch,
                        outcome=agent_pb2.OUTCOME_SUCCEEDED,
                        reason="simulated",
                    )
                )
            )
            self.stats.results += 1
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            self.stats.error(f"write:{type(exc).__name__}", str(exc))
        finally:
            self.held.pop(dep, None)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.call is not None:
            self.call.cancel()
        await self.channel.close(grace=None)


def agents_worker(link: Link, plan: AgentPlan) -> None:
    """Worker: connect every agent of `plan`, say `ready` {connected, errors}, serve until
    `stop` (`go` releases held assignments), then send the `result` (Stats)."""
    asyncio.run(_agents(link, plan))


async def connect_all(
    plan: AgentPlan, agents: list[SimAgent], stats: Stats, servers: list[asyncio.Task[None]]
) -> tuple[list[SimAgent], float]:
    """Connect `agents` `plan.connect_batch` at a time; start serving each one connected
    (its task appended to `servers`). Returns the agents connected and the seconds taken."""
    connected = []
    t0 = time.monotonic()
    for start in range(0, len(agents), plan.connect_batch):
        batch = agents[start : start + plan.connect_batch]
        left = plan.connect_timeout - (time.monotonic() - t0)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(a.connect(), max(1.0, left)) for a in batch),
            return_exceptions=True,
        )
        for a, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, grpc.aio.AioRpcError):
                stats.error(f"connect:{outcome.code().name}", str(outcome.details()))
            elif isinstance(outcome, BaseException):
                stats.error(f"connect:{type(outcome).__name__}", str(outcome))
            else:
                stats.connected += 1
                connected.append(a)
                servers.append(asyncio.create_task(a.serve()))
    return connected, time.monotonic() - t0


async def _agents(link: Link, plan: AgentPlan) -> None:
    stats = Stats()
    gate = asyncio.Event()
    if not plan.hold_until_go:
        gate.set()
    agents = [
        SimAgent(plan, agent_id, plan.tokens[i // plan.agents_per_token], stats, gate)
        for i, agent_id in enumerate(plan.agent_ids)
    ]
    servers: list[asyncio.Task[None]] = []
    try:
        _, connect_s = await connect_all(plan, agents, stats, servers)
        link.send(
            "ready",
            {
                "connected": stats.connected,
                "errors": dict(stats.errors),
                "error_details": stats.error_details,
                "connect_seconds": connect_s,
            },
        )
        deadline = time.monotonic() + plan.max_lifetime
        with contextlib.suppress(TimeoutError):
            while (await link.recv(["go", "stop"], deadline - time.monotonic()))[0] == "go":
                gate.set()
        # Let writes in flight finish.
        await asyncio.sleep(0.05)
    finally:
        for s in servers:
            s.cancel()
        await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)
    link.send("result", stats.to_dict())
