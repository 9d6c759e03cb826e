"""What the control plane tells an agent, as plain data. The API layer turns each command
into a ControlMessage (sami_control/api/convert.py) and writes it to the agent's stream."""

from __future__ import annotations

from dataclasses import dataclass

from sami_control.core.errors import DomainError
from sami_control.core.model import Artifact, Deployment


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
