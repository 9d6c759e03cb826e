"""PostgresTx's queries for notifications, query for query what sqlite_notify.py does. A
mixin of PostgresTx (postgres_tx.py). Several replicas claim from one outbox: the claim
locks the rows it takes with FOR UPDATE SKIP LOCKED, so a row another replica is claiming
is skipped rather than claimed twice."""

from __future__ import annotations

import dataclasses
from typing import Any

from sami_control.core.model import Delivery, NotifyTarget
from sami_control.storage.sqlite_notify import (
    ATTEMPT_COLUMNS,
    CLAIMABLE,
    DELIVERY_COLUMNS,
    TARGET_COLUMNS,
    delivery,
    notify_target,
    target_values,
)


def _marks(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


class PostgresNotifyQueries:
    c: Any  # an asyncpg connection, inside a transaction

    async def insert_notify_target(self, t: NotifyTarget) -> None:
        await self.c.execute(
            f"INSERT INTO notify_targets ({', '.join(TARGET_COLUMNS)}) "
            f"VALUES ({_marks(len(TARGET_COLUMNS))})",
            *target_values(t),
        )

    async def list_notify_targets(self) -> list[NotifyTarget]:
        rows = await self.c.fetch('SELECT * FROM notify_targets ORDER BY name COLLATE "C"')
        return [notify_target(r) for r in rows]

    async def delete_notify_target(self, name: str) -> bool:
        target_id = await self.c.fetchval("SELECT id FROM notify_targets WHERE name = $1", name)
        if target_id is None:
            return False
        await self.c.execute(
            "DELETE FROM notify_outbox WHERE target_id = $1 AND status = 'pending'", target_id
        )
        await self.c.execute("DELETE FROM notify_refs WHERE target_id = $1", target_id)
        await self.c.execute("DELETE FROM notify_targets WHERE id = $1", target_id)
        return True

    async def insert_delivery(self, d: Delivery) -> None:
        values = dataclasses.asdict(d)
        await self.c.execute(
            f"INSERT INTO notify_outbox ({', '.join(DELIVERY_COLUMNS)}) "
            f"VALUES ({_marks(len(DELIVERY_COLUMNS))})",
            *[values[k] for k in DELIVERY_COLUMNS],
        )

    async def claim_deliveries(
        self, now: float, owner: str, until: float, limit: int
    ) -> list[Delivery]:
        rows = await self.c.fetch(
            "UPDATE notify_outbox SET claimed_by = $1, claimed_until = $2 WHERE id IN"
            " (SELECT id FROM notify_outbox o WHERE "
            + CLAIMABLE.format(now="$3")
            + " ORDER BY created_at, sequence LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING *",
            owner,
            until,
            now,
            limit,
        )
        return sorted((delivery(r) for r in rows), key=lambda d: (d.created_at, d.sequence))

    async def finish_attempt(self, d: Delivery, owner: str) -> bool:
        values = dataclasses.asdict(d)
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(ATTEMPT_COLUMNS, start=1))
        n = len(ATTEMPT_COLUMNS)
        status = await self.c.execute(
            f"UPDATE notify_outbox SET {sets}, claimed_by = '', claimed_until = 0"
            f" WHERE id = ${n + 1} AND claimed_by = ${n + 2}",
            *[values[k] for k in ATTEMPT_COLUMNS],
            d.id,
            owner,
        )
        return bool(status != "UPDATE 0")

    async def list_deliveries(self, target_name: str, limit: int) -> list[Delivery]:
        if target_name:
            rows = await self.c.fetch(
                "SELECT * FROM notify_outbox WHERE target_name = $1"
                " ORDER BY created_at DESC, sequence DESC LIMIT $2",
                target_name,
                limit,
            )
        else:
            rows = await self.c.fetch(
                "SELECT * FROM notify_outbox ORDER BY created_at DESC, sequence DESC LIMIT $1",
                limit,
            )
        return [delivery(r) for r in rows]

    async def prune_deliveries(self, before: float, limit: int) -> int:
        status = await self.c.execute(
            "DELETE FROM notify_outbox WHERE id IN (SELECT id FROM notify_outbox"
            " WHERE status != 'pending' AND finished_at < $1 LIMIT $2)",
            before,
            limit,
        )
        return int(status.split()[-1])

    async def get_notify_ref(self, target_id: str, deployment_id: str) -> str:
        ref = await self.c.fetchval(
            "SELECT ref FROM notify_refs WHERE target_id = $1 AND deployment_id = $2",
            target_id,
            deployment_id,
        )
        return str(ref) if ref is not None else ""

    async def put_notify_ref(self, target_id: str, deployment_id: str, ref: str) -> None:
        await self.c.execute(
            "INSERT INTO notify_refs (target_id, deployment_id, ref) VALUES ($1, $2, $3)"
            " ON CONFLICT (target_id, deployment_id) DO UPDATE SET ref = EXCLUDED.ref",
            target_id,
            deployment_id,
            ref,
        )
