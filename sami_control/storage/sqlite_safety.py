"""SQLiteTx's queries for release safety: target locks (`sami lock`) and the finished
deploys quarantine is decided on. A mixin of SQLiteTx (sqlite_tx.py), kept apart so that
module stays readable."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from typing import Any

from sami_control.core.model import Deployment, DeploymentAction, State, TargetLock

LOCK_COLUMNS = tuple(f.name for f in dataclasses.fields(TargetLock))
FINISHED = (int(State.SUCCEEDED), int(State.FAILED), int(State.ROLLED_BACK))


def target_lock(row: Any) -> TargetLock:
    return TargetLock(**{k: row[k] for k in LOCK_COLUMNS})


class SQLiteSafetyQueries:
    c: sqlite3.Connection

    def _select_deployments(self, where: str, args: Sequence[Any]) -> list[Deployment]:
        raise NotImplementedError  # SQLiteTx's: its row conversions

    async def finished_deploys_of_key(
        self, service: str, environment: str, pull_request: int, limit: int
    ) -> list[Deployment]:
        return self._select_deployments(
            " WHERE service = ? AND environment = ? AND pull_request = ?"
            " AND action = ? AND state IN (?, ?, ?) ORDER BY seq DESC LIMIT ?",
            (service, environment, pull_request, int(DeploymentAction.DEPLOY), *FINISHED, limit),
        )

    async def put_target_lock(self, lock: TargetLock) -> None:
        values = dataclasses.asdict(lock)
        self.c.execute(
            f"INSERT OR REPLACE INTO target_locks ({', '.join(LOCK_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(LOCK_COLUMNS))})",
            [values[k] for k in LOCK_COLUMNS],
        )

    async def get_target_lock(self, environment: str, service: str) -> TargetLock | None:
        row = self.c.execute(
            "SELECT * FROM target_locks WHERE environment = ? AND service = ?",
            (environment, service),
        ).fetchone()
        return target_lock(row) if row else None

    async def delete_target_lock(self, environment: str, service: str) -> bool:
        cur = self.c.execute(
            "DELETE FROM target_locks WHERE environment = ? AND service = ?",
            (environment, service),
        )
        return cur.rowcount > 0

    async def list_target_locks(self, environment: str = "") -> list[TargetLock]:
        sql = "SELECT * FROM target_locks"
        args: list[Any] = []
        if environment:
            sql += " WHERE environment = ?"
            args.append(environment)
        sql += " ORDER BY created_at, environment, service"
        return [target_lock(r) for r in self.c.execute(sql, args)]
