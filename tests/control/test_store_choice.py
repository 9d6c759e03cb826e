"""Choosing the store: `--store` / SAMI_STORE a postgresql:// URL, else SQLite in --data;
anything else refused by name. And the commands that cannot work on PostgreSQL say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from sami_control import cli
from sami_control.storage import BadStoreURL, open_store, redact
from sami_control.storage.postgres import PostgresStore
from sami_control.storage.sqlite import SQLiteStore


def test_a_postgresql_url_is_postgresql_and_nothing_is_sqlite(tmp_path: Path) -> None:
    for url in ("postgresql://sami@db:5432/sami", "postgres://sami@db/sami?pool_size=3"):
        store = open_store(url, tmp_path / "unused")
        assert isinstance(store, PostgresStore) and store.kind == "postgresql"
    assert not (tmp_path / "unused").exists()  # no data folder made for PostgreSQL
    assert open_store("postgres://sami@db/sami?pool_size=3", tmp_path).pool_size == 3  # type: ignore[attr-defined]
    for nothing in (None, ""):
        store = open_store(nothing, tmp_path / "data")
        assert isinstance(store, SQLiteStore)
        store.close_now()


def test_an_unknown_store_is_refused_naming_it_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(BadStoreURL) as refused:
        open_store("mysql://root:hunter2@db/sami", tmp_path)
    assert str(refused.value).startswith("unknown store 'mysql://root:***@db/sami': give a")
    assert redact("postgresql://sami@db/x") == "postgresql://sami@db/x"


@pytest.mark.parametrize("command", [["backup", "/tmp/x.db"], ["restore", "/tmp/x.db"]])
def test_backup_and_restore_of_postgresql_point_to_its_own_tools(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Not cli.main: it configures logging for the process, onto this test's captured stdout.
    args = cli._parser().parse_args([*command, "--store", "postgresql://sami@127.0.0.1:1/sami"])
    assert cli._backup_or_restore(args) == 2
    err = capsys.readouterr().err
    assert "a PostgreSQL store is backed up and restored with PostgreSQL's own tools" in err
    assert ("pg_dump" if command[0] == "backup" else "pg_restore") in err


def test_sami_store_is_the_default_of_store(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setenv("SAMI_STORE", "postgresql://sami@db/sami")
    reloaded = importlib.reload(cli)
    try:
        for argv in (["serve"], ["token", "list"], ["cluster", "create", "c", "--env", "stage"]):
            assert reloaded._parser().parse_args(argv).store == "postgresql://sami@db/sami"
    finally:
        monkeypatch.delenv("SAMI_STORE")
        importlib.reload(cli)


async def test_serve_with_a_postgresql_store_takes_no_data_folder_lock(tmp_path: Path) -> None:
    from sami_control.server import ControlServer, ServeConfig

    server = ControlServer(
        ServeConfig(data_dir=tmp_path / "data", store="postgresql://sami@127.0.0.1:1/sami")
    )
    assert server.store.kind == "postgresql"
    # Replicas on one machine may share a --data default: nothing is locked in it.
    assert not (tmp_path / "data").exists()
