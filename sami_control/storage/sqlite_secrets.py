"""SQLiteTx's queries for secrets, variables and the clusters' recipients
(core/secrets.py). A mixin of SQLiteTx."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from sami_control.core.model import Recipient, SecretVersion, Variable

RECIPIENT_COLUMNS = tuple(f.name for f in dataclasses.fields(Recipient))
SECRET_COLUMNS = tuple(f.name for f in dataclasses.fields(SecretVersion))
VARIABLE_COLUMNS = tuple(f.name for f in dataclasses.fields(Variable))
# The newest version of each name (removed or not), by service, environment, name.
LATEST_SECRETS = (
    "SELECT {cols} FROM secret_versions AS s WHERE version = "
    "(SELECT max(version) FROM secret_versions AS n WHERE n.service = s.service "
    "AND n.environment = s.environment AND n.name = s.name)"
)


def secret_columns(ciphertexts: bool, empty_bytes: str) -> str:
    """The columns of a SecretVersion, the ciphertext replaced by `empty_bytes` (the
    dialect's empty blob literal) unless it is wanted."""
    return ", ".join(
        c if ciphertexts or c != "ciphertext" else f"{empty_bytes} AS ciphertext"
        for c in SECRET_COLUMNS
    )


def recipient_row(row: Any) -> Recipient:
    return Recipient(**{k: row[k] for k in RECIPIENT_COLUMNS})


def secret_row(row: Any) -> SecretVersion:
    values = {k: row[k] for k in SECRET_COLUMNS}
    values["ciphertext"] = bytes(values["ciphertext"])
    values["recipients"] = json.loads(values["recipients"])
    return SecretVersion(**values)


def secret_values(v: SecretVersion) -> list[Any]:
    values = dataclasses.asdict(v)
    values["recipients"] = json.dumps(sorted(v.recipients))
    values["ciphertext"] = bytes(v.ciphertext)
    return [values[k] for k in SECRET_COLUMNS]


def variable_row(row: Any) -> Variable:
    return Variable(**{k: row[k] for k in VARIABLE_COLUMNS})


def scope_filters(service: str, environment: str) -> list[tuple[str, str]]:
    """The (column, value) filters of a list narrowed to a service and/or environment."""
    return [(c, v) for c, v in (("service", service), ("environment", environment)) if v]


class SQLiteSecretQueries:
    c: sqlite3.Connection

    # recipients
    async def put_recipient(self, r: Recipient) -> None:
        values = dataclasses.asdict(r)
        self.c.execute(
            f"INSERT OR REPLACE INTO recipients ({', '.join(RECIPIENT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(RECIPIENT_COLUMNS))})",
            [values[k] for k in RECIPIENT_COLUMNS],
        )

    async def get_recipient(self, cluster: str, recipient: str) -> Recipient | None:
        row = self.c.execute(
            "SELECT * FROM recipients WHERE cluster = ? AND recipient = ?", (cluster, recipient)
        ).fetchone()
        return recipient_row(row) if row else None

    async def list_recipients(self, cluster: str = "") -> list[Recipient]:
        sql, args = "SELECT * FROM recipients", []
        if cluster:
            sql += " WHERE cluster = ?"
            args.append(cluster)
        rows = self.c.execute(sql + " ORDER BY cluster, recipient", args)
        return [recipient_row(r) for r in rows]

    async def delete_recipient(self, cluster: str, recipient: str) -> bool:
        cur = self.c.execute(
            "DELETE FROM recipients WHERE cluster = ? AND recipient = ?", (cluster, recipient)
        )
        return cur.rowcount == 1

    # secrets
    async def insert_secret_version(self, v: SecretVersion) -> None:
        self.c.execute(
            f"INSERT INTO secret_versions ({', '.join(SECRET_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(SECRET_COLUMNS))})",
            secret_values(v),
        )

    async def latest_secrets(
        self, service: str = "", environment: str = "", *, ciphertexts: bool = False
    ) -> list[SecretVersion]:
        sql = LATEST_SECRETS.format(cols=secret_columns(ciphertexts, "X''"))
        filters = scope_filters(service, environment)
        sql += "".join(f" AND {c} = ?" for c, _ in filters)
        rows = self.c.execute(sql + " ORDER BY service, environment, name", [v for _, v in filters])
        return [secret_row(r) for r in rows]

    async def get_secret_versions(
        self, service: str, environment: str, versions: Mapping[str, int]
    ) -> list[SecretVersion]:
        found = []
        for name, version in sorted(versions.items()):
            row = self.c.execute(
                f"SELECT {', '.join(SECRET_COLUMNS)} FROM secret_versions WHERE service = ? "
                "AND environment = ? AND name = ? AND version = ?",
                (service, environment, name, version),
            ).fetchone()
            if row:
                found.append(secret_row(row))
        return found

    async def mark_secret_removed(
        self, service: str, environment: str, name: str, version: int, at: float
    ) -> None:
        self.c.execute(
            "UPDATE secret_versions SET removed_at = ? WHERE service = ? AND environment = ? "
            "AND name = ? AND version = ?",
            (at, service, environment, name, version),
        )

    # variables
    async def put_variable(self, v: Variable) -> None:
        values = dataclasses.asdict(v)
        self.c.execute(
            f"INSERT OR REPLACE INTO variables ({', '.join(VARIABLE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(VARIABLE_COLUMNS))})",
            [values[k] for k in VARIABLE_COLUMNS],
        )

    async def list_variables(self, service: str = "", environment: str = "") -> list[Variable]:
        filters = scope_filters(service, environment)
        sql = "SELECT * FROM variables WHERE 1 = 1" + "".join(f" AND {c} = ?" for c, _ in filters)
        rows = self.c.execute(sql + " ORDER BY service, environment, name", [v for _, v in filters])
        return [variable_row(r) for r in rows]

    async def delete_variable(self, service: str, environment: str, name: str) -> bool:
        cur = self.c.execute(
            "DELETE FROM variables WHERE service = ? AND environment = ? AND name = ?",
            (service, environment, name),
        )
        return cur.rowcount == 1
