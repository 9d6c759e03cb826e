"""What only the PostgreSQL store has: a server that can go away (lost connections, a
crash-restart), a connection pool, the URL's settings, and migrations that several
replicas may run at once. The behaviour both backends share is in test_storage.py."""

from __future__ import annotations

import asyncio

import pytest

from sami_control.core.model import Cluster, Event, EventType, State
from sami_control.core.store import StorageFailed
from sami_control.storage.postgres import (
    BadStoreURL,
    PostgresStore,
    describe,
    split_pool_size,
)
from sami_control.storage.postgres_schema import MIGRATIONS, SchemaTooNew
from tests.control.test_storage import dep, seed
from tests.harness import free_port
from tests.pg import PgDatabase


async def opened(url: str, pool_size: int = 3) -> PostgresStore:
    s = PostgresStore(url, pool_size=pool_size)
    await s.open()
    return s


# The client learns of the cut at the next query, or before it (the pool detaches the dead
# connection): both must read as StorageFailed.
@pytest.mark.parametrize("noticed_after", [0.0, 0.3])
async def test_a_connection_lost_mid_transaction_fails_it_whole_then_the_store_recovers(
    pg_database: PgDatabase, noticed_after: float
) -> None:
    s = await opened(pg_database.url)
    try:
        await seed(s)
        with pytest.raises(StorageFailed) as failed:
            async with s.tx() as tx:
                await tx.insert_deployment(dep(1))
                # A proxy, a failover or an administrator cuts every connection of the pool.
                assert await asyncio.to_thread(pg_database.terminate_backends) >= 1
                await asyncio.sleep(noticed_after)
                await tx.append_event(Event("dep_1", 1, EventType.STATE_CHANGED, State.QUEUED))
        message = str(failed.value)
        assert f"127.0.0.1:{pg_database.cluster.port}/{pg_database.name}" in message
        assert "Retryable" in message and "nothing of this transaction was kept" in message
        # The next block works by itself (the pool dropped the dead connections), and
        # finds nothing of the failed one.
        async with s.tx() as tx:
            assert await tx.get_deployment("dep_1") is None
            assert await tx.events_after("dep_1", 0, 10) == []
            await tx.insert_deployment(dep(2))
        async with s.tx() as tx:
            assert (await tx.get_deployment("dep_2")) is not None
    finally:
        await s.close()


async def test_a_crash_restart_of_postgresql_loses_nothing_committed(
    pg_database: PgDatabase,
) -> None:
    s = await opened(pg_database.url)
    try:
        await seed(s)
        async with s.tx() as tx:
            await tx.insert_deployment(dep(1))
        # -m immediate: no shutdown checkpoint, the WAL is replayed (fsync is on).
        await asyncio.to_thread(pg_database.cluster.restart, "immediate")
        async with s.tx() as tx:  # the pool's connections all died: the store reconnects
            got = await tx.get_deployment("dep_1")
        assert got is not None and got.id == "dep_1"
    finally:
        await s.close()


async def test_a_database_that_is_down_fails_calls_until_it_is_back(
    pg_database: PgDatabase,
) -> None:
    s = await opened(pg_database.url)
    try:
        await seed(s)
        await asyncio.to_thread(pg_database.cluster.stop_server)
        try:
            for _ in range(2):  # the pool's connections are dead, and no new one can be made
                with pytest.raises(StorageFailed) as failed:
                    async with s.tx() as tx:
                        await tx.get_cluster("c1")
                assert f"{pg_database.cluster.port}/{pg_database.name} is unavailable" in str(
                    failed.value
                )
        finally:
            await asyncio.to_thread(pg_database.cluster.start_server)
        async with s.tx() as tx:
            assert await tx.get_cluster("c1") is not None
    finally:
        await s.close()


async def test_a_statement_that_does_not_answer_in_time_fails_as_unavailable(
    pg_database: PgDatabase,
) -> None:
    """What a silent network cut looks like to the client: nothing comes back."""
    holder = await opened(pg_database.url)
    waiter = PostgresStore(pg_database.url, pool_size=2, command_timeout=0.5)
    await waiter.open()
    try:
        await seed(holder)
        async with holder.tx() as tx:
            await tx.lock("web/stage/0")
            with pytest.raises(StorageFailed, match=r"is unavailable.*Retryable"):
                async with waiter.tx() as other:
                    await other.lock("web/stage/0")  # held: no answer within 0.5 s
        async with waiter.tx() as other:  # and the next block works
            await other.lock("web/stage/0")
            assert await other.get_cluster("c1") is not None
    finally:
        await waiter.close()
        await holder.close()


async def test_an_unreachable_server_is_storage_failed_naming_it_without_the_password() -> None:
    port = free_port()  # nothing listens there
    s = PostgresStore(f"postgresql://sami:hunter2@127.0.0.1:{port}/sami")
    with pytest.raises(StorageFailed) as failed:
        await s.open()
    message = str(failed.value)
    assert f"127.0.0.1:{port}/sami is unavailable" in message and "Retryable" in message
    assert "hunter2" not in message


async def test_sslmode_from_the_url_is_honoured(pg_database: PgDatabase) -> None:
    """The test server has no TLS: a URL that requires it must not fall back to clear."""
    s = PostgresStore(pg_database.url + "?sslmode=require")
    with pytest.raises(StorageFailed, match=r"(?i)ssl"):
        await s.open()
    s = PostgresStore(pg_database.url + "?sslmode=disable&pool_size=2")
    await s.open()
    await s.close()


async def test_the_pool_is_bounded(pg_database: PgDatabase) -> None:
    s = await opened(pg_database.url + "?pool_size=2", pool_size=None)  # type: ignore[arg-type]
    assert s.pool_size == 2
    holding = asyncio.Event()
    counts: list[int] = []

    async def hold() -> None:
        async with s.tx() as tx:
            await tx.lock("hold")  # nothing else to do: keep the connection a moment
            holding.set()
            await asyncio.sleep(0.3)

    async def count() -> None:
        await holding.wait()
        out = await asyncio.to_thread(
            pg_database.sql,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sami-control'",
        )
        counts.append(int(out))

    try:
        await asyncio.gather(*(hold() for _ in range(5)), count())
    finally:
        await s.close()
    assert counts == [2]


def test_the_url_names_the_database_and_may_size_the_pool() -> None:
    url = "postgresql://sami:s3cret@db.internal:5433/sami?sslmode=verify-full&pool_size=4"
    assert describe(url) == "db.internal:5433/sami"
    assert split_pool_size(url, None) == (
        "postgresql://sami:s3cret@db.internal:5433/sami?sslmode=verify-full",
        4,
    )
    assert split_pool_size("postgres://h/db", None) == ("postgres://h/db", 10)
    assert split_pool_size("postgres://h/db?pool_size=4", 7)[1] == 7
    with pytest.raises(BadStoreURL, match="pool_size='many'"):
        split_pool_size("postgres://h/db?pool_size=many", None)
    with pytest.raises(BadStoreURL, match="not a PostgreSQL URL"):
        PostgresStore("mysql://h/db")


async def test_a_database_migrated_by_a_newer_sami_is_refused(pg_database: PgDatabase) -> None:
    s = await opened(pg_database.url)
    await s.close()
    newer = len(MIGRATIONS) + 1
    await asyncio.to_thread(
        pg_database.sql, f"INSERT INTO schema_version (version) VALUES ({newer})"
    )
    with pytest.raises(SchemaTooNew) as refused:
        await opened(pg_database.url)
    assert str(refused.value) == (
        f"the PostgreSQL database 127.0.0.1:{pg_database.cluster.port}/{pg_database.name} "
        f"was migrated by a newer Sami (schema {newer}; this sami-control knows up to "
        f"{len(MIGRATIONS)}): upgrade sami-control"
    )


async def test_replicas_opening_a_fresh_database_together_migrate_it_once(
    pg_database: PgDatabase,
) -> None:
    stores = [PostgresStore(pg_database.url, pool_size=2) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        versions = await asyncio.to_thread(
            pg_database.sql, "SELECT string_agg(version::text, ',') FROM schema_version"
        )
        assert versions == ",".join(str(i + 1) for i in range(len(MIGRATIONS)))
        async with stores[2].tx() as tx:
            await tx.insert_cluster(Cluster("c1", ["stage"]))
        async with stores[0].tx() as tx:
            assert await tx.get_cluster("c1") == Cluster("c1", ["stage"])
    finally:
        for s in stores:
            await s.close()
