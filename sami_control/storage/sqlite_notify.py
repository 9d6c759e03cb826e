"""SQLiteTx's queries for notifications: targets and the outbox of deliveries
(core/notifications.py). A mixin of SQLiteTx (sqlite_tx.py). SQLite has one writer at a
time, so a claim (an UPDATE) never races another."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from sami_control.core.model import Delivery, NotifyTarget

TARGET_COLUMNS = tuple(f.name for f in dataclasses.fields(NotifyTarget))
DELIVERY_COLUMNS = tuple(f.name for f in dataclasses.fields(Delivery))
# What an attempt changes of a delivery (finish_attempt).
ATTEMPT_COLUMNS = (
    "status",
    "attempts",
    "next_attempt_at",
    "status_code",
    "last_error",
    "finished_at",
)
# Pending, due, unclaimed, and the oldest pending one of its target+deployment.
CLAIMABLE = (
    "status = 'pending' AND next_attempt_at <= {now} AND claimed_until <= {now}"
    " AND NOT EXISTS (SELECT 1 FROM notify_outbox o2 WHERE o2.target_id = o.target_id"
    " AND o2.deployment_id = o.deployment_id AND o2.status = 'pending'"
    " AND o2.sequence < o.sequence)"
)


def notify_target(row: Any) -> NotifyTarget:
    values = {k: row[k] for k in TARGET_COLUMNS}
    values["events"] = json.loads(values["events"])
    return NotifyTarget(**values)


def target_values(t: NotifyTarget) -> list[Any]:
    values = dataclasses.asdict(t)
    values["events"] = json.dumps(t.events)
    return [values[k] for k in TARGET_COLUMNS]


def delivery(row: Any) -> Delivery:
    return Delivery(**{k: row[k] for k in DELIVERY_COLUMNS})


class SQLiteNotifyQueries:
    c: sqlite3.Connection

    async def insert_notify_target(self, t: NotifyTarget) -> None:
        self.c.execute(
            f"INSERT INTO notify_targets ({', '.join(TARGET_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(TARGET_COLUMNS))})",
            target_values(t),
        )

    async def list_notify_targets(self) -> list[NotifyTarget]:
        return [
            notify_target(r) for r in self.c.execute("SELECT * FROM notify_targets ORDER BY name")
        ]

    async def delete_notify_target(self, name: str) -> bool:
        row = self.c.execute("SELECT id FROM notify_targets WHERE name = ?", (name,)).fetchone()
        if row is None:
            return False
        self.c.execute(
            "DELETE FROM notify_outbox WHERE target_id = ? AND status = 'pending'", (row["id"],)
        )
        self.c.execute("DELETE FROM notify_refs WHERE target_id = ?", (row["id"],))
        self.c.execute("DELETE FROM notify_targets WHERE id = ?", (row["id"],))
        return True

    async def insert_delivery(self, d: Delivery) -> None:
        values = dataclasses.asdict(d)
        self.c.execute(
            f"INSERT INTO notify_outbox ({', '.join(DELIVERY_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(DELIVERY_COLUMNS))})",
            [values[k] for k in DELIVERY_COLUMNS],
        )

    async def claim_deliveries(
        self, now: float, owner: str, until: float, limit: int
    ) -> list[Delivery]:
        rows = self.c.execute(
            "UPDATE notify_outbox SET claimed_by = ?, claimed_until = ? WHERE id IN"
            " (SELECT id FROM notify_outbox o WHERE "
            + CLAIMABLE.format(now="?")
            + " ORDER BY created_at, sequence LIMIT ?) RETURNING *",
            (owner, until, now, now, limit),
        ).fetchall()
        return sorted((delivery(r) for r in rows), key=lambda d: (d.created_at, d.sequence))

    async def finish_attempt(self, d: Delivery, owner: str) -> bool:
        values = dataclasses.asdict(d)
        sets = ", ".join(f"{k} = ?" for k in ATTEMPT_COLUMNS)
        cur = self.c.execute(
            f"UPDATE notify_outbox SET {sets}, claimed_by = '', claimed_until = 0"
            " WHERE id = ? AND claimed_by = ?",
            [*(values[k] for k in ATTEMPT_COLUMNS), d.id, owner],
        )
        return cur.rowcount > 0

    async def list_deliveries(self, target_name: str, limit: int) -> list[Delivery]:
        sql = "SELECT * FROM notify_outbox"
        args: list[Any] = []
        if target_name:
            sql += " WHERE target_name = ?"
            args.append(target_name)
        sql += " ORDER BY created_at DESC, sequence DESC LIMIT ?"
        args.append(limit)
        return [delivery(r) for r in self.c.execute(sql, args)]

    async def prune_deliveries(self, before: float, limit: int) -> int:
        cur = self.c.execute(
            "DELETE FROM notify_outbox WHERE id IN (SELECT id FROM notify_outbox"
            " WHERE status != 'pending' AND finished_at < ? LIMIT ?)",
            (before, limit),
        )
        return cur.rowcount

    async def get_notify_ref(self, target_id: str, deployment_id: str) -> str:
        row = self.c.execute(
            "SELECT ref FROM notify_refs WHERE target_id = ? AND deployment_id = ?",
            (target_id, deployment_id),
        ).fetchone()
        return str(row["ref"]) if row else ""

    async def put_notify_ref(self, target_id: str, deployment_id: str, ref: str) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO notify_refs (target_id, deployment_id, ref) VALUES (?, ?, ?)",
            (target_id, deployment_id, ref),
        )
