"""What the control plane tells an agent, as plain data. The API layer turns each command
into a ControlMessage (sami_control/api/convert.py) and writes it to the agent's stream."""

from __future__ import annotations

from dataclasses import dataclass

from sami_control.core.errors import DomainError
from sami_control.core.model import Artifact, Deployment, SecretVersion


@dataclass(frozen=True)
class AssignCommand:
    deployment: Deployment
    artifact: Artifact | None  # None only for tearing down a preview Sami never recorded
    lease_ttl: float
    files: dict[str, bytes]
    # The secret versions the deployment recorded, with their ciphertexts.
    secrets: tuple[SecretVersion, ...] = ()


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


@dataclass(frozen=True)
class LogsAsk:
    """A service's Docker logs (core/queries.py)."""

    stack_name: str
    service: str
    since: float | None  # seconds back from now; None: everything Docker keeps
    tail: int
    follow: bool


@dataclass(frozen=True)
class PlanAsk:
    """What deploying `artifact` as `deployment` (not stored) would change."""

    deployment: Deployment
    artifact: Artifact
    files: dict[str, bytes]


@dataclass(frozen=True)
class QueryLimits:
    max_lines: int
    max_bytes: int
    lines_per_second: float


@dataclass(frozen=True)
class QueryCommand:
    """Ask the agent a question; it answers with chunks and an end (core/queries.py)."""

    query_id: str
    ask: LogsAsk | PlanAsk
    limits: QueryLimits


@dataclass(frozen=True)
class QueryCancelCommand:
    """The caller left (or a limit was reached): stop answering the query."""

    query_id: str
    reason: str


Command = (
    AssignCommand
    | CancelCommand
    | RevokeCommand
    | DoneCommand
    | CronRunAckCommand
    | HeartbeatAckCommand
    | QueryCommand
    | QueryCancelCommand
    | CloseCommand
)


@dataclass(frozen=True)
class HeldLease:
    deployment_id: str
    lease_id: str
    epoch: int
