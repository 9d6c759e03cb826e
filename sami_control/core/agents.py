"""Connected agents, as the core sees them: a session per open stream with an outbox of
commands. The API layer turns commands into protobuf and writes them to the stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sami_control.core.errors import DomainError
from sami_control.core.model import Artifact, Deployment
from sami_control.core.streams import Stream


@dataclass(frozen=True)
class AssignCommand:
    deployment: Deployment
    artifact: Artifact | None  # None only for tearing down a preview Sami never recorded
    lease_ttl: float
    files: dict[str, bytes]


@dataclass(frozen=True)
class CancelCommand:
    deployment_id: str
    lease_id: str
    reason: str


@dataclass(frozen=True)
class RevokeCommand:
    deployment_id: str
    lease_id: str
    reason: str


@dataclass(frozen=True)
class HeartbeatAckCommand:
    """The answer to a heartbeat: proof, for the agent, that the link is alive."""


@dataclass(frozen=True)
class DoneCommand:
    deployment_id: str
    lease_id: str


@dataclass(frozen=True)
class CronRunAckCommand:
    """The reported cron run is stored (error empty) or refused (why): forget it."""

    run_id: str
    error: str = ""


@dataclass(frozen=True)
class CloseCommand:
    """End the stream (the agent connected again elsewhere, or the server is stopping).
    With `fatal`, the stream ends with that error (its token was revoked or expired)."""

    reason: str
    fatal: DomainError | None = None


Command = (
    AssignCommand
    | CancelCommand
    | RevokeCommand
    | DoneCommand
    | CronRunAckCommand
    | HeartbeatAckCommand
    | CloseCommand
)


@dataclass(frozen=True)
class HeldLease:
    deployment_id: str
    lease_id: str
    epoch: int


@dataclass
class AgentSession:
    agent_id: str
    cluster: str
    version: str
    capabilities: frozenset[str]
    token_id: str
    connected_at: float
    last_seen_at: float
    outbox: asyncio.Queue[Command] = field(default_factory=asyncio.Queue)
    # Deployment ids this session holds a lease on.
    leases: set[str] = field(default_factory=set)
    closed: bool = False
    # This session among the token's open streams: ended when the token is revoked or
    # expires. Its principal carries the peer the stream came from, for the audit log.
    stream: Stream | None = None

    def send(self, cmd: Command) -> None:
        if not self.closed:
            self.outbox.put_nowait(cmd)
