"""The data folder of the last release on SQLite alone (tests/fixtures/release-fbfab15:
schema 7, made by make_fixture.py with that release's code, before the store was async and
PostgreSQL came) goes on working with today's code both ways a user takes: opened in place
on SQLite, and copied into PostgreSQL with `sami-control store copy` (the documented way
to move to several replicas). Nothing is lost, retries of requests made before keep their
deployment, and new work behaves."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import PermissionDenied
from sami_control.core.model import Principal, Role, State
from sami_control.core.requests import DeploymentInput
from sami_control.core.store import Store
from sami_control.storage.postgres import PostgresStore
from sami_control.storage.sqlite import SQLiteStore
from sami_control.storage.transfer import copy_sqlite_to_postgres
from tests.pg import PgDatabase

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-fbfab15" / "sami.db"
# What make_fixture.py made (its output, in order).
FIRST, SECOND, ROLLBACK, ROLLED_BACK = (
    "dep_33b82ab591952303",
    "dep_d6f0dbb56117fe08",
    "dep_c383251a7b8fb725",
    "dep_cda0021c07ef5d40",
)
CI = Principal("1fb5223b7ea6", "ci-admin", Role.ADMIN)
REF = "127.0.0.1:5000/web@sha256:"


def _folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    shutil.copy(FIXTURE, data / SQLiteStore.FILE_NAME)
    with sqlite3.connect(data / SQLiteStore.FILE_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (7,)
    return data


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    data = _folder(tmp_path)
    s: Store
    if request.param == "sqlite":
        s = SQLiteStore(data)
    else:
        pg: PgDatabase = request.getfixturevalue("pg_database")
        await copy_sqlite_to_postgres(data, pg.url)
        s = PostgresStore(pg.url)
    await s.open()
    yield s
    await s.close()


async def test_the_data_is_all_there(store: Store) -> None:
    core = ControlPlane(store)
    stage, _ = await core.deployments.list(CI, "web", "stage", None, 50, "")
    assert [d.id for d in stage] == [ROLLED_BACK, ROLLBACK, SECOND, FIRST]
    assert [d.state for d in stage] == [State.ROLLED_BACK, *[State.SUCCEEDED] * 3]
    assert {d.id: d.rollback_of for d in stage}[ROLLBACK] == FIRST
    for d in stage:
        seqs = [e.sequence async for e in store.iter_events(d.id, 0)]
        assert seqs == list(range(1, d.last_sequence + 1)) and len(seqs) == 5
    assert [c.id for c in await core.clusters.list(CI)] == ["main"]
    assert {t.name for t in await core.tokens.list(CI)} == {"manager-1", "ci-web", "ci-admin"}
    agents, _ = await core.agents.list(CI, "")
    assert [(a.cluster, a.agent_id, a.version) for a in agents] == [("main", "manager-1", "0.2.0")]
    arts, _ = await core.artifacts.list(CI, "web", 50, "")
    assert len(arts) == 3
    rev, current = await core.manifests.get(CI, "current")
    assert current and rev.commit == "b" * 40
    entries, _ = await core.audit.list(CI, 0, "", 500, "")
    with sqlite3.connect(f"file:{FIXTURE}?immutable=1", uri=True) as before:
        assert len(entries) == before.execute("SELECT count(*) FROM audit").fetchone()[0] > 10


async def test_retries_and_new_work_behave(store: Store) -> None:
    core = ControlPlane(store)
    again = await core.deployments.create(
        CI, DeploymentInput("web", "stage", REF + "a" * 64, reason="release 1", request_id="ci-0")
    )
    assert again.id == FIRST
    (queued,) = (await core.deployments.list(CI, "web", "production", State.QUEUED, 50, ""))[0]
    newer = await core.deployments.create(
        CI, DeploymentInput("web", "production", REF + "c" * 64, request_id="ci-9")
    )
    assert (await core.deployments.get(CI, queued.id)).state is State.SUPERSEDED
    assert newer.state is State.QUEUED
    # Sequences go on after the copied ones: the new deployment pages after the old ones.
    page, _ = await core.deployments.list(CI, "web", "", None, 1, "")
    assert page[0].id == newer.id
    ci_web = next(t for t in await core.tokens.list(CI) if t.name == "ci-web")
    scoped = Principal(
        ci_web.id, "ci-web", Role.DEPLOYER, services=("web",), environments=("stage",)
    )
    with pytest.raises(PermissionDenied):
        await core.deployments.create(scoped, DeploymentInput("web", "production", REF + "c" * 64))
