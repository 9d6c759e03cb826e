"""What only the SQLite store has: its data folder (private, 0700) and the upgrades of data
folders written by earlier releases. The behaviour both backends share is in
test_storage.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog.testing

from sami_control.core.model import AgentRecord
from sami_control.storage.sqlite import DataDirUnsafe, SQLiteStore
from tests.control.test_storage import art, dep


async def test_sqlite_upgrade_carries_rollbacks_over_from_their_reason(tmp_path: Path) -> None:
    """A data folder written before deployments had rollback_of (schema 4): opening it
    upgrades it in place, and the rollbacks `sami rollback` made say what they went back to."""
    import sqlite3

    from sami_control.storage.sqlite_schema import MIGRATIONS

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    conn = sqlite3.connect(data / SQLiteStore.FILE_NAME)
    for migration in MIGRATIONS[:4]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 4")
    target, rollback, other = "dep_" + "1" * 16, "dep_" + "2" * 16, "dep_" + "3" * 16
    columns = (
        "id, service, environment, pull_request, cluster, action, deployment_type, stack_name,"
        " state, reason, request_hash, status_message, agent_id, attempt, epoch, lease_id,"
        " lease_expires, agent_sequence, last_sequence, cancel_requested, created_by,"
        " created_at, updated_at, finished_at, manifest_revision, converge_timeout,"
        " stack_files, image_services, manifest_folder, manifest_settings"
    )
    for ident, reason in (
        (target, "release 1"),
        (rollback, f"rollback to {target}: broke login"),
        (other, "rollback to the old one, by hand"),
    ):
        conn.execute(
            f"INSERT INTO deployments ({columns}) VALUES "
            "(?, 'web', 'stage', 0, 'c1', 1, 'swarm', 'stage_web', 4, ?, '', '', '', 1, 1, '',"
            " 0, 0, 1, 0, 'ci', 1, 1, 1, 'rev', 300, '[]', '[]', 'f', '{}')",
            (ident, reason),
        )
    conn.commit()
    conn.close()
    store = SQLiteStore(data)
    try:
        async with store.tx() as tx:
            got = {i: await tx.get_deployment(i) for i in (target, rollback, other)}
        assert {i: d.rollback_of for i, d in got.items() if d} == {
            target: "",
            rollback: target,
            other: "",
        }
        assert got[rollback] is not None and got[rollback].reason.endswith("broke login")
    finally:
        await store.close()


def test_a_loose_data_folder_is_tightened_to_0700_and_logged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # whatever the umask said
    with structlog.testing.capture_logs() as logs:
        SQLiteStore(data).close_now()
    assert data.stat().st_mode & 0o777 == 0o700
    assert [e for e in logs if e["event"] == "data_folder_tightened"] == [
        {
            "event": "data_folder_tightened",
            "log_level": "warning",
            "path": str(data),
            "was": "0755",
            "now": "0700",
        }
    ]


def test_a_loose_data_folder_that_is_not_ours_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    data.chmod(0o750)

    def not_allowed(path: object, mode: int) -> None:  # what chmod says to a non-owner
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", not_allowed)
    with pytest.raises(DataDirUnsafe, match=r"mode 0750: other users may read it.*chmod 700"):
        SQLiteStore(data)
    assert not (data / "sami.db").exists()


def test_a_private_data_folder_is_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with structlog.testing.capture_logs() as logs:
        SQLiteStore(data).close_now()
    assert data.stat().st_mode & 0o777 == 0o700
    assert not [e for e in logs if e["event"] == "data_folder_tightened"]


def test_serve_refuses_a_loose_data_folder_it_cannot_tighten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from sami_control.server import ControlServer, ListenRefused, ServeConfig

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)

    def not_allowed(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    async def build() -> None:
        ControlServer(ServeConfig(data_dir=data))

    monkeypatch.setattr(os, "chmod", not_allowed)
    with pytest.raises(ListenRefused, match="other users may read it"):
        asyncio.run(build())
    monkeypatch.undo()
    # The data folder's lock was released: a server can start once the folder is fixed.
    data.chmod(0o700)

    async def build_and_close() -> None:
        ControlServer(ServeConfig(data_dir=data)).close()

    asyncio.run(build_and_close())


async def test_sqlite_upgrade_keys_agents_by_cluster(tmp_path: Path) -> None:
    """A data folder written when agents were keyed by id alone (schema 5): its records are
    kept, and afterwards two clusters may each have an agent of the same id."""
    import sqlite3

    from sami_control.storage.sqlite_schema import MIGRATIONS

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    conn = sqlite3.connect(data / SQLiteStore.FILE_NAME)
    for migration in MIGRATIONS[:5]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("INSERT INTO agents VALUES ('mgr-1', 'prod', '0.1', '[\"swarm\"]', 1, 2)")
    conn.commit()
    conn.close()
    store = SQLiteStore(data)
    try:
        async with store.tx() as tx:
            await tx.upsert_agent(AgentRecord("mgr-1", "stage", "0.2", ["swarm"], 3.0, 4.0))
            await tx.upsert_agent(AgentRecord("mgr-1", "stage", "0.3", ["swarm"], 3.0, 5.0))
            got = [(a.cluster, a.agent_id, a.version) for a in await tx.list_agents("")]
        assert got == [("prod", "mgr-1", "0.1"), ("stage", "mgr-1", "0.3")]
    finally:
        await store.close()


async def test_sqlite_upgrade_scopes_request_ids_to_the_token(tmp_path: Path) -> None:
    """A data folder from when request ids were unique across tokens (schema 6): a
    deployment gets the id of the one token with the name it records, so that token's
    retries still find it, and another token may use the same key."""
    import sqlite3

    from sami_control.storage.sqlite_schema import MIGRATIONS

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    conn = sqlite3.connect(data / SQLiteStore.FILE_NAME)
    for migration in MIGRATIONS[:6]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 6")
    conn.execute(
        "INSERT INTO tokens (id, name, role, secret_hash, cluster, services, environments,"
        " created_at, expires_at, revoked_at) VALUES"
        " ('tok_ci', 'ci', 'deployer', 'h', '', '[]', '[]', 1, 0, 0)"
    )
    conn.execute(
        "INSERT INTO deployments (id, service, environment, pull_request, cluster, action,"
        " deployment_type, stack_name, state, reason, request_id, request_hash,"
        " status_message, agent_id, attempt, epoch, lease_id, lease_expires, agent_sequence,"
        " last_sequence, cancel_requested, created_by, created_at, updated_at, finished_at,"
        " manifest_revision, converge_timeout, stack_files, image_services, manifest_folder,"
        " manifest_settings) VALUES ('dep_1', 'web', 'stage', 0, 'c1', 1, 'swarm',"
        " 'stage_web', 4, '', 'ci-7', 'h', '', '', 1, 1, '', 0, 0, 1, 0, 'ci', 1, 1, 1,"
        " 'rev', 300, '[]', '[]', 'f', '{}')"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(data)
    try:
        async with store.tx() as tx:
            found = await tx.get_deployment_by_request_id("tok_ci", "ci-7")
            assert found is not None and found.id == "dep_1"
            await tx.insert_artifact(art())
            await tx.insert_deployment(dep(2, request_id="ci-7", created_by_token="tok_admin"))
            assert (await tx.get_deployment_by_request_id("tok_admin", "ci-7")).id == "dep_2"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_data_folder_written_by_a_newer_sami_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from sami_control.storage.sqlite_schema import MIGRATIONS

    SQLiteStore(tmp_path / "data").close_now()
    conn = sqlite3.connect(tmp_path / "data" / SQLiteStore.FILE_NAME)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    newer = len(MIGRATIONS) + 1
    with pytest.raises(RuntimeError, match=rf"written by a newer Sami \(schema {newer}\); upgrade"):
        SQLiteStore(tmp_path / "data")
