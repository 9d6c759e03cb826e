"""`sami-control store copy`: a SQLite data folder moves into an empty PostgreSQL database
whole, ids and sequences kept, so that everything reads the same through the store
interface afterwards and new rows come after the copied ones. And `sami-control migrate`.

These use the store interface and the CLI's store commands only (not the core)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sami_control import storecli
from sami_control.cli import _parser
from sami_control.core.model import (
    AgentRecord,
    AuditEntry,
    Event,
    EventType,
    State,
    TokenRecord,
)
from sami_control.core.store import Store
from sami_control.storage.postgres import PostgresStore
from sami_control.storage.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from sami_control.storage.postgres_schema import TABLES
from sami_control.storage.sqlite import SQLiteStore
from sami_control.storage.sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS
from sami_control.storage.transfer import CopyRefused, copy_sqlite_to_postgres
from tests.control.test_storage import cron_run, dep, revision, seed
from tests.pg import PgDatabase

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1.0" / "sami.db"
ALL = 2**62


async def everything(s: Store) -> dict[str, Any]:
    """All a store holds, as its interface reads it."""
    async with s.tx() as tx:
        deployments = await tx.list_deployments("", "", None, ALL, 10_000)
        revisions = await tx.list_manifest_revisions(ALL, 10_000)
        return {
            "tokens": await tx.list_tokens(),
            "clusters": await tx.list_clusters(),
            "artifacts": await tx.list_artifacts("", ALL, 10_000),
            "deployments": deployments,
            "events": {d.id: await tx.events_after(d.id, 0, 10_000) for d in deployments},
            "agents": await tx.list_agents(""),
            "revisions": revisions,
            "current": await tx.current_manifest_revision_id(),
            "files": {r.id: await tx.manifest_files(r.id) for r in revisions},
            "audit": await tx.list_audit(0, 10_000),
            "cron_runs": await tx.list_cron_runs("", "", ALL, 10_000),
        }


async def sqlite_view(data: Path) -> dict[str, Any]:
    s = SQLiteStore(data)
    try:
        return await everything(s)
    finally:
        await s.close()


def sqlite_counts(data: Path) -> dict[str, int]:
    conn = sqlite3.connect(data / SQLiteStore.FILE_NAME)
    try:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in TABLES}
    finally:
        conn.close()


async def populate(data: Path) -> None:
    """A data folder with a row of everything, written through the store interface."""
    s = SQLiteStore(data)
    try:
        await seed(s)
        async with s.tx() as tx:
            await tx.insert_token(
                TokenRecord("t1", "ci", "deployer", "h", services=["web"], created_at=1.0)  # type: ignore[arg-type]
            )
            for i in range(1, 6):
                d = dep(i, request_id=f"r{i}", created_by_token="t1")
                d.cancel_requested = i == 2
                await tx.insert_deployment(d)
                for n in range(1, 4):
                    await tx.append_event(Event(d.id, n, EventType.PROGRESS, State.QUEUED))
            await tx.upsert_agent(AgentRecord("a1", "c1", "0.1", ["swarm"], 1.0, 2.0))
            rev = revision(1)
            rev.synced_seq = 1
            await tx.insert_manifest_revision(rev, {"web/stage.yml": b"x: 1\n", "b": b"\x00\xff"})
            for i in range(3):
                await tx.append_audit(AuditEntry(float(i), "t1", "ci", "a", f"dep_{i}", "ok"))
            await tx.insert_cron_run(cron_run(1, exit_code=None))
    finally:
        await s.close()


async def copied_view(url: str) -> tuple[PostgresStore, dict[str, Any]]:
    pg = PostgresStore(url)
    await pg.open()
    return pg, await everything(pg)


async def test_a_folder_written_through_the_store_is_copied_whole(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    data = tmp_path / "data"
    await populate(data)
    before = await sqlite_view(data)
    seen: list[tuple[str, int, int]] = []
    counts = await copy_sqlite_to_postgres(data, pg_database.url, lambda *p: seen.append(p))
    assert counts == sqlite_counts(data)
    assert counts["deployments"] == 5 and counts["events"] == 15 and counts["cron_runs"] == 1
    assert ("events", 15, 15) in seen
    pg, after = await copied_view(pg_database.url)
    try:
        assert after == before
        # New rows come after the copied ones: seq values (and page tokens) stay valid.
        async with pg.tx() as tx:
            d = dep(6)
            await tx.insert_deployment(d)
            audit = AuditEntry(9.0, "t1", "ci", "a", "dep_6", "ok")
            await tx.append_audit(audit)
            run = cron_run(2)
            await tx.insert_cron_run(run)
        assert d.seq > max(x.seq for x in before["deployments"])
        assert audit.seq > max(x.seq for x in before["audit"])
        assert run.seq > before["cron_runs"][0].seq
    finally:
        await pg.close()


async def test_the_previous_release_fixture_is_upgraded_then_copied(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    shutil.copy(FIXTURE, data / SQLiteStore.FILE_NAME)
    counts = await copy_sqlite_to_postgres(data, pg_database.url)
    assert counts == sqlite_counts(data)
    assert counts["deployments"] == 5 and counts["events"] == 21 and counts["audit"] == 14
    pg, after = await copied_view(pg_database.url)
    await pg.close()
    assert after == await sqlite_view(data)
    # What later SQLite schemas carried over (rollback_of) is there too.
    assert any(d.rollback_of for d in after["deployments"])


async def test_a_database_that_holds_data_is_refused_and_left_alone(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    data = tmp_path / "data"
    await populate(data)
    pg = PostgresStore(pg_database.url)
    await pg.open()
    await seed(pg)
    await pg.close()
    with pytest.raises(CopyRefused) as refused:
        await copy_sqlite_to_postgres(data, pg_database.url)
    assert "is not empty (clusters: 1, cluster_environments: 2, artifacts: 1 rows)" in str(
        refused.value
    )
    assert pg_database.sql("SELECT count(*) FROM deployments") == "0"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = storecli.main(_parser().parse_args(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_store_copy_prints_verified_counts_and_migrate_prints_versions(
    tmp_path: Path, pg_database: PgDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    await populate(data)
    # storecli runs its own event loop: from a thread, as the CLI would from none.
    code, out, err = await asyncio.to_thread(
        run_cli, ["store", "copy", "--data", str(data), "--to", pg_database.url], capsys
    )
    assert code == 0, err
    assert "deployments           5" in out and "events                15" in out
    assert "copying events: 15/15" in err
    code, out, err = await asyncio.to_thread(
        run_cli, ["store", "copy", "--data", str(data), "--to", pg_database.url], capsys
    )
    assert code == 2 and "is not empty (tokens: 1," in err
    code, out, _ = await asyncio.to_thread(run_cli, ["migrate", "--store", pg_database.url], capsys)
    assert code == 0
    assert out.endswith(f"/{pg_database.name}: schema version {len(PG_MIGRATIONS)} (up to date)\n")


async def test_migrate_upgrades_a_data_folder_and_says_from_what(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    shutil.copy(FIXTURE, data / SQLiteStore.FILE_NAME)
    code, out, _ = await asyncio.to_thread(run_cli, ["migrate", "--data", str(data)], capsys)
    assert (code, out) == (
        0,
        f"sqlite {data}: schema version {len(SQLITE_MIGRATIONS)} (migrated from 4)\n",
    )
    code, out, _ = await asyncio.to_thread(run_cli, ["migrate", "--data", str(data)], capsys)
    assert out.endswith("(up to date)\n")
