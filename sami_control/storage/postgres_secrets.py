"""PostgresTx's queries for secrets, variables and the clusters' recipients, query for query
what sqlite_secrets.py does (same orderings, same rows). A mixin of PostgresTx."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sami_control.core.model import Recipient, SecretVersion, Variable
from sami_control.storage.sqlite_secrets import (
    LATEST_SECRETS,
    RECIPIENT_COLUMNS,
    SECRET_COLUMNS,
    VARIABLE_COLUMNS,
    recipient_row,
    scope_filters,
    secret_columns,
    secret_row,
    secret_values,
    variable_row,
)

_ORDER = ' ORDER BY service COLLATE "C", environment COLLATE "C", name COLLATE "C"'


def _marks(n: int) -> str:
    return ", ".join(f"${i}" for i in range(1, n + 1))


def _where(filters: list[tuple[str, str]], first: int = 1) -> str:
    return "".join(f" AND {c} = ${i}" for i, (c, _) in enumerate(filters, first))


class PostgresSecretQueries:
    c: Any  # an asyncpg connection, inside a transaction

    # recipients
    async def put_recipient(self, r: Recipient) -> None:
        values = dataclasses.asdict(r)
        key = ("cluster", "recipient")
        updates = ", ".join(f"{k} = EXCLUDED.{k}" for k in RECIPIENT_COLUMNS if k not in key)
        await self.c.execute(
            f"INSERT INTO recipients ({', '.join(RECIPIENT_COLUMNS)}) "
            f"VALUES ({_marks(len(RECIPIENT_COLUMNS))}) "
            f"ON CONFLICT (cluster, recipient) DO UPDATE SET {updates}",
            *[values[k] for k in RECIPIENT_COLUMNS],
        )

    async def get_recipient(self, cluster: str, recipient: str) -> Recipient | None:
        row = await self.c.fetchrow(
            "SELECT * FROM recipients WHERE cluster = $1 AND recipient = $2", cluster, recipient
        )
        return recipient_row(row) if row else None

    async def list_recipients(self, cluster: str = "") -> list[Recipient]:
        order = ' ORDER BY cluster COLLATE "C", recipient COLLATE "C"'
        if cluster:
            rows = await self.c.fetch(
                "SELECT * FROM recipients WHERE cluster = $1" + order, cluster
            )
        else:
            rows = await self.c.fetch("SELECT * FROM recipients" + order)
        return [recipient_row(r) for r in rows]

    async def delete_recipient(self, cluster: str, recipient: str) -> bool:
        status = await self.c.execute(
            "DELETE FROM recipients WHERE cluster = $1 AND recipient = $2", cluster, recipient
        )
        return bool(status == "DELETE 1")

    # secrets
    async def insert_secret_version(self, v: SecretVersion) -> None:
        await self.c.execute(
            f"INSERT INTO secret_versions ({', '.join(SECRET_COLUMNS)}) "
            f"VALUES ({_marks(len(SECRET_COLUMNS))})",
            *secret_values(v),
        )

    async def latest_secrets(
        self, service: str = "", environment: str = "", *, ciphertexts: bool = False
    ) -> list[SecretVersion]:
        filters = scope_filters(service, environment)
        sql = LATEST_SECRETS.format(cols=secret_columns(ciphertexts, "''::bytea")) + _where(filters)
        rows = await self.c.fetch(sql + _ORDER, *[v for _, v in filters])
        return [secret_row(r) for r in rows]

    async def get_secret_versions(
        self, service: str, environment: str, versions: Mapping[str, int]
    ) -> list[SecretVersion]:
        found = []
        for name, version in sorted(versions.items()):
            row = await self.c.fetchrow(
                f"SELECT {', '.join(SECRET_COLUMNS)} FROM secret_versions WHERE service = $1 "
                "AND environment = $2 AND name = $3 AND version = $4",
                service,
                environment,
                name,
                version,
            )
            if row:
                found.append(secret_row(row))
        return found

    async def mark_secret_removed(
        self, service: str, environment: str, name: str, version: int, at: float
    ) -> None:
        await self.c.execute(
            "UPDATE secret_versions SET removed_at = $1 WHERE service = $2 "
            "AND environment = $3 AND name = $4 AND version = $5",
            at,
            service,
            environment,
            name,
            version,
        )

    # variables
    async def put_variable(self, v: Variable) -> None:
        values = dataclasses.asdict(v)
        key = ("service", "environment", "name")
        updates = ", ".join(f"{k} = EXCLUDED.{k}" for k in VARIABLE_COLUMNS if k not in key)
        await self.c.execute(
            f"INSERT INTO variables ({', '.join(VARIABLE_COLUMNS)}) "
            f"VALUES ({_marks(len(VARIABLE_COLUMNS))}) "
            f"ON CONFLICT (service, environment, name) DO UPDATE SET {updates}",
            *[values[k] for k in VARIABLE_COLUMNS],
        )

    async def list_variables(self, service: str = "", environment: str = "") -> list[Variable]:
        filters = scope_filters(service, environment)
        sql = "SELECT * FROM variables WHERE TRUE" + _where(filters)
        rows = await self.c.fetch(sql + _ORDER, *[v for _, v in filters])
        return [variable_row(r) for r in rows]

    async def delete_variable(self, service: str, environment: str, name: str) -> bool:
        status = await self.c.execute(
            "DELETE FROM variables WHERE service = $1 AND environment = $2 AND name = $3",
            service,
            environment,
            name,
        )
        return bool(status == "DELETE 1")
