"""The domain core in-process (no grpc), as test_core*.py drive it: a real SQLite file, a fake
clock that makes lease expiry exact, clusters c1 (stage, production) and c2
(pull_request), two artifacts and the sample manifests. The `env` fixture is in conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from sami_control.core.commands import (
    Command,
    HeldLease,
)
from sami_control.core.controlplane import ControlPlane
from sami_control.core.model import (
    ArtifactKind,
    Deployment,
    Event,
    EventType,
    Principal,
    Role,
)
from sami_control.core.requests import ArtifactInput, DeploymentInput
from sami_control.core.sessions import AgentSession
from sami_control.core.settings import Settings
from sami_control.storage.sqlite import SQLiteStore
from tests import samples

ADMIN = Principal("t0", "admin", Role.ADMIN)
AGENT_C1 = Principal("t1", "agent-c1", Role.AGENT, cluster="c1")
AGENT_C2 = Principal("t2", "agent-c2", Role.AGENT, cluster="c2")
REF = "127.0.0.1:5000/web@sha256:" + "a" * 64
REF2 = "127.0.0.1:5000/web@sha256:" + "b" * 64


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def tick(cp: ControlPlane) -> None:
    """One pass of the background loop: expire leases, then dispatch."""
    cp.publisher.apply(await cp.leases.expire())
    cp.publisher.apply(await cp.leases.dispatch())


def drain(s: AgentSession) -> list[Command]:
    out = []
    while not s.outbox.empty():
        out.append(s.outbox.get_nowait())
    return out


async def connect(
    cp: ControlPlane, agent_id: str, who: Principal = AGENT_C1, held: list[HeldLease] | None = None
) -> AgentSession:
    session, _ = await cp.agents.connect(who, agent_id, "test", ["swarm"], held or [])
    return session


async def deploy(cp: ControlPlane, ref: str = REF, **kw: object) -> Deployment:
    args: dict[str, object] = {"service": "web", "environment": "stage", "artifact": ref}
    args.update(kw)
    return await cp.deployments.create(ADMIN, DeploymentInput(**args))  # type: ignore[arg-type]


async def events(cp: ControlPlane, d: Deployment) -> list[Event]:
    return [e async for e in cp.store.iter_events(d.id, 0)]


async def states(cp: ControlPlane, d: Deployment) -> list[str]:
    return [e.state.name for e in await events(cp, d) if e.type is EventType.STATE_CHANGED]


async def get(cp: ControlPlane, d: Deployment) -> Deployment:
    return await cp.deployments.get(ADMIN, d.id)


async def make_env(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, Clock]]:
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    clock = Clock()
    cp = ControlPlane(store, Settings(lease_ttl=30, ack_timeout=10, max_attempts=3), clock)
    await cp.clusters.create(ADMIN, "c1", ["stage", "production"])
    await cp.clusters.create(ADMIN, "c2", ["pull_request"])
    await cp.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF, ""))
    await cp.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF2, ""))
    await cp.manifests.sync(ADMIN, "", list(samples.repo().items()))
    yield cp, clock
    await store.close()
