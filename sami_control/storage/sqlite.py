"""SQLite storage: one file in the data folder, WAL mode.

Durability: `synchronous=FULL` so an acknowledged write survives not only kill -9 (which WAL
with NORMAL already survives) but also a power cut or kernel crash; it costs one fsync per
commit, which the benchmarks measure. Every write transaction is `BEGIN IMMEDIATE`, taking the
write lock up front so two writers never deadlock upgrading a read lock.

Group commit (the control plane; `group_commits()`): the transactions that run in one turn of
the event loop share one SQLite transaction and one fsync. Each is a SAVEPOINT inside it, so
one that fails rolls back alone. At the end of the turn a thread of the store's own runs the
COMMIT (sqlite3 releases the GIL during it), so the loop goes on serving calls meanwhile;
only once it returned are the batch's effects published (`after_commit`) and its callers
answered (`durable`). Callers wait for the committer (`writable`) before starting the next
batch, which thus gathers everything that arrived during the fsync: under load one fsync
carries many changes instead of each paying its own, and nothing is promised before it is on
disk. A batch that has written nothing holds only what is on disk already: its readers are
answered at once, and its COMMIT (which writes nothing, so no fsync) runs on the loop. A tx()
started while a COMMIT is in flight waits for it (blocking): correct, only slower. Without
group_commits() (offline commands, tests of the core) every `tx()` block commits when it
ends.

The connection is used from one thread at a time (the control plane's event loop, or an
offline CLI command). Other processes may open the same file: WAL lets them read while the
server writes, and busy_timeout makes a writer wait instead of failing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import operator
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import structlog

from sami_control.core.model import (
    AgentRecord,
    Artifact,
    ArtifactKind,
    AuditEntry,
    Cluster,
    CronRun,
    CronRunOutcome,
    Deployment,
    DeploymentAction,
    Event,
    EventType,
    ManifestRevision,
    Role,
    State,
    TokenRecord,
)
from sami_control.storage.base import Conflict, StorageFailed, Store, Tx

# Migrations are append-only: never edit one that has shipped, add the next.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, secret_hash TEXT NOT NULL,
        cluster TEXT NOT NULL, services TEXT NOT NULL, environments TEXT NOT NULL,
        created_at REAL NOT NULL, expires_at REAL NOT NULL, revoked_at REAL NOT NULL
    );
    CREATE TABLE clusters (id TEXT PRIMARY KEY, created_at REAL NOT NULL);
    CREATE TABLE cluster_environments (
        environment TEXT PRIMARY KEY, cluster TEXT NOT NULL REFERENCES clusters(id)
    );
    CREATE TABLE artifacts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        artifact_name TEXT NOT NULL, kind INTEGER NOT NULL, ref TEXT NOT NULL,
        digest TEXT NOT NULL, tags TEXT NOT NULL, git_repo TEXT NOT NULL,
        git_commit TEXT NOT NULL, ci_run_url TEXT NOT NULL, labels TEXT NOT NULL,
        created_at REAL NOT NULL, created_by TEXT NOT NULL,
        UNIQUE (artifact_name, digest)
    );
    CREATE INDEX artifacts_digest ON artifacts(digest);
    CREATE TABLE deployments (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        service TEXT NOT NULL, environment TEXT NOT NULL, pull_request INTEGER NOT NULL,
        artifact_id TEXT REFERENCES artifacts(id), cluster TEXT NOT NULL, action INTEGER NOT NULL,
        deployment_type TEXT NOT NULL, stack_name TEXT NOT NULL, state INTEGER NOT NULL,
        reason TEXT NOT NULL, request_id TEXT, request_hash TEXT NOT NULL,
        status_message TEXT NOT NULL, agent_id TEXT NOT NULL, attempt INTEGER NOT NULL,
        epoch INTEGER NOT NULL, lease_id TEXT NOT NULL, lease_expires REAL NOT NULL,
        agent_sequence INTEGER NOT NULL, last_sequence INTEGER NOT NULL,
        cancel_requested INTEGER NOT NULL, created_by TEXT NOT NULL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL NOT NULL,
        manifest_revision TEXT NOT NULL, converge_timeout REAL NOT NULL,
        stack_files TEXT NOT NULL, image_services TEXT NOT NULL,
        manifest_folder TEXT NOT NULL, manifest_settings TEXT NOT NULL
    );
    CREATE UNIQUE INDEX deployments_request_id ON deployments(request_id)
        WHERE request_id IS NOT NULL;
    CREATE INDEX deployments_state ON deployments(state, cluster);
    CREATE INDEX deployments_service ON deployments(service, environment);
    CREATE TABLE events (
        deployment_id TEXT NOT NULL, sequence INTEGER NOT NULL, type INTEGER NOT NULL,
        state INTEGER NOT NULL, phase TEXT NOT NULL, message TEXT NOT NULL,
        agent_id TEXT NOT NULL, attempt INTEGER NOT NULL, time REAL NOT NULL,
        PRIMARY KEY (deployment_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE agents (
        agent_id TEXT PRIMARY KEY, cluster TEXT NOT NULL, version TEXT NOT NULL,
        capabilities TEXT NOT NULL, connected_at REAL NOT NULL, last_seen_at REAL NOT NULL
    );
    CREATE TABLE manifest_revisions (
        id TEXT PRIMARY KEY, "commit" TEXT NOT NULL, created_at REAL NOT NULL,
        created_by TEXT NOT NULL, file_count INTEGER NOT NULL, entries TEXT NOT NULL,
        warnings TEXT NOT NULL, synced_seq INTEGER NOT NULL UNIQUE
    );
    CREATE TABLE manifest_files (
        revision_id TEXT NOT NULL REFERENCES manifest_revisions(id), path TEXT NOT NULL,
        content BLOB NOT NULL, PRIMARY KEY (revision_id, path)
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, token_id TEXT NOT NULL,
        token_name TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
        outcome TEXT NOT NULL, detail TEXT NOT NULL, peer TEXT NOT NULL
    );
    """,
    # 2: the audit log names the request and the service; tokens record who created them.
    """
    ALTER TABLE audit ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN service TEXT NOT NULL DEFAULT '';
    CREATE INDEX audit_time ON audit(time);
    CREATE INDEX audit_service ON audit(service, seq);
    ALTER TABLE tokens ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
    """,
    # 3: the runs of cron jobs, as agents report them (docs/cron.md).
    """
    CREATE TABLE cron_runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE,
        deployment_id TEXT NOT NULL REFERENCES deployments(id), service TEXT NOT NULL,
        environment TEXT NOT NULL, pull_request INTEGER NOT NULL, cluster TEXT NOT NULL,
        stack TEXT NOT NULL, job TEXT NOT NULL, scheduled_for REAL NOT NULL,
        started_at REAL NOT NULL, finished_at REAL NOT NULL, outcome INTEGER NOT NULL,
        exit_code INTEGER, message TEXT NOT NULL, schedule TEXT NOT NULL,
        agent_id TEXT NOT NULL, reported_at REAL NOT NULL
    );
    CREATE INDEX cron_runs_service ON cron_runs(service, environment, seq);
    """,
    # 4: finding the queued deployments of one service+environment+PR (to supersede them)
    # without reading every queued deployment.
    """
    CREATE INDEX deployments_key ON deployments(service, environment, pull_request, state);
    """,
]

_JSON_FIELDS = {
    "manifest_settings",
    "entries",
    "warnings",
    "stack_files",
    "image_services",
    "tags",
    "labels",
    "services",
    "environments",
    "capabilities",
}

T = TypeVar("T")

log = structlog.get_logger("sami.storage")

# One encoder for every JSON column: sorted keys, so equal values store equal text.
_json = json.JSONEncoder(sort_keys=True).encode


def _enc(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return _json(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in list(d):
        if k in _JSON_FIELDS:
            d[k] = json.loads(d[k])
    return d


# Deployments and events are the hot rows (every state change writes both, the dispatch
# reads the live ones): their SQL is built once and their rows are converted column by
# column by position, not through dicts.
_DEP_COLUMNS = tuple(f.name for f in dataclasses.fields(Deployment))
_DEP_INSERT_COLUMNS = tuple(c for c in _DEP_COLUMNS if c != "seq")
# Only these change after a deployment is created (transitions.py, leases, cancel); an
# update writes just them, so a state change does not re-encode the manifest it carries.
_DEP_MUTABLE = (
    "state",
    "status_message",
    "agent_id",
    "attempt",
    "epoch",
    "lease_id",
    "lease_expires",
    "agent_sequence",
    "last_sequence",
    "cancel_requested",
    "updated_at",
    "finished_at",
)
_DEP_SELECT = f"SELECT {', '.join(_DEP_COLUMNS)} FROM deployments"
_DEP_INSERT = (
    f"INSERT INTO deployments ({', '.join(_DEP_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_DEP_INSERT_COLUMNS))})"
)
_DEP_UPDATE = f"UPDATE deployments SET {', '.join(f'{c} = ?' for c in _DEP_MUTABLE)} WHERE id = ?"
_dep_insert_values = operator.attrgetter(*_DEP_INSERT_COLUMNS)
_dep_mutable_values = operator.attrgetter(*_DEP_MUTABLE)


def _none_if_empty(v: str) -> str | None:
    return v or None  # NULLs don't collide in the unique index, nor break the foreign key


def _empty_if_none(v: str | None) -> str:
    return v or ""


# Per column, what turns a Deployment's value into the stored one, and back (None: as is).
_DEP_ENCODE: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("stack_files", "image_services", "manifest_settings"), _json),
    "request_id": _none_if_empty,
    "artifact_id": _none_if_empty,
}
_DEP_DECODE: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("stack_files", "image_services", "manifest_settings"), json.loads),
    "request_id": _empty_if_none,
    "artifact_id": _empty_if_none,
    "cancel_requested": bool,
    "state": State,
    "action": DeploymentAction,
}
_DEP_INSERT_ENCODERS = tuple(_DEP_ENCODE.get(c) for c in _DEP_INSERT_COLUMNS)
_DEP_DECODERS = tuple(_DEP_DECODE.get(c) for c in _DEP_COLUMNS)


def _deployment(row: Sequence[Any]) -> Deployment:
    return Deployment(*[f(v) if f else v for f, v in zip(_DEP_DECODERS, row, strict=True)])


_EVENT_COLUMNS = tuple(f.name for f in dataclasses.fields(Event))
_EVENT_SELECT = f"SELECT {', '.join(_EVENT_COLUMNS)} FROM events"
_EVENT_INSERT = (
    f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_EVENT_COLUMNS))})"
)
_event_values = operator.attrgetter(*_EVENT_COLUMNS)


def _event(row: Sequence[Any]) -> Event:
    e = Event(*row)
    e.type = EventType(e.type)
    e.state = State(e.state)
    return e


_AUDIT_COLUMNS = tuple(f.name for f in dataclasses.fields(AuditEntry) if f.name != "seq")
_AUDIT_INSERT = (
    f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})"
)
_audit_values = operator.attrgetter(*_AUDIT_COLUMNS)


def _artifact(row: sqlite3.Row) -> Artifact:
    d = _row_dict(row)
    d.pop("seq", None)
    d["kind"] = ArtifactKind(d["kind"])
    return Artifact(**d)


def _token(row: sqlite3.Row) -> TokenRecord:
    d = _row_dict(row)
    d["role"] = Role(d["role"])
    return TokenRecord(**d)


def _cron_run(row: sqlite3.Row) -> CronRun:
    d = dict(row)
    d["outcome"] = CronRunOutcome(d["outcome"])
    return CronRun(**d)


class SQLiteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn

    # tokens
    def insert_token(self, t: TokenRecord) -> None:
        self._insert("tokens", dataclasses.asdict(t))

    def get_token(self, token_id: str) -> TokenRecord | None:
        row = self.c.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return _token(row) if row else None

    def list_tokens(self) -> list[TokenRecord]:
        return [_token(r) for r in self.c.execute("SELECT * FROM tokens ORDER BY created_at")]

    def revoke_token(self, token_id: str, at: float) -> bool:
        cur = self.c.execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0", (at, token_id)
        )
        return cur.rowcount == 1

    # clusters
    def insert_cluster(self, c: Cluster) -> None:
        self.c.execute("INSERT INTO clusters (id, created_at) VALUES (?, ?)", (c.id, c.created_at))
        self.c.executemany(
            "INSERT INTO cluster_environments (environment, cluster) VALUES (?, ?)",
            [(e, c.id) for e in c.environments],
        )

    def get_cluster(self, cluster_id: str) -> Cluster | None:
        row = self.c.execute("SELECT * FROM clusters WHERE id = ?", (cluster_id,)).fetchone()
        if not row:
            return None
        envs = [
            r[0]
            for r in self.c.execute(
                "SELECT environment FROM cluster_environments WHERE cluster = ? "
                "ORDER BY environment",
                (cluster_id,),
            )
        ]
        return Cluster(id=row["id"], environments=envs, created_at=row["created_at"])

    def list_clusters(self) -> list[Cluster]:
        ids = [r[0] for r in self.c.execute("SELECT id FROM clusters ORDER BY id")]
        return [c for i in ids if (c := self.get_cluster(i))]

    def cluster_for_environment(self, environment: str) -> str | None:
        row = self.c.execute(
            "SELECT cluster FROM cluster_environments WHERE environment = ?", (environment,)
        ).fetchone()
        return row[0] if row else None

    # artifacts
    def insert_artifact(self, a: Artifact) -> None:
        self._insert("artifacts", dataclasses.asdict(a))

    def get_artifact(self, artifact_id: str) -> Artifact | None:
        row = self.c.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        return _artifact(row) if row else None

    def find_artifact(self, artifact_name: str, digest: str) -> Artifact | None:
        row = self.c.execute(
            "SELECT * FROM artifacts WHERE artifact_name = ? AND digest = ?",
            (artifact_name, digest),
        ).fetchone()
        return _artifact(row) if row else None

    def find_artifacts_by_digest(self, digest: str) -> list[Artifact]:
        rows = self.c.execute("SELECT * FROM artifacts WHERE digest = ? ORDER BY seq", (digest,))
        return [_artifact(r) for r in rows]

    def list_artifacts(
        self, artifact_name: str, before_seq: int, limit: int
    ) -> list[tuple[int, Artifact]]:
        sql = "SELECT * FROM artifacts WHERE seq < ?"
        args: list[Any] = [before_seq]
        if artifact_name:
            sql += " AND artifact_name = ?"
            args.append(artifact_name)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [(r["seq"], _artifact(r)) for r in self.c.execute(sql, args)]

    # deployments
    def insert_deployment(self, d: Deployment) -> None:
        values = [
            f(v) if f else v
            for f, v in zip(_DEP_INSERT_ENCODERS, _dep_insert_values(d), strict=True)
        ]
        d.seq = self.c.execute(_DEP_INSERT, values).lastrowid or 0

    def update_deployment(self, d: Deployment) -> None:
        # cancel_requested goes in as is: sqlite3 stores a bool as the integer 0 or 1.
        self.c.execute(_DEP_UPDATE, (*_dep_mutable_values(d), d.id))

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        row = self.c.execute(_DEP_SELECT + " WHERE id = ?", (deployment_id,)).fetchone()
        return _deployment(row) if row else None

    def get_deployment_by_request_id(self, request_id: str) -> Deployment | None:
        row = self.c.execute(_DEP_SELECT + " WHERE request_id = ?", (request_id,)).fetchone()
        return _deployment(row) if row else None

    def list_deployments(
        self, service: str, environment: str, state: State | None, before_seq: int, limit: int
    ) -> list[Deployment]:
        sql = _DEP_SELECT + " WHERE seq < ?"
        args: list[Any] = [before_seq]
        for col, val in (("service", service), ("environment", environment)):
            if val:
                sql += f" AND {col} = ?"
                args.append(val)
        if state is not None:
            sql += " AND state = ?"
            args.append(int(state))
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [_deployment(r) for r in self.c.execute(sql, args)]

    def latest_for_key(
        self, service: str, environment: str, pull_request: int, cluster: str | None = None
    ) -> Deployment | None:
        sql = _DEP_SELECT + " WHERE service = ? AND environment = ? AND pull_request = ?"
        args: list[Any] = [service, environment, pull_request]
        if cluster is not None:
            sql += " AND cluster = ?"
            args.append(cluster)
        row = self.c.execute(sql + " ORDER BY seq DESC LIMIT 1", args).fetchone()
        return _deployment(row) if row else None

    def queued_of_key(self, service: str, environment: str, pull_request: int) -> list[Deployment]:
        rows = self.c.execute(
            _DEP_SELECT + " WHERE service = ? AND environment = ? "
            "AND pull_request = ? AND state = ? ORDER BY seq",
            (service, environment, pull_request, int(State.QUEUED)),
        )
        return [_deployment(r) for r in rows]

    def deployments_in_states(
        self, states: Sequence[State], cluster: str | None = None
    ) -> list[Deployment]:
        sql = _DEP_SELECT + f" WHERE state IN ({','.join('?' * len(states))})"
        args: list[Any] = [int(s) for s in states]
        if cluster is not None:
            sql += " AND cluster = ?"
            args.append(cluster)
        sql += " ORDER BY seq"
        return [_deployment(r) for r in self.c.execute(sql, args)]

    def active_keys(self) -> set[tuple[str, str, int]]:
        rows = self.c.execute(
            "SELECT service, environment, pull_request FROM deployments WHERE state IN (?, ?)",
            (int(State.ASSIGNED), int(State.IN_PROGRESS)),
        )
        return {(r[0], r[1], r[2]) for r in rows}

    # events
    def append_event(self, e: Event) -> None:
        self.c.execute(_EVENT_INSERT, _event_values(e))

    def events_after(self, deployment_id: str, after: int, limit: int) -> list[Event]:
        rows = self.c.execute(
            _EVENT_SELECT + " WHERE deployment_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (deployment_id, after, limit),
        )
        return [_event(r) for r in rows]

    # agents
    def upsert_agent(self, a: AgentRecord) -> None:
        row = {k: v for k, v in dataclasses.asdict(a).items() if k not in ("connected", "leases")}
        cols = list(row)
        self.c.execute(
            f"INSERT INTO agents ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT(agent_id) DO UPDATE SET "
            f"{', '.join(f'{c} = excluded.{c}' for c in cols if c != 'agent_id')}",
            [_enc(c, row[c]) for c in cols],
        )

    def list_agents(self, cluster: str) -> list[AgentRecord]:
        sql = "SELECT * FROM agents"
        args: list[Any] = []
        if cluster:
            sql += " WHERE cluster = ?"
            args.append(cluster)
        return [
            AgentRecord(**_row_dict(r)) for r in self.c.execute(sql + " ORDER BY agent_id", args)
        ]

    # manifests
    def insert_manifest_revision(self, rev: ManifestRevision, files: Mapping[str, bytes]) -> None:
        row = dataclasses.asdict(rev)
        cols = list(row)
        quoted = ", ".join(f'"{c}"' for c in cols)  # "commit" is an SQL keyword
        self.c.execute(
            f"INSERT INTO manifest_revisions ({quoted}) VALUES ({', '.join('?' * len(cols))})",
            [_enc(c, row[c]) for c in cols],
        )
        self.c.executemany(
            "INSERT INTO manifest_files (revision_id, path, content) VALUES (?, ?, ?)",
            [(rev.id, p, bytes(data)) for p, data in sorted(files.items())],
        )

    def next_synced_seq(self) -> int:
        row = self.c.execute("SELECT COALESCE(MAX(synced_seq), 0) + 1 FROM manifest_revisions")
        return int(row.fetchone()[0])

    def mark_revision_synced(self, revision_id: str, synced_seq: int) -> None:
        self.c.execute(
            "UPDATE manifest_revisions SET synced_seq = ? WHERE id = ?", (synced_seq, revision_id)
        )

    def get_manifest_revision(self, revision_id: str) -> ManifestRevision | None:
        row = self.c.execute(
            "SELECT * FROM manifest_revisions WHERE id = ?", (revision_id,)
        ).fetchone()
        return ManifestRevision(**_row_dict(row)) if row else None

    def current_manifest_revision_id(self) -> str | None:
        row = self.c.execute(
            "SELECT id FROM manifest_revisions ORDER BY synced_seq DESC LIMIT 1"
        ).fetchone()
        return str(row[0]) if row else None

    def current_manifest_revision(self) -> ManifestRevision | None:
        row = self.c.execute(
            "SELECT * FROM manifest_revisions ORDER BY synced_seq DESC LIMIT 1"
        ).fetchone()
        return ManifestRevision(**_row_dict(row)) if row else None

    def list_manifest_revisions(self, before_seq: int, limit: int) -> list[ManifestRevision]:
        rows = self.c.execute(
            "SELECT * FROM manifest_revisions WHERE synced_seq < ? "
            "ORDER BY synced_seq DESC LIMIT ?",
            (before_seq, limit),
        )
        return [ManifestRevision(**_row_dict(r)) for r in rows]

    def manifest_files(self, revision_id: str, prefix: str = "") -> dict[str, bytes]:
        rows = self.c.execute(
            "SELECT path, content FROM manifest_files WHERE revision_id = ? "
            "AND substr(path, 1, ?) = ? ORDER BY path",
            (revision_id, len(prefix), prefix),
        )
        return {r[0]: bytes(r[1]) for r in rows}

    # audit
    def append_audit(self, entry: AuditEntry) -> None:
        entry.seq = self.c.execute(_AUDIT_INSERT, _audit_values(entry)).lastrowid or 0

    def list_audit(
        self, since: float, limit: int, after_seq: int = 0, service: str = ""
    ) -> list[AuditEntry]:
        sql = "SELECT * FROM audit WHERE time >= ? AND seq > ?"
        args: list[Any] = [since, after_seq]
        if service:
            sql += " AND service = ?"
            args.append(service)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return [AuditEntry(**dict(r)) for r in self.c.execute(sql, args)]

    # cron runs
    def insert_cron_run(self, run: CronRun) -> None:
        row = dataclasses.asdict(run)
        row.pop("seq")  # assigned here
        row["outcome"] = int(run.outcome)
        run.seq = self._insert("cron_runs", row)

    def get_cron_run(self, run_id: str) -> CronRun | None:
        row = self.c.execute("SELECT * FROM cron_runs WHERE run_id = ?", (run_id,)).fetchone()
        return _cron_run(row) if row else None

    def list_cron_runs(
        self, service: str, environment: str, before_seq: int, limit: int
    ) -> list[CronRun]:
        sql = "SELECT * FROM cron_runs WHERE seq < ?"
        args: list[Any] = [before_seq]
        for col, val in (("service", service), ("environment", environment)):
            if val:
                sql += f" AND {col} = ?"
                args.append(val)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [_cron_run(r) for r in self.c.execute(sql, args)]

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        """Insert `row`; return its rowid."""
        cols = list(row)
        return (
            self.c.execute(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [_enc(c, row[c]) for c in cols],
            ).lastrowid
            or 0
        )


class _Batch:
    """The transactions of one turn of the event loop, committed together."""

    __slots__ = ("callbacks", "changes", "durable_waiters", "idle_waiters", "joined")

    def __init__(self, changes: int) -> None:
        # The connection's total_changes when the batch began: unchanged at its end, the
        # batch only read, and its COMMIT writes nothing (no fsync, no thread needed).
        self.changes = changes
        self.callbacks: list[Callable[[], None]] = []
        self.joined = 0
        # One future per waiting caller, rather than one shared future each waiter would
        # have to shield: a caller cancelled while it waits must not cancel the others.
        self.durable_waiters: list[asyncio.Future[None]] = []
        self.idle_waiters: list[asyncio.Future[None]] = []

    def wait(self, waiters: list[asyncio.Future[None]]) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        return waiter

    def done(self) -> None:
        for w in self.durable_waiters:
            if not w.done():
                w.set_result(None)
        self._release_idle()
        for fn in self.callbacks:
            try:
                fn()
            except Exception:  # one effect failing must not stop the others
                log.exception("after_commit_failed")

    def fail(self, exc: Exception) -> None:
        log.error("commit_failed", error=str(exc), transactions=self.joined)
        for w in self.durable_waiters:
            if not w.done():
                w.set_exception(exc)
        self._release_idle()

    def _release_idle(self) -> None:
        for w in self.idle_waiters:
            if not w.done():
                w.set_result(None)


class DataDirUnsafe(PermissionError):
    """The data folder can be read by other users, and this process cannot change that."""


def _make_private(data_dir: Path) -> None:
    """A data folder that exists with group or other permission bits (made by hand, or by a
    volume mount) is tightened to 0700: it holds the database (token hashes, manifests, the
    audit log). It is refused if this user may not change its mode (it is someone else's):
    silently serving from a folder others can read would break SECURITY.md's promise."""
    mode = data_dir.stat().st_mode & 0o777
    if not mode & 0o077:
        return
    try:
        os.chmod(data_dir, 0o700)
    except PermissionError:
        raise DataDirUnsafe(
            f"the data folder {data_dir} has mode {mode:04o}: other users may read it, and "
            f"this user (uid {os.geteuid()}) may not change that (the folder belongs to uid "
            f"{data_dir.stat().st_uid}). Run `chmod 700 {data_dir}` as its owner, or give it "
            "to the user that runs sami-control"
        ) from None
    log.warning("data_folder_tightened", path=str(data_dir), was=f"{mode:04o}", now="0700")


class SQLiteStore(Store):
    FILE_NAME = "sami.db"

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _make_private(self.data_dir)
        self.path = self.data_dir / self.FILE_NAME
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None
        self._failure_listeners: list[Callable[[StorageFailed], None]] = []
        # The batch whose COMMIT the committer thread runs now, and that job.
        self._committing: tuple[_Batch, concurrent.futures.Future[Any]] | None = None
        self._batch: _Batch | None = None
        # Commits made and transactions they carried (group commit): how well it groups.
        self.commits = 0
        self.batched = 0
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            "busy_timeout=30000",
            # After each checkpoint the WAL is cut back to this size, so it stays bounded
            # under load instead of keeping its high-water mark on disk.
            "journal_size_limit=67108864",
        ):
            self._conn.execute(f"PRAGMA {pragma}")
        os.chmod(self.path, 0o600)
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise RuntimeError(
                        f"{self.path} was written by a newer Sami (schema {version}); "
                        "upgrade sami-control"
                    )
                for i in range(version, len(MIGRATIONS)):
                    for stmt in MIGRATIONS[i].split(";"):
                        if stmt.strip():
                            self._conn.execute(stmt)
                self._conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA quick_check").fetchone()[0])

    def group_commits(self) -> None:
        """From now on transactions are grouped on the running event loop and committed
        by a thread of the store's own (module doc); every tx() must then run on that
        loop's thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._committer = concurrent.futures.ThreadPoolExecutor(1, "sami-commit")

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        if self._loop is None:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield SQLiteTx(self._conn)
                except sqlite3.IntegrityError as exc:
                    self._conn.execute("ROLLBACK")
                    raise Conflict(str(exc)) from exc
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            return
        if threading.get_ident() != self._loop_thread:
            raise RuntimeError("with group commits on, the store is used from its loop only")
        if self._committing is not None:
            # The connection is the committer thread's until its COMMIT returns. Callers
            # that can wait await writable() first; one that did not waits here.
            self._finish_commit(*self._committing)
        batch = self._batch or self._open_batch()
        batch.joined += 1
        self._conn.execute("SAVEPOINT tx")
        try:
            yield SQLiteTx(self._conn)
        except BaseException as exc:
            self._undo(batch)
            if isinstance(exc, sqlite3.IntegrityError):
                raise Conflict(str(exc)) from exc
            raise
        self._conn.execute("RELEASE tx")

    async def writable(self) -> None:
        """Wait (without blocking the loop) while a commit is in flight: a tx() started
        meanwhile would wait for it blocking the loop."""
        while self._committing is not None:
            batch = self._committing[0]
            await batch.wait(batch.idle_waiters)

    def _open_batch(self) -> _Batch:
        assert self._loop is not None
        self._conn.execute("BEGIN IMMEDIATE")
        batch = self._batch = _Batch(self._conn.total_changes)
        self._loop.call_soon(self._commit)
        return batch

    def _undo(self, batch: _Batch) -> None:
        """Roll back the innermost transaction alone, or, if SQLite already rolled back the
        whole batch (it does on SQLITE_FULL, IOERR, NOMEM), fail the batch."""
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK TO tx")
                self._conn.execute("RELEASE tx")
                return
        self._fail(batch, sqlite3.OperationalError("the transaction was rolled back"))

    def _commit(self) -> None:
        """End of the loop's turn: COMMIT the batch in the committer thread (sqlite3 lets
        the GIL go meanwhile), so the loop serves calls during the fsync; the calls that
        arrive then make the next batch. Without group commits (close()), here."""
        batch = self._batch
        if batch is None:
            return  # failed and dropped already
        self._batch = None
        if (
            self._committer is None
            or self._loop is None
            or self._conn.total_changes == batch.changes
        ):
            # Also a batch that only read: its COMMIT just ends the transaction.
            try:
                self._conn.execute("COMMIT")
            except Exception as exc:
                self._fail(batch, exc)
                return
            self._committed(batch)
            return
        loop = self._loop
        job = self._committer.submit(self._run_commit)
        self._committing = (batch, job)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finish_commit, batch, job))

    def _run_commit(self) -> None:
        """In the committer thread."""
        self._conn.execute("COMMIT")

    def _finish_commit(self, batch: _Batch, job: concurrent.futures.Future[Any]) -> None:
        """On the loop: once the COMMIT returned (waiting for it if it has not)."""
        if self._committing is None or self._committing[0] is not batch:
            return  # finished already (a tx() waited for it)
        exc = job.exception()  # blocks until the job is done
        self._committing = None
        if exc is not None:
            self._fail(batch, exc)
        else:
            self._committed(batch)

    def _committed(self, batch: _Batch) -> None:
        self.commits += 1
        self.batched += batch.joined
        batch.done()

    def _fail(self, batch: _Batch, exc: BaseException) -> None:
        if self._batch is batch:
            self._batch = None
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        failed = StorageFailed(
            f"the database {self.path} could not store the change ({exc}); nothing of it "
            "was kept: fix the cause (disk space, permissions) and retry"
        )
        batch.fail(failed)
        for fn in self._failure_listeners:
            try:
                fn(failed)
            except Exception:  # one listener failing must not stop the others
                log.exception("failure_listener_failed")

    def on_failure(self, fn: Callable[[StorageFailed], None]) -> None:
        self._failure_listeners.append(fn)

    def _pending(self) -> _Batch | None:
        """The batch that holds the last write: the open one, else the one committing."""
        if self._batch is not None:
            return self._batch
        return self._committing[0] if self._committing is not None else None

    def after_commit(self, fn: Callable[[], None]) -> None:
        pending = self._pending()
        if pending is None:
            fn()
        else:
            pending.callbacks.append(fn)

    async def durable(self) -> None:
        # Batches commit one after the other: the last one durable, all are. An open batch
        # that has written nothing yet holds nothing a reader could have seen.
        pending = self._pending()
        if pending is None:
            return
        if pending is self._batch and self._conn.total_changes == pending.changes:
            return
        await pending.wait(pending.durable_waiters)

    def close(self) -> None:
        with self._lock:
            if self._committing is not None:
                self._finish_commit(*self._committing)
            committer, self._committer = self._committer, None
            if committer is not None:
                committer.shutdown()
            self._commit()  # what the last turn of the loop wrote, here
            self._conn.close()
