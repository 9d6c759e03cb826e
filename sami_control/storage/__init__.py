"""Backends of the store interface the core declares (sami_control/core/store.py): SQLite
(sqlite.py), the default, and PostgreSQL (postgres.py), for several replicas. A backend
imports the core's data (core/model.py) and interface, never its services.

`open_store` is the one place that chooses: `--store` / `SAMI_STORE` a postgresql:// URL,
else SQLite in the data folder."""

from __future__ import annotations

import os

from sami_control.core.store import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class BadStoreURL(ValueError):
    """The --store value cannot be used (says which part is wrong)."""


def is_postgres(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(POSTGRES_SCHEMES)


def open_store(spec: str | None, data_dir: str | os.PathLike[str]) -> Store:
    """The store `spec` names: a postgresql:// (or postgres://) URL is PostgreSQL, nothing
    is SQLite in `data_dir`. Await its open() before the first tx() (SQLite's is a no-op: it
    migrates as it is built). Anything else is refused, naming what was given: a typo must
    not silently fall back to a local file."""
    if is_postgres(spec):
        # Imported here: asyncpg is loaded only by a control plane that uses it.
        from sami_control.storage.postgres import PostgresStore

        return PostgresStore(str(spec))
    if spec:
        raise BadStoreURL(
            f"unknown store {redact(spec)!r}: give a postgresql://USER@HOST:PORT/DB URL, or "
            "nothing for SQLite in the data folder (--data)"
        )
    from sami_control.storage.sqlite import SQLiteStore

    return SQLiteStore(data_dir)


def redact(spec: str) -> str:
    """A store URL as messages may show it: without a password."""
    if "://" not in spec or "@" not in spec:
        return spec
    scheme, rest = spec.split("://", 1)
    userinfo, at, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in userinfo else ''}{at}{host}"
