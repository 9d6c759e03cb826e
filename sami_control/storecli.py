"""`sami-control migrate`: the commands about the store itself rather than what is in
it."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from pathlib import Path

from sami_control.core.store import StorageFailed
from sami_control.storage import BadStoreURL, is_postgres, open_store
from sami_control.storage.maintenance import DataDirBusy
from sami_control.storage.postgres_schema import SchemaTooNew


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_migrate(Path(args.data), args.store or None))
    except (StorageFailed, BadStoreURL, SchemaTooNew, DataDirBusy, PermissionError) as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # SQLite: a data folder written by a newer Sami
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2


def _sqlite_version(data: Path) -> int:
    """The schema version of the data folder's database as it is on disk (0: none yet)."""
    from sami_control.storage.sqlite import SQLiteStore

    db = data / SQLiteStore.FILE_NAME
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


async def _migrate(data: Path, spec: str | None) -> int:
    if is_postgres(spec):
        from sami_control.storage.postgres import PostgresStore

        pg = PostgresStore(str(spec), pool_size=1)
        await pg.open()  # migrates
        await pg.close()
        where, found, now = f"postgresql {pg.target}", pg.schema_found, pg.schema_version
    else:
        from sami_control.storage.sqlite_schema import MIGRATIONS

        found = _sqlite_version(data)
        store = open_store(spec, data)  # SQLite migrates as it opens
        await store.open()
        await store.close()
        where, now = f"sqlite {data}", len(MIGRATIONS)
    change = "up to date" if found == now else f"migrated from {found}"
    print(f"{where}: schema version {now} ({change})")
    return 0
