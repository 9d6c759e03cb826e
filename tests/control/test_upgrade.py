"""A data folder written by the previous release (tests/fixtures/release-0.1.0: schema 4,
made by make_fixture.py with that release's code) opens with today's code and upgrades in
place: nothing is lost, what later schemas added is carried over, and work goes on."""

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
from sami_control.storage.sqlite import SQLiteStore
from sami_control.storage.sqlite_schema import MIGRATIONS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1.0" / "sami.db"
# What make_fixture.py made (its output, in order).
FIRST, SECOND, ROLLBACK, ROLLED_BACK = (
    "dep_ce24a316b8f806c0",
    "dep_5e72f37970e12ade",
    "dep_fd865302f8e4eebf",
    "dep_8a314897e7a84d56",
)
CI = Principal("7ea4cbc3fbe0", "ci-admin", Role.ADMIN)


@pytest.fixture
async def upgraded(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    shutil.copy(FIXTURE, data / SQLiteStore.FILE_NAME)
    with sqlite3.connect(data / SQLiteStore.FILE_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    store = SQLiteStore(data)
    await store.open()
    yield ControlPlane(store)
    await store.close()


async def test_the_previous_release_s_data_folder_upgrades_in_place(upgraded: ControlPlane) -> None:
    core = upgraded
    async with core.store.tx() as tx:
        version = tx.c.execute("PRAGMA user_version").fetchone()[0]  # type: ignore[attr-defined]
    assert version == len(MIGRATIONS)
    stage, _ = await core.deployments.list(CI, "web", "stage", None, 50, "")
    assert [d.id for d in stage] == [ROLLED_BACK, ROLLBACK, SECOND, FIRST]
    assert [d.state for d in stage] == [State.ROLLED_BACK, *[State.SUCCEEDED] * 3]
    # Every event is there, in order, without gaps.
    for d in stage:
        seqs = [e.sequence async for e in core.store.iter_events(d.id, 0)]
        assert seqs == list(range(1, d.last_sequence + 1)) and len(seqs) == 5
    # Schema 5 carried the rollback over from its reason.
    assert {d.id: d.rollback_of for d in stage} == {
        ROLLED_BACK: "",
        ROLLBACK: FIRST,
        SECOND: "",
        FIRST: "",
    }
    # Clusters, tokens, agents, artifacts, the manifests and the audit log are all there.
    assert [c.id for c in await core.clusters.list(CI)] == ["main"]
    assert {t.name for t in await core.tokens.list(CI)} == {"manager-1", "ci-web", "ci-admin"}
    agents, _ = await core.agents.list(CI, "")
    assert [(a.cluster, a.agent_id) for a in agents] == [("main", "manager-1")]
    arts, _ = await core.artifacts.list(CI, "web", 50, "")
    assert len(arts) == 3
    rev, current = await core.manifests.get(CI, "current")
    assert current and rev.commit == "a" * 40
    entries, _ = await core.audit.list(CI, 0, "", 500, "")
    with sqlite3.connect(f"file:{FIXTURE}?immutable=1", uri=True) as before:
        assert len(entries) == before.execute("SELECT count(*) FROM audit").fetchone()[0] > 10


async def test_after_the_upgrade_retries_and_new_work_behave(upgraded: ControlPlane) -> None:
    core = upgraded
    # A CI retry of a request made before the upgrade gets the same deployment (schema 7
    # gave old deployments the id of the token that made them).
    again = await core.deployments.create(
        CI,
        DeploymentInput(
            "web",
            "stage",
            "127.0.0.1:5000/web@sha256:" + "a" * 64,
            reason="release 1",
            request_id="ci-0",
        ),
    )
    assert again.id == FIRST
    # The deployment queued at upgrade time is still queued, and new work supersedes it.
    (queued,) = (await core.deployments.list(CI, "web", "production", State.QUEUED, 50, ""))[0]
    newer = await core.deployments.create(
        CI, DeploymentInput("web", "production", "127.0.0.1:5000/web@sha256:" + "c" * 64)
    )
    assert (await core.deployments.get(CI, queued.id)).state is State.SUPERSEDED
    assert newer.state is State.QUEUED
    # Old tokens keep their scopes: the scoped CI token may not deploy to production.
    ci_web = next(t for t in await core.tokens.list(CI) if t.name == "ci-web")
    scoped = Principal(
        ci_web.id, "ci-web", Role.DEPLOYER, services=("web",), environments=("stage",)
    )
    with pytest.raises(PermissionDenied):
        await core.deployments.create(
            scoped, DeploymentInput("web", "production", "127.0.0.1:5000/web@sha256:" + "c" * 64)
        )
