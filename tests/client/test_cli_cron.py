"""`sami cron runs` against the real control plane (in-process): the table people read, the
JSON scripts read, the limit, and the usual exit statuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from sami_control import offline
from sami_control.core import cron_runs
from sami_control.core.model import ArtifactKind, CronRunOutcome, Principal, Role
from sami_control.core.requests import ArtifactInput, DeploymentInput
from tests.control.conftest import LiveServer
from tests.control.test_cron_runs import REF, T0, cron_repo

from .cli_result import Result

ADMIN = Principal("t0", "admin", Role.ADMIN)


@pytest.fixture
def with_runs(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    """Three runs of backup in stage: two succeeded, the newest failed with exit code 3."""
    offline.add_cluster(live_server.data, "c1", ["stage", "pull_request"])

    async def on_the_servers_loop() -> None:
        await _record_runs(live_server)

    asyncio.run_coroutine_threadsafe(on_the_servers_loop(), live_server.loop).result(10)
    monkeypatch.setenv("SAMI_ADDR", live_server.addr)
    monkeypatch.setenv("SAMI_TOKEN", live_server.token("reader"))
    return live_server


async def _record_runs(live_server: LiveServer) -> None:
    core = live_server.server.core
    await core.manifests.sync(ADMIN, "", list(cron_repo().items()))
    await core.artifacts.register(ADMIN, ArtifactInput("backup", ArtifactKind.IMAGE, REF, ""))
    d = await core.deployments.create(ADMIN, DeploymentInput("backup", "stage", REF))
    for i, (outcome, code, message) in enumerate(
        [
            (CronRunOutcome.SUCCEEDED, 0, "1/1 task(s) completed"),
            (CronRunOutcome.SUCCEEDED, 0, "1/1 task(s) completed"),
            (CronRunOutcome.FAILED, 3, "task: non-zero exit (3) (task abc); last output: boom"),
        ]
    ):
        scheduled = T0 + 300 * i
        await core.cron_runs.record(
            "c1",
            "m1",
            cron_runs.CronRunInput(
                run_id=f"cron_{i}",
                deployment_id=d.id,
                job="backup",
                scheduled_for=scheduled,
                started_at=scheduled + 1,
                finished_at=scheduled + 1 + 2.5 * (i + 1) + (150 if i == 0 else 0),
                outcome=int(outcome),
                exit_code=code,
                message=message,
                schedule="*/5 * * * *",
            ),
        )


def test_runs_newest_first_in_a_table(with_runs: LiveServer, sami: Callable[..., Result]) -> None:
    r = sami("cron", "runs", "backup", "--env", "stage")
    assert r.code == 0, r.err
    header, *rows = r.lines
    assert header.split() == [
        "SCHEDULED",
        "(UTC)",
        "OUTCOME",
        "EXIT",
        "TOOK",
        "JOB",
        "DEPLOYMENT",
        "MESSAGE",
    ]
    assert [row.split()[:6] for row in rows] == [
        ["2026-01-01", "00:10:00", "FAILED", "3", "7.5s", "backup"],
        ["2026-01-01", "00:05:00", "SUCCEEDED", "0", "5.0s", "backup"],
        ["2026-01-01", "00:00:00", "SUCCEEDED", "0", "2m32s", "backup"],
    ]
    assert rows[0].endswith("task: non-zero exit (3) (task abc); last output: boom")
    assert len(sami("cron", "runs", "backup", "--env", "stage", "--limit", "1").lines) == 2


def test_runs_as_json(with_runs: LiveServer, sami: Callable[..., Result]) -> None:
    r = sami("cron", "runs", "backup", "--env", "stage", "-o", "json")
    assert r.code == 0, r.err
    runs = json.loads(r.out)
    assert [x["run_id"] for x in runs] == ["cron_2", "cron_1", "cron_0"]
    newest = runs[0]
    assert newest["outcome"] == "FAILED" and newest["exit_code"] == 3
    assert newest["scheduled_time"] == "2026-01-01T00:10:00Z"
    assert (newest["service"], newest["environment"], newest["cluster"]) == (
        "backup",
        "stage",
        "c1",
    )
    assert newest["agent_id"] == "m1" and newest["schedule"] == "*/5 * * * *"


def test_no_runs_bad_input_and_no_permission(
    with_runs: LiveServer, sami: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = sami("cron", "runs", "report", "--env", "stage")
    assert (empty.code, empty.out.strip()) == (0, "(none)")
    assert sami("cron", "runs", "backup").code == 2  # --env is required
    bad = sami("cron", "runs", "backup", "--env", "staging")
    assert bad.code == 2 and "environment" in bad.err
    monkeypatch.setenv("SAMI_TOKEN", with_runs.token("agent", cluster="c1"))
    denied = sami("cron", "runs", "backup", "--env", "stage")
    assert denied.code == 2 and "PERMISSION_DENIED" in denied.err
