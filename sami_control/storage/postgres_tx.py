"""The queries of one PostgreSQL transaction (`PostgresTx`, the core's `Tx` interface on an
asyncpg connection). PostgresStore (postgres.py) hands one out per `tx()` block.

Query for query what SQLiteTx does (sqlite_tx.py), with the same orderings and the same
row ↔ data conversions (shared from there: JSON columns hold the same sorted-key text).
Text orderings say COLLATE "C": byte order, as SQLite sorts, whatever locale the database
was created with. asyncpg prepares and caches each statement per connection, so the hot
ones (deployments, events) are parsed once per connection."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sami_control.core.model import (
    AgentRecord,
    Artifact,
    AuditEntry,
    Cluster,
    CronRun,
    Deployment,
    Event,
    ManifestRevision,
    State,
    TokenRecord,
)
from sami_control.core.store import Tx
from sami_control.storage.postgres_live import PostgresLiveQueries
from sami_control.storage.postgres_notify import PostgresNotifyQueries
from sami_control.storage.postgres_safety import PostgresSafetyQueries
from sami_control.storage.postgres_secrets import PostgresSecretQueries
from sami_control.storage.sqlite_tx import (
    _AUDIT_COLUMNS,
    _DEP_COLUMNS,
    _DEP_INSERT_COLUMNS,
    _DEP_INSERT_ENCODERS,
    _DEP_MUTABLE,
    _EVENT_COLUMNS,
    _JSON_FIELDS,
    _artifact,
    _audit_values,
    _cron_run,
    _dep_insert_values,
    _dep_mutable_values,
    _deployment,
    _event,
    _event_values,
    _json,
    _row_dict,
    _token,
)


def pg(sql: str) -> str:
    """SQLite's `?` placeholders as PostgreSQL's `$1, $2, …`."""
    n = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(n)}", sql)


def _enc(name: str, value: Any) -> Any:
    return _json(value) if name in _JSON_FIELDS else value


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_DEP_SELECT = f"SELECT {', '.join(_DEP_COLUMNS)} FROM deployments"
_DEP_INSERT = pg(
    f"INSERT INTO deployments ({', '.join(_DEP_INSERT_COLUMNS)}) "
    f"VALUES ({_marks(len(_DEP_INSERT_COLUMNS))}) RETURNING seq"
)
_DEP_UPDATE = pg(
    f"UPDATE deployments SET {', '.join(f'{c} = ?' for c in _DEP_MUTABLE)} WHERE id = ?"
)
_EVENT_SELECT = f"SELECT {', '.join(_EVENT_COLUMNS)} FROM events"
_EVENT_INSERT = pg(
    f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES ({_marks(len(_EVENT_COLUMNS))})"
)
_AUDIT_INSERT = pg(
    f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "
    f"VALUES ({_marks(len(_AUDIT_COLUMNS))}) RETURNING seq"
)
_EVENTS_AFTER = pg(
    _EVENT_SELECT + " WHERE deployment_id = ? AND sequence > ? ORDER BY sequence LIMIT ?"
)
_DEP_BY_ID = pg(_DEP_SELECT + " WHERE id = ?")


def _list_sql(select: str, filters: Sequence[tuple[str, Any]], order: str) -> tuple[str, list[Any]]:
    """`select` narrowed by the (condition, value) filters whose value is set (not "" nor
    None), then `order`; and those values, in order. The caller passes the values of the
    placeholders in `select` before them and those in `order` after."""
    sql, args = select, []
    for cond, val in filters:
        if val is None or val == "":
            continue
        sql += f" AND {cond}"
        args.append(val)
    return sql + " " + order, args


class PostgresTx(
    PostgresSafetyQueries, PostgresNotifyQueries, PostgresLiveQueries, PostgresSecretQueries, Tx
):
    def __init__(self, conn: Any) -> None:
        self.c = conn  # an asyncpg connection (pooled), inside a transaction

    async def _select_deployments(self, where: str, *args: Any) -> list[Deployment]:
        return [_deployment(r) for r in await self.c.fetch(_DEP_SELECT + where, *args)]

    async def lock(self, name: str) -> None:
        # Held until the transaction ends (commit or rollback); 64-bit hash of the name.
        await self.c.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name)

    # tokens
    async def insert_token(self, t: TokenRecord) -> None:
        await self._insert("tokens", dataclasses.asdict(t))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        row = await self.c.fetchrow("SELECT * FROM tokens WHERE id = $1", token_id)
        return _token(row) if row else None

    async def list_tokens(self) -> list[TokenRecord]:
        rows = await self.c.fetch('SELECT * FROM tokens ORDER BY created_at, id COLLATE "C"')
        return [_token(r) for r in rows]

    async def revoke_token(self, token_id: str, at: float) -> bool:
        status = await self.c.execute(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at = 0", at, token_id
        )
        return bool(status == "UPDATE 1")

    # clusters
    async def insert_cluster(self, c: Cluster) -> None:
        await self.c.execute(
            "INSERT INTO clusters (id, created_at) VALUES ($1, $2)", c.id, c.created_at
        )
        await self._set_environments(c.id, c.environments)

    async def _set_environments(self, cluster_id: str, environments: Sequence[str]) -> None:
        if environments:
            await self.c.executemany(
                "INSERT INTO cluster_environments (environment, cluster) VALUES ($1, $2)",
                [(e, cluster_id) for e in environments],
            )

    async def get_cluster(self, cluster_id: str) -> Cluster | None:
        row = await self.c.fetchrow("SELECT * FROM clusters WHERE id = $1", cluster_id)
        if not row:
            return None
        envs = await self.c.fetch(
            "SELECT environment FROM cluster_environments WHERE cluster = $1 "
            'ORDER BY environment COLLATE "C"',
            cluster_id,
        )
        return Cluster(
            id=row["id"], environments=[r[0] for r in envs], created_at=row["created_at"]
        )

    async def list_clusters(self) -> list[Cluster]:
        ids = await self.c.fetch('SELECT id FROM clusters ORDER BY id COLLATE "C"')
        return [c for r in ids if (c := await self.get_cluster(r[0]))]

    async def set_cluster_environments(self, cluster_id: str, environments: Sequence[str]) -> None:
        await self.c.execute("DELETE FROM cluster_environments WHERE cluster = $1", cluster_id)
        await self._set_environments(cluster_id, environments)

    async def cluster_for_environment(self, environment: str) -> str | None:
        value = await self.c.fetchval(
            "SELECT cluster FROM cluster_environments WHERE environment = $1", environment
        )
        return str(value) if value is not None else None

    # artifacts
    async def insert_artifact(self, a: Artifact) -> None:
        await self._insert("artifacts", dataclasses.asdict(a))

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        row = await self.c.fetchrow("SELECT * FROM artifacts WHERE id = $1", artifact_id)
        return _artifact(row) if row else None

    async def find_artifact(self, artifact_name: str, digest: str) -> Artifact | None:
        row = await self.c.fetchrow(
            "SELECT * FROM artifacts WHERE artifact_name = $1 AND digest = $2",
            artifact_name,
            digest,
        )
        return _artifact(row) if row else None

    async def find_artifacts_by_digest(self, digest: str) -> list[Artifact]:
        rows = await self.c.fetch("SELECT * FROM artifacts WHERE digest = $1 ORDER BY seq", digest)
        return [_artifact(r) for r in rows]

    async def list_artifacts(
        self, artifact_name: str, before_seq: int, limit: int
    ) -> list[tuple[int, Artifact]]:
        sql, args = _list_sql(
            "SELECT * FROM artifacts WHERE seq < ?",
            [("artifact_name = ?", artifact_name)],
            "ORDER BY seq DESC LIMIT ?",
        )
        rows = await self.c.fetch(pg(sql), before_seq, *args, limit)
        return [(r["seq"], _artifact(r)) for r in rows]

    # deployments
    async def insert_deployment(self, d: Deployment) -> None:
        values = [
            f(v) if f else v
            for f, v in zip(_DEP_INSERT_ENCODERS, _dep_insert_values(d), strict=True)
        ]
        d.seq = int(await self.c.fetchval(_DEP_INSERT, *values))

    async def update_deployment(self, d: Deployment) -> None:
        await self.c.execute(_DEP_UPDATE, *_dep_mutable_values(d), d.id)

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        row = await self.c.fetchrow(_DEP_BY_ID, deployment_id)
        return _deployment(row) if row else None

    async def get_deployment_by_request_id(
        self, token_id: str, request_id: str
    ) -> Deployment | None:
        row = await self.c.fetchrow(
            _DEP_SELECT + " WHERE created_by_token = $1 AND request_id = $2", token_id, request_id
        )
        return _deployment(row) if row else None

    async def list_deployments(
        self, service: str, environment: str, state: State | None, before_seq: int, limit: int
    ) -> list[Deployment]:
        sql, args = _list_sql(
            _DEP_SELECT + " WHERE seq < ?",
            [
                ("service = ?", service),
                ("environment = ?", environment),
                ("state = ?", None if state is None else int(state)),
            ],
            "ORDER BY seq DESC LIMIT ?",
        )
        return [_deployment(r) for r in await self.c.fetch(pg(sql), before_seq, *args, limit)]

    async def latest_for_key(
        self, service: str, environment: str, pull_request: int, cluster: str | None = None
    ) -> Deployment | None:
        sql = _DEP_SELECT + " WHERE service = ? AND environment = ? AND pull_request = ?"
        args: list[Any] = [service, environment, pull_request]
        if cluster is not None:
            sql += " AND cluster = ?"
            args.append(cluster)
        row = await self.c.fetchrow(pg(sql + " ORDER BY seq DESC LIMIT 1"), *args)
        return _deployment(row) if row else None

    async def latest_previews(self, service: str) -> list[Deployment]:
        rows = await self.c.fetch(
            _DEP_SELECT + " WHERE seq IN (SELECT max(seq) FROM deployments"
            " WHERE service = $1 AND environment = 'pull_request' GROUP BY pull_request)"
            " ORDER BY seq",
            service,
        )
        return [_deployment(r) for r in rows]

    async def queued_of_key(
        self, service: str, environment: str, pull_request: int
    ) -> list[Deployment]:
        rows = await self.c.fetch(
            _DEP_SELECT + " WHERE service = $1 AND environment = $2 "
            "AND pull_request = $3 AND state = $4 ORDER BY seq",
            service,
            environment,
            pull_request,
            int(State.QUEUED),
        )
        return [_deployment(r) for r in rows]

    async def deployments_in_states(
        self, states: Sequence[State], cluster: str | None = None
    ) -> list[Deployment]:
        sql = _DEP_SELECT + " WHERE state = ANY($1::bigint[])"
        args: list[Any] = [[int(s) for s in states]]
        if cluster is not None:
            sql += " AND cluster = $2"
            args.append(cluster)
        return [_deployment(r) for r in await self.c.fetch(sql + " ORDER BY seq", *args)]

    async def key_busy(self, service: str, environment: str, pull_request: int) -> bool:
        row = await self.c.fetchval(
            "SELECT 1 FROM deployments WHERE service = $1 AND environment = $2 "
            "AND pull_request = $3 AND state IN ($4, $5) LIMIT 1",
            service,
            environment,
            pull_request,
            int(State.ASSIGNED),
            int(State.IN_PROGRESS),
        )
        return row is not None

    async def active_keys(self) -> set[tuple[str, str, int]]:
        rows = await self.c.fetch(
            "SELECT service, environment, pull_request FROM deployments WHERE state IN ($1, $2)",
            int(State.ASSIGNED),
            int(State.IN_PROGRESS),
        )
        return {(r[0], r[1], r[2]) for r in rows}

    # events
    async def append_event(self, e: Event) -> None:
        await self.c.execute(_EVENT_INSERT, *_event_values(e))

    async def events_after(self, deployment_id: str, after: int, limit: int) -> list[Event]:
        rows = await self.c.fetch(_EVENTS_AFTER, deployment_id, after, limit)
        return [_event(r) for r in rows]

    # agents
    async def upsert_agent(self, a: AgentRecord) -> None:
        row = {k: v for k, v in dataclasses.asdict(a).items() if k not in ("connected", "leases")}
        cols = list(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("agent_id", "cluster"))
        await self.c.execute(
            pg(
                f"INSERT INTO agents ({', '.join(cols)}) VALUES ({_marks(len(cols))}) "
                f"ON CONFLICT (cluster, agent_id) DO UPDATE SET {updates}"
            ),
            *[_enc(c, row[c]) for c in cols],
        )

    async def list_agents(self, cluster: str) -> list[AgentRecord]:
        order = 'ORDER BY agent_id COLLATE "C", cluster COLLATE "C"'
        if cluster:
            rows = await self.c.fetch(f"SELECT * FROM agents WHERE cluster = $1 {order}", cluster)
        else:
            rows = await self.c.fetch(f"SELECT * FROM agents {order}")
        return [AgentRecord(**_row_dict(r)) for r in rows]

    async def delete_agent(self, cluster: str, agent_id: str) -> bool:
        status = await self.c.execute(
            "DELETE FROM agents WHERE cluster = $1 AND agent_id = $2", cluster, agent_id
        )
        return bool(status == "DELETE 1")

    # manifests
    async def insert_manifest_revision(
        self, rev: ManifestRevision, files: Mapping[str, bytes]
    ) -> None:
        row = dataclasses.asdict(rev)
        cols = list(row)
        quoted = ", ".join(f'"{c}"' for c in cols)  # "commit" is an SQL keyword
        await self.c.execute(
            pg(f"INSERT INTO manifest_revisions ({quoted}) VALUES ({_marks(len(cols))})"),
            *[_enc(c, row[c]) for c in cols],
        )
        if files:
            await self.c.executemany(
                "INSERT INTO manifest_files (revision_id, path, content) VALUES ($1, $2, $3)",
                [(rev.id, p, bytes(data)) for p, data in sorted(files.items())],
            )

    async def next_synced_seq(self) -> int:
        value = await self.c.fetchval(
            "SELECT COALESCE(MAX(synced_seq), 0) + 1 FROM manifest_revisions"
        )
        return int(value)

    async def mark_revision_synced(self, revision_id: str, synced_seq: int) -> None:
        await self.c.execute(
            "UPDATE manifest_revisions SET synced_seq = $1 WHERE id = $2", synced_seq, revision_id
        )

    async def get_manifest_revision(self, revision_id: str) -> ManifestRevision | None:
        row = await self.c.fetchrow("SELECT * FROM manifest_revisions WHERE id = $1", revision_id)
        return ManifestRevision(**_row_dict(row)) if row else None

    async def current_manifest_revision_id(self) -> str | None:
        value = await self.c.fetchval(
            "SELECT id FROM manifest_revisions ORDER BY synced_seq DESC LIMIT 1"
        )
        return str(value) if value is not None else None

    async def current_manifest_revision(self) -> ManifestRevision | None:
        row = await self.c.fetchrow(
            "SELECT * FROM manifest_revisions ORDER BY synced_seq DESC LIMIT 1"
        )
        return ManifestRevision(**_row_dict(row)) if row else None

    async def list_manifest_revisions(self, before_seq: int, limit: int) -> list[ManifestRevision]:
        rows = await self.c.fetch(
            "SELECT * FROM manifest_revisions WHERE synced_seq < $1 "
            "ORDER BY synced_seq DESC LIMIT $2",
            before_seq,
            limit,
        )
        return [ManifestRevision(**_row_dict(r)) for r in rows]

    async def manifest_files(self, revision_id: str, prefix: str = "") -> dict[str, bytes]:
        rows = await self.c.fetch(
            "SELECT path, content FROM manifest_files WHERE revision_id = $1 "
            'AND starts_with(path, $2) ORDER BY path COLLATE "C"',
            revision_id,
            prefix,
        )
        return {r[0]: bytes(r[1]) for r in rows}

    # audit
    async def append_audit(self, entry: AuditEntry) -> None:
        entry.seq = int(await self.c.fetchval(_AUDIT_INSERT, *_audit_values(entry)))

    async def list_audit(
        self, since: float, limit: int, after_seq: int = 0, service: str = ""
    ) -> list[AuditEntry]:
        sql, args = _list_sql(
            "SELECT * FROM audit WHERE time >= ? AND seq > ?",
            [("service = ?", service)],
            "ORDER BY seq LIMIT ?",
        )
        rows = await self.c.fetch(pg(sql), since, after_seq, *args, limit)
        return [AuditEntry(**dict(r)) for r in rows]

    async def list_audit_actions(
        self, service: str, actions: Sequence[str], limit: int
    ) -> list[AuditEntry]:
        rows = await self.c.fetch(
            "SELECT * FROM audit WHERE service = $1 AND action = ANY($2::text[]) "
            "ORDER BY seq DESC LIMIT $3",
            service,
            list(actions),
            limit,
        )
        return [AuditEntry(**dict(r)) for r in rows]

    # cron runs
    async def insert_cron_run(self, run: CronRun) -> None:
        row = dataclasses.asdict(run)
        row.pop("seq")  # assigned here
        row["outcome"] = int(run.outcome)
        run.seq = await self._insert("cron_runs", row, returning="seq")

    async def get_cron_run(self, run_id: str) -> CronRun | None:
        row = await self.c.fetchrow("SELECT * FROM cron_runs WHERE run_id = $1", run_id)
        return _cron_run(row) if row else None

    async def list_cron_runs(
        self, service: str, environment: str, before_seq: int, limit: int
    ) -> list[CronRun]:
        sql, args = _list_sql(
            "SELECT * FROM cron_runs WHERE seq < ?",
            [("service = ?", service), ("environment = ?", environment)],
            "ORDER BY seq DESC LIMIT ?",
        )
        rows = await self.c.fetch(pg(sql), before_seq, *args, limit)
        return [_cron_run(r) for r in rows]

    async def _insert(self, table: str, row: dict[str, Any], returning: str = "") -> int:
        """Insert `row`; return the column `returning` of the new row (0 without)."""
        cols = list(row)
        sql = pg(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({_marks(len(cols))})")
        values = [_enc(c, row[c]) for c in cols]
        if not returning:
            await self.c.execute(sql, *values)
            return 0
        return int(await self.c.fetchval(f"{sql} RETURNING {returning}", *values))
