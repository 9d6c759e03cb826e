"""SQLite rows ↔ the core's data, and the queries of one transaction (`SQLiteTx`, the
core's `Tx` interface on a sqlite3 connection). SQLiteStore (sqlite.py) hands one out per
`tx()` block."""

from __future__ import annotations

import dataclasses
import json
import operator
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
    ManifestSettings,
    Role,
    State,
    TokenRecord,
)
from sami_control.core.store import Tx
from sami_control.storage.sqlite_live import SQLiteLiveQueries
from sami_control.storage.sqlite_notify import SQLiteNotifyQueries
from sami_control.storage.sqlite_safety import SQLiteSafetyQueries
from sami_control.storage.sqlite_secrets import SQLiteSecretQueries

_JSON_FIELDS = {
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
    **dict.fromkeys(("stack_files", "image_services", "secrets", "variables"), _json),
    "manifest_settings": lambda m: _json(dataclasses.asdict(m)),
    "request_id": _none_if_empty,
    "artifact_id": _none_if_empty,
}
_DEP_DECODE: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("stack_files", "image_services", "secrets", "variables"), json.loads),
    "manifest_settings": lambda text: _settings(json.loads(text)),
    "request_id": _empty_if_none,
    "artifact_id": _empty_if_none,
    "cancel_requested": bool,
    "state": State,
    "action": DeploymentAction,
}
_DEP_INSERT_ENCODERS = tuple(_DEP_ENCODE.get(c) for c in _DEP_INSERT_COLUMNS)
_DEP_DECODERS = tuple(_DEP_DECODE.get(c) for c in _DEP_COLUMNS)


_SETTINGS = frozenset(f.name for f in dataclasses.fields(ManifestSettings))


def _settings(stored: dict[str, Any]) -> ManifestSettings:
    # Rows written before a setting existed lack it: its default applies.
    return ManifestSettings(**{k: v for k, v in stored.items() if k in _SETTINGS})


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


class SQLiteTx(
    SQLiteSafetyQueries, SQLiteNotifyQueries, SQLiteLiveQueries, SQLiteSecretQueries, Tx
):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn

    def _select_deployments(self, where: str, args: Sequence[Any]) -> list[Deployment]:
        return [_deployment(r) for r in self.c.execute(_DEP_SELECT + where, args)]

    async def lock(self, name: str) -> None:
        """Nothing to do: every write transaction is BEGIN IMMEDIATE, so one writer at a
        time holds the whole file."""

    # tokens
    async def insert_token(self, t: TokenRecord) -> None:
        self._insert("tokens", dataclasses.asdict(t))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        row = self.c.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return _token(row) if row else None

    async def list_tokens(self) -> list[TokenRecord]:
        return [_token(r) for r in self.c.execute("SELECT * FROM tokens ORDER BY created_at")]

    async def revoke_token(self, token_id: str, at: float) -> bool:
        cur = self.c.execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0", (at, token_id)
        )
        return cur.rowcount == 1

    # clusters
    async def insert_cluster(self, c: Cluster) -> None:
        self.c.execute("INSERT INTO clusters (id, created_at) VALUES (?, ?)", (c.id, c.created_at))
        self.c.executemany(
            "INSERT INTO cluster_environments (environment, cluster) VALUES (?, ?)",
            [(e, c.id) for e in c.environments],
        )

    async def get_cluster(self, cluster_id: str) -> Cluster | None:
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

    async def list_clusters(self) -> list[Cluster]:
        ids = [r[0] for r in self.c.execute("SELECT id FROM clusters ORDER BY id")]
        return [c for i in ids if (c := await self.get_cluster(i))]

    async def set_cluster_environments(self, cluster_id: str, environments: Sequence[str]) -> None:
        self.c.execute("DELETE FROM cluster_environments WHERE cluster = ?", (cluster_id,))
        self.c.executemany(
            "INSERT INTO cluster_environments (environment, cluster) VALUES (?, ?)",
            [(e, cluster_id) for e in environments],
        )

    async def cluster_for_environment(self, environment: str) -> str | None:
        row = self.c.execute(
            "SELECT cluster FROM cluster_environments WHERE environment = ?", (environment,)
        ).fetchone()
        return row[0] if row else None

    # artifacts
    async def insert_artifact(self, a: Artifact) -> None:
        self._insert("artifacts", dataclasses.asdict(a))

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        row = self.c.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        return _artifact(row) if row else None

    async def find_artifact(self, artifact_name: str, digest: str) -> Artifact | None:
        row = self.c.execute(
            "SELECT * FROM artifacts WHERE artifact_name = ? AND digest = ?",
            (artifact_name, digest),
        ).fetchone()
        return _artifact(row) if row else None

    async def find_artifacts_by_digest(self, digest: str) -> list[Artifact]:
        rows = self.c.execute("SELECT * FROM artifacts WHERE digest = ? ORDER BY seq", (digest,))
        return [_artifact(r) for r in rows]

    async def list_artifacts(
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
    async def insert_deployment(self, d: Deployment) -> None:
        values = [
            f(v) if f else v
            for f, v in zip(_DEP_INSERT_ENCODERS, _dep_insert_values(d), strict=True)
        ]
        d.seq = self.c.execute(_DEP_INSERT, values).lastrowid or 0

    async def update_deployment(self, d: Deployment) -> None:
        # cancel_requested goes in as is: sqlite3 stores a bool as the integer 0 or 1.
        self.c.execute(_DEP_UPDATE, (*_dep_mutable_values(d), d.id))

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        row = self.c.execute(_DEP_SELECT + " WHERE id = ?", (deployment_id,)).fetchone()
        return _deployment(row) if row else None

    async def get_deployment_by_request_id(
        self, token_id: str, request_id: str
    ) -> Deployment | None:
        row = self.c.execute(
            _DEP_SELECT + " WHERE created_by_token = ? AND request_id = ?", (token_id, request_id)
        ).fetchone()
        return _deployment(row) if row else None

    async def list_deployments(
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

    async def latest_for_key(
        self, service: str, environment: str, pull_request: int, cluster: str | None = None
    ) -> Deployment | None:
        sql = _DEP_SELECT + " WHERE service = ? AND environment = ? AND pull_request = ?"
        args: list[Any] = [service, environment, pull_request]
        if cluster is not None:
            sql += " AND cluster = ?"
            args.append(cluster)
        row = self.c.execute(sql + " ORDER BY seq DESC LIMIT 1", args).fetchone()
        return _deployment(row) if row else None

    async def latest_previews(self, service: str) -> list[Deployment]:
        rows = self.c.execute(
            _DEP_SELECT + " WHERE seq IN (SELECT max(seq) FROM deployments"
            " WHERE service = ? AND environment = 'pull_request' GROUP BY pull_request)"
            " ORDER BY seq",
            (service,),
        )
        return [_deployment(r) for r in rows]

    async def queued_of_key(
        self, service: str, environment: str, pull_request: int
    ) -> list[Deployment]:
        rows = self.c.execute(
            _DEP_SELECT + " WHERE service = ? AND environment = ? "
            "AND pull_request = ? AND state = ? ORDER BY seq",
            (service, environment, pull_request, int(State.QUEUED)),
        )
        return [_deployment(r) for r in rows]

    async def deployments_in_states(
        self, states: Sequence[State], cluster: str | None = None
    ) -> list[Deployment]:
        sql = _DEP_SELECT + f" WHERE state IN ({','.join('?' * len(states))})"
        args: list[Any] = [int(s) for s in states]
        if cluster is not None:
            sql += " AND cluster = ?"
            args.append(cluster)
        sql += " ORDER BY seq"
        return [_deployment(r) for r in self.c.execute(sql, args)]

    async def key_busy(self, service: str, environment: str, pull_request: int) -> bool:
        row = self.c.execute(
            "SELECT 1 FROM deployments WHERE service = ? AND environment = ? "
            "AND pull_request = ? AND state IN (?, ?) LIMIT 1",
            (service, environment, pull_request, int(State.ASSIGNED), int(State.IN_PROGRESS)),
        ).fetchone()
        return row is not None

    async def active_keys(self) -> set[tuple[str, str, int]]:
        rows = self.c.execute(
            "SELECT service, environment, pull_request FROM deployments WHERE state IN (?, ?)",
            (int(State.ASSIGNED), int(State.IN_PROGRESS)),
        )
        return {(r[0], r[1], r[2]) for r in rows}

    # events
    async def append_event(self, e: Event) -> None:
        self.c.execute(_EVENT_INSERT, _event_values(e))

    async def events_after(self, deployment_id: str, after: int, limit: int) -> list[Event]:
        rows = self.c.execute(
            _EVENT_SELECT + " WHERE deployment_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (deployment_id, after, limit),
        )
        return [_event(r) for r in rows]

    # agents
    async def upsert_agent(self, a: AgentRecord) -> None:
        row = {k: v for k, v in dataclasses.asdict(a).items() if k not in ("connected", "leases")}
        cols = list(row)
        self.c.execute(
            f"INSERT INTO agents ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT(cluster, agent_id) DO UPDATE SET "
            f"{', '.join(f'{c} = excluded.{c}' for c in cols if c not in ('agent_id', 'cluster'))}",
            [_enc(c, row[c]) for c in cols],
        )

    async def list_agents(self, cluster: str) -> list[AgentRecord]:
        sql = "SELECT * FROM agents"
        args: list[Any] = []
        if cluster:
            sql += " WHERE cluster = ?"
            args.append(cluster)
        return [
            AgentRecord(**_row_dict(r))
            for r in self.c.execute(sql + " ORDER BY agent_id, cluster", args)
        ]

    async def delete_agent(self, cluster: str, agent_id: str) -> bool:
        cur = self.c.execute(
            "DELETE FROM agents WHERE cluster = ? AND agent_id = ?", (cluster, agent_id)
        )
        return cur.rowcount == 1

    # manifests
    async def insert_manifest_revision(
        self, rev: ManifestRevision, files: Mapping[str, bytes]
    ) -> None:
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

    async def next_synced_seq(self) -> int:
        row = self.c.execute("SELECT COALESCE(MAX(synced_seq), 0) + 1 FROM manifest_revisions")
        return int(row.fetchone()[0])

    async def mark_revision_synced(self, revision_id: str, synced_seq: int) -> None:
        self.c.execute(
            "UPDATE manifest_revisions SET synced_seq = ? WHERE id = ?", (synced_seq, revision_id)
        )

    async def get_manifest_revision(self, revision_id: str) -> ManifestRevision | None:
        row = self.c.execute(
            "SELECT * FROM manifest_revisions WHERE id = ?", (revision_id,)
        ).fetchone()
        return ManifestRevision(**_row_dict(row)) if row else None

    async def current_manifest_revision_id(self) -> str | None:
        row = self.c.execute(
            "SELECT id FROM manifest_revisions ORDER BY synced_seq DESC LIMIT 1"
        ).fetchone()
        return str(row[0]) if row else None

    async def current_manifest_revision(self) -> ManifestRevision | None:
        row = self.c.execute(
            "SELECT * FROM manifest_revisions ORDER BY synced_seq DESC LIMIT 1"
        ).fetchone()
        return ManifestRevision(**_row_dict(row)) if row else None

    async def list_manifest_revisions(self, before_seq: int, limit: int) -> list[ManifestRevision]:
        rows = self.c.execute(
            "SELECT * FROM manifest_revisions WHERE synced_seq < ? "
            "ORDER BY synced_seq DESC LIMIT ?",
            (before_seq, limit),
        )
        return [ManifestRevision(**_row_dict(r)) for r in rows]

    async def manifest_files(self, revision_id: str, prefix: str = "") -> dict[str, bytes]:
        rows = self.c.execute(
            "SELECT path, content FROM manifest_files WHERE revision_id = ? "
            "AND substr(path, 1, ?) = ? ORDER BY path",
            (revision_id, len(prefix), prefix),
        )
        return {r[0]: bytes(r[1]) for r in rows}

    # audit
    async def append_audit(self, entry: AuditEntry) -> None:
        entry.seq = self.c.execute(_AUDIT_INSERT, _audit_values(entry)).lastrowid or 0

    async def list_audit(
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

    async def list_audit_actions(
        self, service: str, actions: Sequence[str], limit: int
    ) -> list[AuditEntry]:
        marks = ", ".join("?" for _ in actions)
        sql = (
            f"SELECT * FROM audit WHERE service = ? AND action IN ({marks}) "
            "ORDER BY seq DESC LIMIT ?"
        )
        rows = self.c.execute(sql, [service, *actions, limit])
        return [AuditEntry(**dict(r)) for r in rows]

    # cron runs
    async def insert_cron_run(self, run: CronRun) -> None:
        row = dataclasses.asdict(run)
        row.pop("seq")  # assigned here
        row["outcome"] = int(run.outcome)
        run.seq = self._insert("cron_runs", row)

    async def get_cron_run(self, run_id: str) -> CronRun | None:
        row = self.c.execute("SELECT * FROM cron_runs WHERE run_id = ?", (run_id,)).fetchone()
        return _cron_run(row) if row else None

    async def list_cron_runs(
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
