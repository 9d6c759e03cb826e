"""Plain data the core works on. Storage returns these; the API converts them to protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class State(enum.IntEnum):
    # Values match sami.v1.DeploymentState so conversion is a cast.
    QUEUED = 1
    ASSIGNED = 2
    IN_PROGRESS = 3
    SUCCEEDED = 4
    FAILED = 5
    ROLLED_BACK = 6
    CANCELLED = 7
    SUPERSEDED = 8
    # Created for a target whose manifest says `approval: required`: waits, never
    # dispatched, until approved (→ QUEUED), rejected or expired (→ CANCELLED).
    AWAITING_APPROVAL = 9

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        return self in (State.ASSIGNED, State.IN_PROGRESS)


TERMINAL = frozenset(
    {State.SUCCEEDED, State.FAILED, State.ROLLED_BACK, State.CANCELLED, State.SUPERSEDED}
)


class DeploymentAction(enum.IntEnum):
    # Values match sami.v1.DeploymentAction.
    DEPLOY = 1
    TEARDOWN = 2


class EventType(enum.IntEnum):
    # Values match sami.v1.EventType.
    STATE_CHANGED = 1
    PROGRESS = 2
    NOTICE = 3


class Outcome(enum.IntEnum):
    # Values match sami.v1.Outcome.
    SUCCEEDED = 1
    FAILED = 2
    ROLLED_BACK = 3
    CANCELLED = 4


OUTCOME_STATE = {
    Outcome.SUCCEEDED: State.SUCCEEDED,
    Outcome.FAILED: State.FAILED,
    Outcome.ROLLED_BACK: State.ROLLED_BACK,
    Outcome.CANCELLED: State.CANCELLED,
}


class ArtifactKind(enum.IntEnum):
    IMAGE = 1
    STATIC_FILE = 2
    MODULE = 3


class Role(enum.StrEnum):
    ADMIN = "admin"
    AGENT = "agent"
    DEPLOYER = "deployer"
    READER = "reader"


@dataclass
class Artifact:
    id: str
    artifact_name: str
    kind: ArtifactKind
    ref: str
    digest: str
    tags: list[str] = field(default_factory=list)
    git_repo: str = ""
    git_commit: str = ""
    ci_run_url: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    created_by: str = ""


@dataclass(frozen=True)
class PreviewStack:
    """A preview stack an agent reports running."""

    stack_name: str
    service: str
    pull_request: int
    deployment_id: str = ""


@dataclass(frozen=True)
class ManifestSettings:
    """The type-specific settings of the resolved manifest that a deployment keeps for its
    agent (the rest of the manifest has fields of its own on Deployment)."""

    pr_deploy: bool = False
    # static_file: where releases are unpacked, and how many are kept for rollback.
    static_target_dir: str = ""
    keep_releases: int = 0
    # cron: the 5-field schedule.
    cron_schedule: str = ""
    # What this deployment does to the queued ones of its key (sami_manifests.QUEUE_RULES);
    # rows stored before the field existed read the default.
    queue: str = "supersede"
    # `approval: required`: who may approve (token names or roles; empty: anyone who may
    # deploy to the target) and how long a pending approval lives, in seconds.
    approval_required: bool = False
    approvers: tuple[str, ...] = ()
    approval_expires: float = 0.0

    # Where the deployed app is reached (`{pr}` not yet replaced); "": not said.
    environment_url: str = ""

    def __post_init__(self) -> None:
        # Stored as JSON, the approvers come back as a list.
        object.__setattr__(self, "approvers", tuple(self.approvers))


@dataclass
class Deployment:
    id: str
    service: str
    environment: str
    pull_request: int
    artifact_id: str
    cluster: str
    deployment_type: str
    stack_name: str
    state: State = State.QUEUED
    action: DeploymentAction = DeploymentAction.DEPLOY
    reason: str = ""
    request_id: str = ""
    # Fingerprint of the request body, to tell a retry from a reused key.
    request_hash: str = ""
    status_message: str = ""
    agent_id: str = ""
    attempt: int = 0
    epoch: int = 0
    lease_id: str = ""
    lease_expires: float = 0.0
    # Highest progress sequence stored from the current lease's agent.
    agent_sequence: int = 0
    last_sequence: int = 0
    cancel_requested: bool = False
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float = 0.0
    manifest_revision: str = ""
    # What the agent needs beyond the deployment itself (resolved manifest), kept so
    # that a redelivery sends exactly what the first delivery sent.
    converge_timeout: float = 300.0
    stack_files: list[str] = field(default_factory=list)
    image_services: list[str] = field(default_factory=list)
    # Repo-relative folder of the manifest, e.g. services/web/swarm/stage.
    manifest_folder: str = ""
    # Type-specific settings of the resolved manifest (static_file target, cron schedule).
    manifest_settings: ManifestSettings = field(default_factory=ManifestSettings)
    # A rollback: the SUCCEEDED deployment whose artifact this one deploys again.
    rollback_of: str = ""
    # The id of the token that asked for it: its request_id is unique per token only.
    created_by_token: str = ""
    # The secret versions (name → version) and variable values (name → value) of its
    # service/environment it uses, recorded when it is created (core/secrets.py); a
    # rollback's are those of the deployment it goes back to.
    secrets: dict[str, int] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    seq: int = 0  # storage order, newest highest

    @property
    def key(self) -> tuple[str, str, int]:
        """At most one deployment is active per key."""
        return (self.service, self.environment, self.pull_request)


@dataclass
class ManifestRevision:
    id: str  # sha256 over the files
    commit: str
    created_at: float
    created_by: str
    file_count: int
    # The validated environment folders (ManifestEntry fields) and the lint warnings.
    entries: list[dict[str, object]] = field(default_factory=list)
    warnings: list[dict[str, object]] = field(default_factory=list)
    # Order of the last sync; the highest is the current revision.
    synced_seq: int = 0


@dataclass
class Event:
    deployment_id: str
    sequence: int
    type: EventType
    state: State
    phase: str = ""
    message: str = ""
    agent_id: str = ""
    attempt: int = 0
    time: float = 0.0


@dataclass
class Cluster:
    id: str
    environments: list[str]
    created_at: float = 0.0


@dataclass
class TokenRecord:
    id: str
    name: str
    role: Role
    secret_hash: str
    cluster: str = ""
    services: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    created_at: float = 0.0
    expires_at: float = 0.0  # 0: never
    revoked_at: float = 0.0  # 0: not revoked
    created_by: str = ""  # display name of the token that created it


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established by their token, and (for the audit log) where the
    call came from: the peer address and the request id the API layer saw."""

    token_id: str
    name: str
    role: Role
    cluster: str = ""
    services: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    expires_at: float = 0.0  # of the token; 0: never
    peer: str = ""
    request_id: str = ""


@dataclass
class AgentRecord:
    agent_id: str
    cluster: str
    version: str = ""
    capabilities: list[str] = field(default_factory=list)
    connected_at: float = 0.0
    last_seen_at: float = 0.0
    connected: bool = False
    leases: list[str] = field(default_factory=list)


@dataclass
class AuditEntry:
    time: float
    token_id: str
    token_name: str
    action: str
    target: str
    outcome: str  # "ok", or the status code of a refusal (INVALID_ARGUMENT, ...)
    detail: str = ""
    peer: str = ""
    request_id: str = ""
    service: str = ""
    seq: int = 0  # position in the log, assigned by the store


class CronRunOutcome(enum.IntEnum):
    # Values match sami.v1.CronRunOutcome.
    SUCCEEDED = 1
    FAILED = 2


@dataclass
class CronRun:
    """One run of a cron job, as reported by an agent (see core/cron_runs.py)."""

    run_id: str
    deployment_id: str
    service: str
    environment: str
    pull_request: int
    cluster: str
    stack: str
    job: str
    scheduled_for: float
    started_at: float
    finished_at: float
    outcome: CronRunOutcome
    exit_code: int | None = None
    message: str = ""
    schedule: str = ""
    agent_id: str = ""
    reported_at: float = 0.0
    seq: int = 0  # storage order, newest highest


@dataclass
class TargetLock:
    """A brake on deployments (`sami lock`): none to `environment` (every service, when
    `service` is "", else that service only) is created while it holds."""

    environment: str
    service: str
    reason: str
    holder: str  # the token's name
    holder_token: str  # the token's id: a deployer unlocks only the locks it took
    created_at: float
    expires_at: float = 0.0  # 0: until unlocked

    def live(self, now: float) -> bool:
        """Expired locks stop applying by themselves (the row stays until replaced)."""
        return not self.expires_at or now < self.expires_at

    def covers(self, service: str, environment: str) -> bool:
        return self.environment == environment and self.service in ("", service)

    @property
    def target(self) -> str:
        return f"{self.service or '*'}/{self.environment}"


@dataclass
class NotifyTarget:
    """Where outcomes are told (`sami notify add`): a webhook, a chat, or GitHub. `secret`
    (signing secret, chat or GitHub token) never leaves the control plane; `url` may hold
    one too (Telegram's bot token), so neither is ever shown whole (core/notifications.py)."""

    id: str
    name: str
    kind: str  # generic | slack | discord | telegram | github
    url: str
    secret: str = ""
    service: str = ""  # "": every service
    environment: str = ""  # "": every environment
    events: list[str] = field(default_factory=list)  # []: the kind's defaults
    created_by: str = ""
    created_at: float = 0.0


@dataclass
class Delivery:
    """One notification to send to one target: a row of the outbox, written in the
    transaction of the state change that causes it. `id` is its idempotency key."""

    id: str
    target_id: str
    target_name: str
    deployment_id: str
    sequence: int
    event: str  # succeeded, failed, … (core/notifications.py EVENTS)
    payload: str  # the JSON document of the event (docs/notifications.md)
    status: str = "pending"  # pending | delivered | dead
    attempts: int = 0
    next_attempt_at: float = 0.0
    # A sender claims a row until this time: another replica leaves it alone until then.
    claimed_until: float = 0.0
    claimed_by: str = ""
    status_code: int = 0
    last_error: str = ""
    created_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class LiveServiceState:
    """What one swarm service of a Sami target runs, as its cluster's agent last reported it,
    and whether that drifted from what Sami deployed (core/live_status.py, docs/status.md).
    One row per (cluster, stack_name, swarm_service); written only when it changes."""

    cluster: str
    stack_name: str
    swarm_service: str  # the service's name in its stack
    # The Sami target, from the deployment named by the service's label.
    service: str
    environment: str
    pull_request: int
    deployment_id: str
    label_digest: str
    image: str
    desired_replicas: int
    running_replicas: int
    unhealthy_tasks: int
    update_state: str
    update_message: str
    change_time: float
    outside_change: str
    removed: bool
    reported_at: float
    # Since when replicas are short or tasks unhealthy (0: they are not).
    degraded_since: float = 0.0
    # The replicas Sami deployed: the spec's when its deployment label was first seen (or
    # the count before a hand-made scale, when that is what was first seen); 0: unknown.
    deployed_replicas: int = 0
    # Why live differs from what Sami deployed ("" : it does not), and since when.
    drift_reason: str = ""
    drift_since: float = 0.0

    @property
    def target(self) -> str:
        pr = f" (PR {self.pull_request})" if self.pull_request else ""
        return f"{self.service}/{self.environment}{pr}: {self.swarm_service}"


@dataclass
class Recipient:
    """An age X25519 recipient (`age1…`) of a cluster: the secrets of the environments it
    serves are encrypted to every one of its recipients (core/secrets.py)."""

    cluster: str
    recipient: str
    agent_id: str = ""  # the agent whose Hello registered it; "": added by an admin
    added_by: str = ""
    added_at: float = 0.0
    last_seen_at: float = 0.0  # the last Hello that carried it (agents' keys only)
    label: str = ""


@dataclass
class SecretVersion:
    """One version of a secret of a service/environment: ciphertext only (age), made on the
    client for `recipients`. Versions are never changed, except the last one of a name
    being marked removed (`sami secret rm`): rollbacks still use the earlier ones."""

    service: str
    environment: str
    name: str
    version: int
    ciphertext: bytes
    recipients: list[str] = field(default_factory=list)
    set_by: str = ""
    set_at: float = 0.0
    removed_at: float = 0.0  # 0: not removed; else no longer given to new deployments

    @property
    def removed(self) -> bool:
        return bool(self.removed_at)


@dataclass
class Variable:
    """A value (not secret) that fills `${NAME}` in a service's stack files."""

    service: str
    environment: str
    name: str
    value: str
    set_by: str = ""
    set_at: float = 0.0
