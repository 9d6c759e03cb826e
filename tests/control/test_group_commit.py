"""Group commit (storage/sqlite.py): the transactions of one turn of the event loop share a
commit; each still rolls back alone; nothing is published or answered before the commit is
on disk, and a commit that fails keeps nothing and says so. A real SQLite file throughout,
reopened to see what a restarted control plane would find."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import InvalidArgument
from sami_control.core.model import ArtifactKind, Principal, Role, State
from sami_control.core.requests import ArtifactInput, DeploymentInput
from sami_control.core.settings import Settings
from sami_control.core.store import Conflict, StorageFailed
from sami_control.storage.sqlite import SQLiteStore
from tests import samples
from tests.control.test_storage import art, dep

ADMIN = Principal("t0", "admin", Role.ADMIN)
REF = "127.0.0.1:5000/web@sha256:" + "a" * 64


def suspends(coro: Coroutine[Any, Any, None]) -> bool:
    """Whether the coroutine would wait (it is closed either way)."""
    try:
        coro.send(None)
    except StopIteration:
        return False
    coro.close()
    return True


def slow_disk(s: SQLiteStore) -> tuple[threading.Event, Callable[[], None], Callable[[], None]]:
    """Make the store's COMMIT wait (a slow fsync) until the returned event is set; also
    returns the slow commit and the real one, to switch between them."""
    slow = threading.Event()
    real = s._run_commit

    def slow_commit() -> None:
        slow.wait(5)
        real()

    s._run_commit = slow_commit  # type: ignore[method-assign]
    return slow, slow_commit, real


async def stored_ids(path: Path) -> list[str]:
    s = SQLiteStore(path)
    try:
        async with s.tx() as tx:
            return sorted(d.id for d in await tx.list_deployments("", "", None, 2**62, 100))
    finally:
        await s.close()


def test_one_turn_of_the_loop_is_one_commit_and_a_failed_tx_rolls_back_alone(
    tmp_path: Path,
) -> None:
    async def scenario() -> list[str]:
        s = SQLiteStore(tmp_path / "data")
        async with s.tx() as tx:
            await tx.insert_artifact(art(1))
        s.group_commits()
        published: list[str] = []
        for i in (1, 2, 3):
            async with s.tx() as tx:
                await tx.insert_deployment(dep(i))
            s.after_commit(lambda i=i: published.append(f"dep_{i}"))
        with pytest.raises(Conflict):  # same id again: this one alone fails
            async with s.tx() as tx:
                await tx.insert_deployment(dep(4))
                await tx.insert_deployment(dep(2))
        assert published == []  # nothing is published before the commit
        # Nor visible to another reader (WAL: readers see committed data only).
        other = sqlite3.connect(tmp_path / "data" / "sami.db")
        assert other.execute("SELECT COUNT(*) FROM deployments").fetchone()[0] == 0
        other.close()
        await s.durable()
        assert published == ["dep_1", "dep_2", "dep_3"]
        assert (s.commits, s.batched) == (1, 4)
        await s.durable()  # nothing pending: returns at once
        await s.close()
        return await stored_ids(tmp_path / "data")

    assert asyncio.run(scenario()) == ["dep_1", "dep_2", "dep_3"]


def test_a_failed_commit_keeps_nothing_publishes_nothing_and_says_what_to_do(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        s = SQLiteStore(tmp_path / "data")
        async with s.tx() as tx:
            await tx.insert_artifact(art(1))
        s.group_commits()
        published: list[str] = []
        async with s.tx() as tx:
            await tx.insert_deployment(dep(1))
        s.after_commit(lambda: published.append("dep_1"))
        # A foreign key checked at COMMIT (deferred) makes the commit itself fail, as a full
        # disk would: the whole turn is lost, and every caller waiting on it is told.
        async with s.tx() as tx:
            tx.c.execute("PRAGMA defer_foreign_keys = ON")
            await tx.insert_deployment(dataclasses.replace(dep(2), artifact_id="art_missing"))
        with pytest.raises(StorageFailed, match=r"nothing of it was kept.*retry"):
            await s.durable()
        assert published == []
        # The next turn works again.
        async with s.tx() as tx:
            await tx.insert_deployment(dep(3))
        await s.durable()
        await s.close()

    asyncio.run(scenario())
    assert asyncio.run(stored_ids(tmp_path / "data")) == ["dep_3"]


def test_core_publishes_only_after_the_commit_and_refusals_leave_the_batch_intact(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "data")
        cp = ControlPlane(store, Settings())
        await cp.clusters.create(ADMIN, "c1", ["stage", "production"])
        await cp.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF, ""))
        await cp.manifests.sync(ADMIN, "", list(samples.repo().items()))
        store.group_commits()
        seen: list[str] = []
        cp.publisher.observers.append(
            lambda events, _: seen.extend(e.deployment_id for e in events)
        )
        d = await cp.deployments.create(ADMIN, DeploymentInput("web", "stage", REF))
        with pytest.raises(InvalidArgument):
            await cp.deployments.create(ADMIN, DeploymentInput("web", "nowhere", REF))
        d2 = await cp.deployments.create(ADMIN, DeploymentInput("web", "production", REF))
        assert seen == []
        await store.durable()
        assert seen == [d.id, d2.id]
        async with store.tx() as tx:
            assert (await tx.get_deployment(d.id)).state is State.QUEUED  # type: ignore[union-attr]
            refusals = [e for e in await tx.list_audit(0, 100) if e.outcome != "ok"]
        assert [e.outcome for e in refusals] == ["INVALID_ARGUMENT"]
        await store.close()

    asyncio.run(scenario())


def test_while_a_commit_is_in_flight_the_loop_serves_and_the_next_turn_waits_for_it(
    tmp_path: Path,
) -> None:
    """The COMMIT runs in the store's thread: the loop goes on meanwhile; what is written
    next joins the next batch; effects wait for the commit that carries their writes."""

    async def scenario() -> list[str]:
        s = SQLiteStore(tmp_path / "data")
        async with s.tx() as tx:
            await tx.insert_artifact(art(1))
        s.group_commits()
        slow, slow_commit, real = slow_disk(s)
        seen: list[str] = []
        async with s.tx() as tx:
            await tx.insert_deployment(dep(1))
        await asyncio.sleep(0.05)  # the turn ended: its COMMIT is in flight
        # Nothing is open; an effect registered now still waits for the in-flight commit.
        s.after_commit(lambda: seen.append("after 1"))
        ticks = 0
        waiter = asyncio.ensure_future(s.writable())
        while not waiter.done() and ticks < 5:
            await asyncio.sleep(0.01)  # the loop is free meanwhile
            ticks += 1
        assert ticks == 5 and not waiter.done() and seen == []
        slow.set()
        await waiter
        assert seen == ["after 1"]
        s._run_commit = real  # type: ignore[method-assign]
        async with s.tx() as tx:
            await tx.insert_deployment(dep(2))
        await s.durable()
        # A tx() that did not wait for writable() waits for the commit itself (blocking).
        slow.clear()
        s._run_commit = slow_commit  # type: ignore[method-assign]
        async with s.tx() as tx:
            await tx.insert_deployment(dep(3))
        await asyncio.sleep(0.05)
        threading.Timer(0.2, slow.set).start()
        async with s.tx() as tx:  # blocks until the commit of dep_3 returned
            await tx.insert_deployment(dep(4))
        await s.durable()
        await s.close()
        return await stored_ids(tmp_path / "data")

    assert asyncio.run(scenario()) == ["dep_1", "dep_2", "dep_3", "dep_4"]


def test_a_turn_that_only_read_commits_on_the_loop_and_its_readers_do_not_wait(
    tmp_path: Path,
) -> None:
    """Reads (GetDeployment, a watch's replay, a heartbeat's lease check) see only what is
    on disk while their batch has written nothing: they are answered at once, and the
    batch's COMMIT, which writes nothing, needs no thread and no fsync."""

    async def scenario() -> None:
        s = SQLiteStore(tmp_path / "data")
        async with s.tx() as tx:
            await tx.insert_artifact(art(1))
            await tx.insert_deployment(dep(1))
        s.group_commits()
        threaded: list[str] = []
        real = s._run_commit

        def counted() -> None:
            threaded.append("commit")
            real()

        s._run_commit = counted  # type: ignore[method-assign]
        async with s.tx() as tx:
            assert await tx.get_deployment("dep_1") is not None
        assert s._batch is not None and not suspends(s.durable())  # answered at once
        await asyncio.sleep(0.01)
        assert s._batch is None and threaded == [] and s.commits == 1
        # A read that shares its turn with a write waits for that write's commit: it may
        # have seen it.
        async with s.tx() as tx:
            await tx.get_deployment("dep_1")
        async with s.tx() as tx:
            await tx.insert_deployment(dep(2))
        assert suspends(s.durable())
        await s.durable()
        assert threaded == ["commit"] and s.commits == 2
        await s.close()

    asyncio.run(scenario())
    assert asyncio.run(stored_ids(tmp_path / "data")) == ["dep_1", "dep_2"]


def test_a_caller_cancelled_while_it_waits_leaves_the_other_waiters_waiting(
    tmp_path: Path,
) -> None:
    """A client that gives up (deadline, cancel) while its write commits must not take the
    other callers of the same batch with it, nor make them miss a failure."""

    async def scenario() -> None:
        s = SQLiteStore(tmp_path / "data")
        async with s.tx() as tx:
            await tx.insert_artifact(art(1))
        s.group_commits()
        slow, _, real = slow_disk(s)
        async with s.tx() as tx:
            await tx.insert_deployment(dep(1))
        gives_up = asyncio.ensure_future(s.durable())
        stays = asyncio.ensure_future(s.durable())
        waits_to_write = asyncio.ensure_future(s.writable())
        await asyncio.sleep(0.05)
        gives_up.cancel()
        await asyncio.sleep(0)
        assert gives_up.cancelled() and not stays.done() and not waits_to_write.done()
        slow.set()
        await asyncio.wait_for(asyncio.gather(stays, waits_to_write), 5)
        # And a failing commit reaches the durable waiter as StorageFailed, while one that
        # only waited to write is let go (its own tx() would then start a new batch).
        s._run_commit = real  # type: ignore[method-assign]
        async with s.tx() as tx:
            tx.c.execute("PRAGMA defer_foreign_keys = ON")
            await tx.insert_deployment(dataclasses.replace(dep(2), artifact_id="art_missing"))
        told = asyncio.ensure_future(s.durable())
        with pytest.raises(StorageFailed):
            await told
        await s.close()

    asyncio.run(scenario())
    assert asyncio.run(stored_ids(tmp_path / "data")) == ["dep_1"]
