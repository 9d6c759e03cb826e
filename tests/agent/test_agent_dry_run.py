"""The dry-run executor: what it reports, its ledger, cancellation, and what it refuses."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from agent_fakes import DIGEST, REF, assignment

from sami_agent.executor import Job, Outcome
from sami_agent.executors import DryRunExecutor, build_executors
from sami_agent.executors.dry_run import DryRunError, pinned_image
from sami_agent.jobs import job_from_assignment

pytestmark = pytest.mark.timeout(30)


def a_job(**changes: object) -> Job:
    return dataclasses.replace(job_from_assignment(assignment()), **changes)  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.reports: list[tuple[str, str]] = []

    def __call__(self, phase: str, message: str) -> None:
        self.reports.append((phase, message))

    def phases(self) -> list[str]:
        return [phase for phase, _ in self.reports]

    def text(self) -> str:
        return "\n".join(message for _, message in self.reports)


@pytest.mark.parametrize(
    ("ref", "digest", "expected"),
    [
        (REF, DIGEST, REF),
        (REF, "", REF),
        ("127.0.0.1:5000/web:1.2", DIGEST, f"127.0.0.1:5000/web@{DIGEST}"),
        (
            "registry.example/team/web:latest@" + DIGEST,
            DIGEST,
            f"registry.example/team/web@{DIGEST}",
        ),
        ("web", DIGEST, f"web@{DIGEST}"),
    ],
)
def test_pinned_image_replaces_tags_with_the_digest(ref: str, digest: str, expected: str) -> None:
    assert pinned_image(ref, digest) == expected


def test_pinned_image_refuses_unpinned_or_mismatched_refs() -> None:
    with pytest.raises(DryRunError, match="not pinned by digest"):
        pinned_image("127.0.0.1:5000/web:1", "")
    with pytest.raises(DryRunError, match="but its digest is"):
        pinned_image(REF, "sha256:" + "cd" * 32)


def test_reports_stack_services_pinned_image_and_files_through_each_phase(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    executor = DryRunExecutor(step_seconds=0, ledger_path=ledger, agent_id="agent-7")
    report = Recorder()
    result = executor.execute(a_job(attempt=2), report, threading.Event())
    assert result.outcome is Outcome.SUCCEEDED
    assert report.phases() == ["plan", "plan", "apply", "converge"]
    text = report.text()
    assert "stack stage_web" in text
    assert REF in text
    assert "services: web, worker" in text
    assert "stack files: stack.yml" in text
    assert "docker stack deploy --with-registry-auth -c stack.yml stage_web" in text
    [line] = ledger.read_text().splitlines()
    record = json.loads(line)
    assert {k: record[k] for k in ("deployment_id", "attempt", "agent_id")} == {
        "deployment_id": "d1",
        "attempt": 2,
        "agent_id": "agent-7",
    }
    assert record["time"].endswith("+00:00")


def test_ledger_gets_one_line_per_apply(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    executor = DryRunExecutor(step_seconds=0, ledger_path=ledger)
    for attempt in (1, 2, 3):
        executor.execute(a_job(attempt=attempt), Recorder(), threading.Event())
    attempts = [json.loads(line)["attempt"] for line in ledger.read_text().splitlines()]
    assert attempts == [1, 2, 3]


def test_cancel_mid_deployment_returns_cancelled_without_finishing(tmp_path: Path) -> None:
    executor = DryRunExecutor(step_seconds=5)
    cancelled = threading.Event()
    report = Recorder()
    timer = threading.Timer(0.05, cancelled.set)
    timer.start()
    try:
        result = executor.execute(a_job(), report, cancelled)
    finally:
        timer.cancel()
    assert result.outcome is Outcome.CANCELLED
    assert "cancelled during plan" in result.reason
    assert "converge" not in report.phases()


def test_cancel_after_apply_says_it_would_roll_back() -> None:
    cancelled = threading.Event()
    report = Recorder()

    def cancel_on_apply(phase: str, message: str) -> None:
        report(phase, message)
        if phase == "apply":
            cancelled.set()

    result = DryRunExecutor(step_seconds=1).execute(a_job(), cancel_on_apply, cancelled)
    assert result.outcome is Outcome.CANCELLED
    assert report.phases()[-1] == "rollback"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"stack_files": ("missing.yml",)}, "stack file missing.yml is not among the manifest"),
        ({"files": {"stack.yml": b"services: [\n"}}, "is not valid YAML"),
        ({"files": {"stack.yml": b"version: '3'\n"}}, "has no `services` mapping"),
        ({"image_services": ("api",)}, "image service(s) api are not defined"),
        ({"artifact_ref": ""}, "the artifact has no ref"),
    ],
)
def test_what_a_real_deploy_would_reject_fails_the_dry_run(
    changes: dict[str, object], reason: str
) -> None:
    report = Recorder()
    result = DryRunExecutor(step_seconds=0).execute(a_job(**changes), report, threading.Event())
    assert result.outcome is Outcome.FAILED
    assert reason in result.reason
    assert reason in report.text()


def test_build_executors_chooses_dry_run() -> None:
    built = build_executors(dry_run=True, step_seconds=0.1)
    executor = built.executor
    assert isinstance(executor, DryRunExecutor)
    assert built.cron is None  # a dry run deploys cron jobs but runs none
    assert executor.capabilities == ("swarm", "compose", "static_file", "cron", "dry-run")
    # Without --dry-run, see test_agent_routing.py.
