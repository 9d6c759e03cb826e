"""The data folder under operations: a consistent backup while serving, a restore that is
refused while serving and keeps the previous database, one server per folder, and a
graceful stop (SIGTERM) with agents connected and a deployment in flight."""

from __future__ import annotations

import collections
import json
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.faults.checkers import Load
from tests.harness import PY, base_env, free_port, wait_for

pytestmark = pytest.mark.timeout(180)


def control_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "sami_control", *args],
        capture_output=True,
        text=True,
        env=base_env(),
        timeout=60,
    )


def deployments_in(db: Path) -> dict[str, list[int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        events: dict[str, list[int]] = collections.defaultdict(list)
        for dep_id, seq in conn.execute(
            "SELECT deployment_id, sequence FROM events ORDER BY deployment_id, sequence"
        ):
            events[dep_id].append(seq)
        for dep_id, last in conn.execute("SELECT id, last_sequence FROM deployments"):
            assert events[dep_id] == list(range(1, last + 1)), dep_id
        return dict(events)
    finally:
        conn.close()


def test_backup_while_serving_then_restore(stack: Stack, tmp_path: Path) -> None:
    load = Load(stack.control.addr, stack.admin, stack.artifact, ["web", "api"], interval=0.01)
    loader = threading.Thread(target=load.run, daemon=True)
    loader.start()
    try:
        wait_for(lambda: len(load.acked) >= 20, what="some load")
        backup = tmp_path / "backups" / "sami.db"
        out = control_cmd("backup", str(backup), "--data", str(stack.control.data))
        assert out.returncode == 0, out.stderr
        assert "integrity checked" in out.stdout
    finally:
        load.stop.set()
        loader.join(10)
    in_backup = deployments_in(backup)  # consistent: every deployment with all its events
    assert len(in_backup) >= 20
    # One more, certainly after the backup: the restore must take it away.
    after = stack.sami("deploy", "web", "--env", "production", "--artifact", stack.artifact)
    assert after.rc == 0 and after.last not in in_backup

    refused = control_cmd("restore", str(backup), "--data", str(stack.control.data))
    assert refused.returncode == 2 and "in use by another sami-control" in refused.stderr

    stack.control.kill(signal.SIGTERM)
    restored = control_cmd("restore", str(backup), "--data", str(stack.control.data))
    assert restored.returncode == 0, restored.stderr
    assert (stack.control.data / "sami.db.before-restore").exists()
    stack.control.start()
    some = next(iter(in_backup))
    assert stack.sami("get", some).rc == 0
    assert stack.sami("get", after.last).rc == 2  # gone with the restore, as restores go


def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database")
    out = control_cmd("restore", str(junk), "--data", str(tmp_path / "data"))
    assert out.returncode == 2 and "not a Sami database" in out.stderr
    assert not (tmp_path / "data" / "sami.db").exists()


def test_one_server_per_data_folder(stack: Stack) -> None:
    other = subprocess.run(
        [
            PY,
            "-m",
            "sami_control",
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--data",
            str(stack.control.data),
        ],
        capture_output=True,
        text=True,
        env=base_env(),
        timeout=30,
    )
    assert other.returncode == 2
    assert "in use by another sami-control" in other.stderr


def test_sigterm_stops_gracefully_and_work_resumes_after_restart(stack: Stack) -> None:
    a1 = stack.agent("a1", "--dry-run-step-seconds", "1.0")
    dep = stack.sami("deploy", "web", "--env", "stage", "--artifact", stack.artifact).last
    wait_for(lambda: stack.ledger.exists(), what="the agent applying")
    started = time.monotonic()
    code = stack.control.kill(signal.SIGTERM)
    assert code == 0
    assert time.monotonic() - started < 12  # the grace period is 10 s
    assert "stopping" in stack.control.log_path.read_text()
    stack.control.start()
    w = stack.sami("watch", dep, "--timeout", "60")
    assert w.rc == 0, w.out + w.err
    applies = [json.loads(line)["deployment_id"] for line in stack.ledger.read_text().splitlines()]
    assert applies == [dep]
    assert a1.alive()
