"""SQLiteTx's queries for live status (core/live_status.py). A mixin of SQLiteTx."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

from sami_control.core.model import LiveServiceState

LIVE_COLUMNS = tuple(f.name for f in dataclasses.fields(LiveServiceState))


def live_service(row: Any) -> LiveServiceState:
    values = {k: row[k] for k in LIVE_COLUMNS}
    values["removed"] = bool(values["removed"])
    return LiveServiceState(**values)


class SQLiteLiveQueries:
    c: sqlite3.Connection

    async def put_live_service(self, row: LiveServiceState) -> None:
        values = dataclasses.asdict(row)
        self.c.execute(
            f"INSERT OR REPLACE INTO live_services ({', '.join(LIVE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(LIVE_COLUMNS))})",
            [values[k] for k in LIVE_COLUMNS],
        )

    async def delete_live_service(self, cluster: str, stack_name: str, swarm_service: str) -> None:
        self.c.execute(
            "DELETE FROM live_services WHERE cluster = ? AND stack_name = ? AND swarm_service = ?",
            (cluster, stack_name, swarm_service),
        )

    async def list_live_services(self, cluster: str = "") -> list[LiveServiceState]:
        sql = "SELECT * FROM live_services"
        args: list[Any] = []
        if cluster:
            sql += " WHERE cluster = ?"
            args.append(cluster)
        sql += " ORDER BY cluster, stack_name, swarm_service"
        return [live_service(r) for r in self.c.execute(sql, args)]

    async def get_live_service(
        self, cluster: str, stack_name: str, swarm_service: str
    ) -> LiveServiceState | None:
        row = self.c.execute(
            "SELECT * FROM live_services"
            " WHERE cluster = ? AND stack_name = ? AND swarm_service = ?",
            (cluster, stack_name, swarm_service),
        ).fetchone()
        return live_service(row) if row else None

    async def put_live_report_time(self, cluster: str, reported_at: float) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO live_reports (cluster, reported_at) VALUES (?, ?)",
            (cluster, reported_at),
        )

    async def live_report_times(self) -> dict[str, float]:
        rows = self.c.execute("SELECT cluster, reported_at FROM live_reports")
        return {r["cluster"]: r["reported_at"] for r in rows}
