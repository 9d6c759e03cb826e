"""Backends of the store interface the core declares (sami_control/core/store.py): SQLite
(sqlite.py), the default, and PostgreSQL (postgres.py), for several replicas. A backend
imports the core's data (core/model.py) and interface, never its services.

`open_store` is the one place that chooses: `--store` / `SAMI_STORE` a postgresql:// URL,
else SQLite in the data folder."""

from __future__ import annotations

import os

from sami_control.core.store import Store
from sami_control.storage.urls import BadStoreURL, check, is_postgres, redact

__all__ = ["BadStoreURL", "is_postgres", "open_store", "redact"]


def open_store(spec: str | None, data_dir: str | os.PathLike[str]) -> Store:
    """The store `spec` names: a postgresql:// (or postgres://) URL is PostgreSQL, nothing
    is SQLite in `data_dir`. Await its open() before the first tx() (SQLite's is a no-op: it
    migrates as it is built). Anything else is refused, naming what was given: a typo must
    not silently fall back to a local file."""
    if is_postgres(spec):
        # Imported here: asyncpg is loaded only by a control plane that uses it.
        from sami_control.storage.postgres import PostgresStore

        return PostgresStore(str(spec))
    check(spec)
    from sami_control.storage.sqlite import SQLiteStore

    return SQLiteStore(data_dir)
