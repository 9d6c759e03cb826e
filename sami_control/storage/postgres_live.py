"""PostgresTx's queries for live status, query for query what sqlite_live.py does (same
orderings, same rows). A mixin of PostgresTx (postgres_tx.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sami_control.core.model import LiveServiceState
from sami_control.storage.sqlite_live import LIVE_COLUMNS, live_service

_KEY = ("cluster", "stack_name", "swarm_service")


class PostgresLiveQueries:
    c: Any  # an asyncpg connection, inside a transaction

    async def put_live_service(self, row: LiveServiceState) -> None:
        values = dataclasses.asdict(row)
        marks = ", ".join(f"${i}" for i in range(1, len(LIVE_COLUMNS) + 1))
        updates = ", ".join(f"{k} = EXCLUDED.{k}" for k in LIVE_COLUMNS if k not in _KEY)
        await self.c.execute(
            f"INSERT INTO live_services ({', '.join(LIVE_COLUMNS)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}",
            *[values[k] for k in LIVE_COLUMNS],
        )

    async def delete_live_service(self, cluster: str, stack_name: str, swarm_service: str) -> None:
        await self.c.execute(
            "DELETE FROM live_services"
            " WHERE cluster = $1 AND stack_name = $2 AND swarm_service = $3",
            cluster,
            stack_name,
            swarm_service,
        )

    async def list_live_services(self, cluster: str = "") -> list[LiveServiceState]:
        sql = "SELECT * FROM live_services"
        args: list[Any] = []
        if cluster:
            sql += " WHERE cluster = $1"
            args.append(cluster)
        sql += ' ORDER BY cluster COLLATE "C", stack_name COLLATE "C", swarm_service COLLATE "C"'
        return [live_service(r) for r in await self.c.fetch(sql, *args)]

    async def get_live_service(
        self, cluster: str, stack_name: str, swarm_service: str
    ) -> LiveServiceState | None:
        row = await self.c.fetchrow(
            "SELECT * FROM live_services"
            " WHERE cluster = $1 AND stack_name = $2 AND swarm_service = $3",
            cluster,
            stack_name,
            swarm_service,
        )
        return live_service(row) if row else None

    async def put_live_report_time(self, cluster: str, reported_at: float) -> None:
        await self.c.execute(
            "INSERT INTO live_reports (cluster, reported_at) VALUES ($1, $2)"
            " ON CONFLICT (cluster) DO UPDATE SET reported_at = EXCLUDED.reported_at",
            cluster,
            reported_at,
        )

    async def live_report_times(self) -> dict[str, float]:
        rows = await self.c.fetch("SELECT cluster, reported_at FROM live_reports")
        return {r["cluster"]: r["reported_at"] for r in rows}
