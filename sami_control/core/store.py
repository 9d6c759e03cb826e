"""The storage interface. Every method runs inside a transaction (`Store.tx()`): the core
composes several reads and writes and they commit together or not at all, which is how a
rejected request writes nothing and an event is durable before it is published."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from sami_control.core.bus import Bus, LocalBus
from sami_control.core.model import (
    AgentRecord,
    Artifact,
    AuditEntry,
    Cluster,
    CronRun,
    Delivery,
    Deployment,
    Event,
    LiveServiceState,
    ManifestRevision,
    NotifyTarget,
    Recipient,
    SecretVersion,
    State,
    TargetLock,
    TokenRecord,
    Variable,
)


class StorageFailed(Exception):
    """A commit failed (disk full, I/O error): nothing of the transactions it carried was
    stored. Raised to every caller that waits for that commit (Store.durable)."""


class Conflict(Exception):
    """A write broke a uniqueness rule (same id, same request_id, same event sequence).
    Backends translate their own integrity errors into this one."""


class Tx(abc.ABC):
    """One transaction's reads and writes. Every method is a coroutine: a backend on a
    server (PostgreSQL) waits for the database without blocking the event loop. SQLite's
    never suspends (the file is local), which is what lets its group commit share one
    transaction among all the blocks of one loop turn."""

    @abc.abstractmethod
    async def lock(self, name: str) -> None:
        """Hold an exclusive lock named `name` until this transaction ends. Several
        control-plane replicas write one database: the core takes a name's lock before it
        reads what it is about to change (a service+environment+PR before queueing or
        dispatching on it, a deployment before moving it), so that two replicas doing the
        same thing at once do it one after the other. Order: a key's lock before any of its
        deployments' locks, never the other way (no deadlocks). A backend with one writer
        at a time (SQLite) has nothing to do."""

    # tokens
    @abc.abstractmethod
    async def insert_token(self, t: TokenRecord) -> None: ...
    @abc.abstractmethod
    async def get_token(self, token_id: str) -> TokenRecord | None: ...
    @abc.abstractmethod
    async def list_tokens(self) -> list[TokenRecord]: ...
    @abc.abstractmethod
    async def revoke_token(self, token_id: str, at: float) -> bool: ...

    # clusters
    @abc.abstractmethod
    async def insert_cluster(self, c: Cluster) -> None: ...
    @abc.abstractmethod
    async def get_cluster(self, cluster_id: str) -> Cluster | None: ...
    @abc.abstractmethod
    async def list_clusters(self) -> list[Cluster]: ...
    @abc.abstractmethod
    async def cluster_for_environment(self, environment: str) -> str | None: ...
    @abc.abstractmethod
    async def set_cluster_environments(self, cluster_id: str, environments: Sequence[str]) -> None:
        """The environments the cluster serves, all of them (the others are dropped)."""

    # artifacts
    @abc.abstractmethod
    async def insert_artifact(self, a: Artifact) -> None: ...
    @abc.abstractmethod
    async def get_artifact(self, artifact_id: str) -> Artifact | None: ...
    @abc.abstractmethod
    async def find_artifact(self, artifact_name: str, digest: str) -> Artifact | None: ...
    @abc.abstractmethod
    async def find_artifacts_by_digest(self, digest: str) -> list[Artifact]: ...
    @abc.abstractmethod
    async def list_artifacts(
        self, artifact_name: str, before_seq: int, limit: int
    ) -> list[tuple[int, Artifact]]: ...

    # deployments
    @abc.abstractmethod
    async def insert_deployment(self, d: Deployment) -> None: ...
    @abc.abstractmethod
    async def update_deployment(self, d: Deployment) -> None: ...
    @abc.abstractmethod
    async def get_deployment(self, deployment_id: str) -> Deployment | None: ...
    @abc.abstractmethod
    async def get_deployment_by_request_id(
        self, token_id: str, request_id: str
    ) -> Deployment | None:
        """The deployment the token `token_id` asked for with this idempotency key."""

    @abc.abstractmethod
    async def list_deployments(
        self,
        service: str,
        environment: str,
        state: State | None,
        before_seq: int,
        limit: int,
    ) -> list[Deployment]: ...
    @abc.abstractmethod
    async def latest_for_key(
        self, service: str, environment: str, pull_request: int, cluster: str | None = None
    ) -> Deployment | None:
        """The newest deployment of service+environment+PR (any state, any action)."""

    @abc.abstractmethod
    async def latest_previews(self, service: str) -> list[Deployment]:
        """The newest deployment of each pull request of `service` (environment
        pull_request), oldest first."""

    @abc.abstractmethod
    async def queued_of_key(
        self, service: str, environment: str, pull_request: int
    ) -> list[Deployment]:
        """The QUEUED deployments of one service+environment+PR, oldest first."""

    @abc.abstractmethod
    async def deployments_in_states(
        self, states: Sequence[State], cluster: str | None = None
    ) -> list[Deployment]:
        """Oldest first."""

    @abc.abstractmethod
    async def key_busy(self, service: str, environment: str, pull_request: int) -> bool:
        """Whether a deployment of service+environment+PR is ASSIGNED or IN_PROGRESS now
        (read fresh under the key's lock: another replica may just have dispatched)."""

    @abc.abstractmethod
    async def active_keys(self) -> set[tuple[str, str, int]]:
        """(service, environment, pull_request) of every ASSIGNED or IN_PROGRESS one."""

    @abc.abstractmethod
    async def finished_deploys_of_key(
        self, service: str, environment: str, pull_request: int, limit: int
    ) -> list[Deployment]:
        """The newest `limit` deploys (action DEPLOY) of service+environment+PR that ended
        SUCCEEDED, FAILED or ROLLED_BACK, newest first (what quarantine is decided on)."""

    # target locks (`sami lock`), one row per (environment, service); service "" is the
    # whole environment
    @abc.abstractmethod
    async def put_target_lock(self, lock: TargetLock) -> None:
        """Store `lock`, replacing any row of its (environment, service)."""

    @abc.abstractmethod
    async def get_target_lock(self, environment: str, service: str) -> TargetLock | None:
        """The row of (environment, service), expired or not."""

    @abc.abstractmethod
    async def delete_target_lock(self, environment: str, service: str) -> bool:
        """Remove the row; False if there was none."""

    @abc.abstractmethod
    async def list_target_locks(self, environment: str = "") -> list[TargetLock]:
        """Every row (of `environment`, if given), expired ones included, oldest first."""

    # live status (core/live_status.py), one row per (cluster, stack_name, swarm_service)
    @abc.abstractmethod
    async def put_live_service(self, row: LiveServiceState) -> None:
        """Store `row`, replacing the row of its service."""

    @abc.abstractmethod
    async def delete_live_service(self, cluster: str, stack_name: str, swarm_service: str) -> None:
        """Forget a service (one Sami removed on purpose, e.g. a torn-down preview)."""

    @abc.abstractmethod
    async def list_live_services(self, cluster: str = "") -> list[LiveServiceState]:
        """Every row (of `cluster`, if given), by cluster, stack, service."""

    @abc.abstractmethod
    async def get_live_service(
        self, cluster: str, stack_name: str, swarm_service: str
    ) -> LiveServiceState | None:
        """One service's row (a report of a few changed services reads only theirs)."""

    @abc.abstractmethod
    async def put_live_report_time(self, cluster: str, reported_at: float) -> None:
        """When the cluster's agent last sent a full live status report."""

    @abc.abstractmethod
    async def live_report_times(self) -> dict[str, float]:
        """The time of each cluster's last full live status report."""

    # events
    @abc.abstractmethod
    async def append_event(self, e: Event) -> None: ...
    @abc.abstractmethod
    async def events_after(self, deployment_id: str, after: int, limit: int) -> list[Event]: ...

    # agents
    @abc.abstractmethod
    async def upsert_agent(self, a: AgentRecord) -> None: ...
    @abc.abstractmethod
    async def list_agents(self, cluster: str) -> list[AgentRecord]: ...
    @abc.abstractmethod
    async def delete_agent(self, cluster: str, agent_id: str) -> bool:
        """Forget an agent's record; False if there was none."""

    # manifest revisions (immutable once stored)
    @abc.abstractmethod
    async def insert_manifest_revision(
        self, rev: ManifestRevision, files: Mapping[str, bytes]
    ) -> None: ...
    @abc.abstractmethod
    async def next_synced_seq(self) -> int: ...
    @abc.abstractmethod
    async def mark_revision_synced(self, revision_id: str, synced_seq: int) -> None: ...
    @abc.abstractmethod
    async def get_manifest_revision(self, revision_id: str) -> ManifestRevision | None: ...
    @abc.abstractmethod
    async def current_manifest_revision_id(self) -> str | None: ...
    @abc.abstractmethod
    async def current_manifest_revision(self) -> ManifestRevision | None: ...
    @abc.abstractmethod
    async def list_manifest_revisions(
        self, before_seq: int, limit: int
    ) -> list[ManifestRevision]: ...
    @abc.abstractmethod
    async def manifest_files(self, revision_id: str, prefix: str = "") -> dict[str, bytes]:
        """Files of a revision whose path starts with prefix, by full path."""

    # audit
    @abc.abstractmethod
    async def append_audit(self, entry: AuditEntry) -> None: ...
    @abc.abstractmethod
    async def list_audit(
        self, since: float, limit: int, after_seq: int = 0, service: str = ""
    ) -> list[AuditEntry]:
        """Entries at or after `since` and after position `after_seq`, oldest first."""

    @abc.abstractmethod
    async def list_audit_actions(
        self, service: str, actions: Sequence[str], limit: int
    ) -> list[AuditEntry]:
        """The newest `limit` entries of `service` whose action is one of `actions`, newest
        (highest seq) first."""

    # cron runs (written once, never changed)
    @abc.abstractmethod
    async def insert_cron_run(self, run: CronRun) -> None: ...
    @abc.abstractmethod
    async def get_cron_run(self, run_id: str) -> CronRun | None: ...
    @abc.abstractmethod
    async def list_cron_runs(
        self, service: str, environment: str, before_seq: int, limit: int
    ) -> list[CronRun]:
        """Newest (highest seq) first."""

    # notifications (core/notifications.py): targets, and the outbox of deliveries
    @abc.abstractmethod
    async def insert_notify_target(self, t: NotifyTarget) -> None: ...
    @abc.abstractmethod
    async def list_notify_targets(self) -> list[NotifyTarget]:
        """Every target, by name."""

    @abc.abstractmethod
    async def delete_notify_target(self, name: str) -> bool:
        """Remove the target and its deliveries still pending; False if there was none."""

    @abc.abstractmethod
    async def insert_delivery(self, d: Delivery) -> None: ...
    @abc.abstractmethod
    async def claim_deliveries(
        self, now: float, owner: str, until: float, limit: int
    ) -> list[Delivery]:
        """Claim (claimed_by=owner, claimed_until=until) up to `limit` pending deliveries
        due at `now` and claimed by nobody (or by a claim that ran out), oldest first, each
        the oldest pending one of its target+deployment (they are sent in order). Rows
        another transaction is claiming are skipped, not waited for: two replicas never
        claim one row."""

    @abc.abstractmethod
    async def finish_attempt(self, d: Delivery, owner: str) -> bool:
        """Store the outcome of an attempt (status, attempts, next_attempt_at, status_code,
        last_error, finished_at) and release the claim, if `owner` still holds it."""

    @abc.abstractmethod
    async def list_deliveries(self, target_name: str, limit: int) -> list[Delivery]:
        """The newest deliveries (of one target, if given), newest first."""

    @abc.abstractmethod
    async def prune_deliveries(self, before: float, limit: int) -> int:
        """Delete up to `limit` deliveries delivered or dead before `before`; how many."""

    @abc.abstractmethod
    async def get_notify_ref(self, target_id: str, deployment_id: str) -> str:
        """What a target's receiver called this deployment (GitHub's deployment id); ""."""

    @abc.abstractmethod
    async def put_notify_ref(self, target_id: str, deployment_id: str, ref: str) -> None: ...

    # secrets and variables (core/secrets.py); a cluster's age recipients
    @abc.abstractmethod
    async def put_recipient(self, r: Recipient) -> None:
        """Store `r`, replacing the row of its (cluster, recipient)."""

    @abc.abstractmethod
    async def get_recipient(self, cluster: str, recipient: str) -> Recipient | None: ...
    @abc.abstractmethod
    async def list_recipients(self, cluster: str = "") -> list[Recipient]:
        """Every recipient (of `cluster`, if given), by cluster, recipient."""

    @abc.abstractmethod
    async def delete_recipient(self, cluster: str, recipient: str) -> bool:
        """Remove the row; False if there was none."""

    @abc.abstractmethod
    async def insert_secret_version(self, v: SecretVersion) -> None:
        """Store a new version; Conflict if (service, environment, name, version) exists."""

    @abc.abstractmethod
    async def latest_secrets(
        self, service: str = "", environment: str = "", *, ciphertexts: bool = False
    ) -> list[SecretVersion]:
        """The newest version of each secret name, removed ones included (of `service`,
        `environment`, if given), by service, environment, name. Their ciphertexts (up to
        720 KiB each) only when asked: most callers want names and versions (every
        CreateDeployment records them); the others get b"" ."""

    @abc.abstractmethod
    async def get_secret_versions(
        self, service: str, environment: str, versions: Mapping[str, int]
    ) -> list[SecretVersion]:
        """The versions named (name → version) that exist, by name."""

    @abc.abstractmethod
    async def mark_secret_removed(
        self, service: str, environment: str, name: str, version: int, at: float
    ) -> None: ...
    @abc.abstractmethod
    async def put_variable(self, v: Variable) -> None:
        """Store `v`, replacing the value of its (service, environment, name)."""

    @abc.abstractmethod
    async def list_variables(self, service: str = "", environment: str = "") -> list[Variable]:
        """Every variable (of `service`, `environment`, if given), by service, environment,
        name."""

    @abc.abstractmethod
    async def delete_variable(self, service: str, environment: str, name: str) -> bool:
        """Remove the variable; False if there was none."""


class Store(abc.ABC):
    # Which backend this is (ServerInfo.store, the logs).
    kind = ""

    @abc.abstractmethod
    def tx(self) -> AbstractAsyncContextManager[Tx]:
        """A read-write transaction (`async with store.tx() as tx:`): commits on normal
        exit, rolls back on an exception."""

    def make_bus(self) -> Bus:
        """The bus between the replicas that share this store (core/bus.py): none for a
        store only one process serves."""
        return LocalBus()

    async def open(self) -> None:
        """Connect and bring the schema up to date (migrations). Called once before the
        first tx()."""
        return None

    @abc.abstractmethod
    async def close(self) -> None: ...

    # Group commit (see SQLiteStore): a store may let a transaction's block end before its
    # commit is durable, and commit several together. These two say when it is. A store
    # that commits at the end of every block (the default) is durable at once.

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run `fn` once everything written so far is durable (never, if that commit
        fails): publishing what a transaction did waits for it to be stored."""
        fn()

    def on_failure(self, fn: Callable[[StorageFailed], None]) -> None:
        """Call `fn` whenever a commit fails after the blocks that wrote it had ended (with
        group commits): their writers saw no error, and may need telling. A store that
        commits at the end of every block raises there instead, and never calls `fn`."""
        return None

    async def writable(self) -> None:
        """Return when a transaction can start without blocking the event loop (a store
        that commits in a thread of its own has the connection while it does)."""
        return None

    async def durable(self) -> None:
        """Return once everything written so far is durable; raise StorageFailed if the
        commit carrying it failed. A reply must not promise what a crash could undo."""
        return None

    async def iter_events(
        self, deployment_id: str, after: int, page: int = 500
    ) -> AsyncIterator[Event]:
        while True:
            async with self.tx() as tx:
                batch = await tx.events_after(deployment_id, after, page)
            for e in batch:
                yield e
            if len(batch) < page:
                return
            after = batch[-1].sequence
