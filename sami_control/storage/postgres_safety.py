"""PostgresTx's queries for release safety, query for query what sqlite_safety.py does
(same orderings, same rows). A mixin of PostgresTx (postgres_tx.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sami_control.core.model import Deployment, DeploymentAction, TargetLock
from sami_control.storage.sqlite_safety import FINISHED, LOCK_COLUMNS, target_lock


class PostgresSafetyQueries:
    c: Any  # an asyncpg connection, inside a transaction

    async def _select_deployments(self, where: str, *args: Any) -> list[Deployment]:
        raise NotImplementedError  # PostgresTx's: its row conversions

    async def finished_deploys_of_key(
        self, service: str, environment: str, pull_request: int, limit: int
    ) -> list[Deployment]:
        return await self._select_deployments(
            " WHERE service = $1 AND environment = $2 AND pull_request = $3"
            " AND action = $4 AND state IN ($5, $6, $7) ORDER BY seq DESC LIMIT $8",
            service,
            environment,
            pull_request,
            int(DeploymentAction.DEPLOY),
            *FINISHED,
            limit,
        )

    async def put_target_lock(self, lock: TargetLock) -> None:
        values = dataclasses.asdict(lock)
        marks = ", ".join(f"${i}" for i in range(1, len(LOCK_COLUMNS) + 1))
        updates = ", ".join(
            f"{k} = EXCLUDED.{k}" for k in LOCK_COLUMNS if k not in ("environment", "service")
        )
        await self.c.execute(
            f"INSERT INTO target_locks ({', '.join(LOCK_COLUMNS)}) VALUES ({marks}) "
            f"ON CONFLICT (environment, service) DO UPDATE SET {updates}",
            *[values[k] for k in LOCK_COLUMNS],
        )

    async def get_target_lock(self, environment: str, service: str) -> TargetLock | None:
        row = await self.c.fetchrow(
            "SELECT * FROM target_locks WHERE environment = $1 AND service = $2",
            environment,
            service,
        )
        return target_lock(row) if row else None

    async def delete_target_lock(self, environment: str, service: str) -> bool:
        status = await self.c.execute(
            "DELETE FROM target_locks WHERE environment = $1 AND service = $2",
            environment,
            service,
        )
        return bool(status != "DELETE 0")

    async def list_target_locks(self, environment: str = "") -> list[TargetLock]:
        sql = "SELECT * FROM target_locks"
        args: list[Any] = []
        if environment:
            sql += " WHERE environment = $1"
            args.append(environment)
        sql += ' ORDER BY created_at, environment COLLATE "C", service COLLATE "C"'
        return [target_lock(r) for r in await self.c.fetch(sql, *args)]
