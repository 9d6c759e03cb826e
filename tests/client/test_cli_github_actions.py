"""Under GitHub Actions: progress folded into a log group, failures annotated, ids recorded
in $GITHUB_OUTPUT for later steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sami.v1 import deployment_pb2

from .fake_control import DIGEST, REF, FakeControl, script

DEPLOY = ("deploy", "web", "--env", "stage", "--artifact", REF, "--wait")


@pytest.fixture
def github_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "github_output"
    path.write_text("earlier=kept\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(path))
    return path


def test_success_is_grouped_and_recorded(sami, server, github_output: Path) -> None:
    result = sami(*DEPLOY)
    assert result.code == 0, result.err
    lines = result.lines
    start, end = lines.index("::group::sami: deployment d1"), lines.index("::endgroup::")
    assert [i for i, line in enumerate(lines) if "  #" in line] == list(range(start + 2, end))
    assert lines[end + 1].startswith("SUCCEEDED")
    assert "::error" not in result.out + result.err
    assert github_output.read_text() == f"earlier=kept\ndeployment_id=d1\ndigest={DIGEST}\n"


def test_rollback_is_annotated(sami, server, control: FakeControl, github_output: Path) -> None:
    control.steps = script(deployment_pb2.ROLLED_BACK, "task web.1: exit 1 (50% done)")
    result = sami(*DEPLOY)
    assert result.code == 1
    assert result.lines[-3] == "::endgroup::"
    assert result.lines[-2].startswith("ROLLED_BACK: deployment d1")
    # '%' is escaped in workflow commands.
    assert result.lines[-1] == (
        "::error title=sami::ROLLED_BACK: deployment d1 (web -> stage): "
        "task web.1: exit 1 (50%25 done)"
    )
    assert "deployment_id=d1\n" in github_output.read_text()


def test_timeout_closes_the_group_and_annotates(
    sami, server, control: FakeControl, github_output: Path
) -> None:
    control.release_on_create = 2
    result = sami(*DEPLOY, "--timeout", "0.3")
    assert result.code == 3
    assert result.lines[-2] == "::endgroup::"
    assert result.lines[-1].startswith("::error title=sami::DEADLINE_EXCEEDED: timed out after")
    assert "%0A" in result.lines[-1]  # Multi-line messages stay one workflow command.
    # Recorded before the wait, so a cleanup step can still find the deployment.
    assert "deployment_id=d1\n" in github_output.read_text()


def test_json_output_keeps_workflow_commands_off_stdout(sami, server, github_output: Path) -> None:
    result = sami("--output", "json", *DEPLOY)
    assert result.code == 0
    for line in result.lines:
        json.loads(line)
    assert "::group::sami: deployment d1" in result.err and "::endgroup::" in result.err


def test_register_records_the_artifact_and_its_provenance(
    sami, server, control: FakeControl, github_output: Path, monkeypatch
) -> None:
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/web")
    monkeypatch.setenv("GITHUB_SHA", "c" * 40)
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    result = sami("artifact", "register", "web", "--ref", REF)
    assert result.code == 0, result.err
    provenance = control.artifacts[0].provenance
    assert provenance.git_repo == "https://github.com/acme/web"
    assert provenance.git_commit == "c" * 40
    assert provenance.ci_run_url == "https://github.com/acme/web/actions/runs/42"
    assert github_output.read_text().endswith(f"artifact_id=a1\ndigest={DIGEST}\n")


@pytest.fixture
def step_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, github_output: Path) -> Path:
    path = tmp_path / "step_summary"
    path.write_text("## earlier step\n\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(path))
    return path


def _rows(markdown: str) -> dict[str, str]:
    """The key | value rows of the summary's table."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and line.endswith(" |") and " | " in line[2:-2]:
            key, value = line[2:-2].split(" | ", 1)
            rows[key] = value
    return rows


def test_step_summary_of_a_wait(sami, server, control: FakeControl, step_summary: Path) -> None:
    control.steps = script(deployment_pb2.ROLLED_BACK, "task web.1: exit 1 | oops")
    result = sami(*DEPLOY)
    assert result.code == 1
    text = step_summary.read_text()
    assert text.startswith("## earlier step\n\n### Sami: web -> stage\n")  # Appended.
    rows = _rows(text)
    assert rows["service"] == "`web`" and rows["environment"] == "stage"
    assert rows["artifact"] == f"`{REF}`" and rows["digest"] == f"`{DIGEST}`"
    assert rows["outcome"] == "↩️ ROLLED_BACK: task web.1: exit 1 \\| oops"
    assert rows["deployment"] == "`d1` (`sami get d1`)"


def test_step_summary_without_wait_and_after_a_timeout(
    sami, server, control: FakeControl, step_summary: Path
) -> None:
    assert sami(*DEPLOY[:-1]).code == 0
    rows = _rows(step_summary.read_text())
    assert (
        rows["outcome"].startswith("⏳ ") and "not waited for: `sami watch d1`" in rows["outcome"]
    )

    step_summary.write_text("")
    control.release_on_create = 2
    assert sami(*DEPLOY, "--timeout", "0.3").code == 3
    rows = _rows(step_summary.read_text())
    assert rows["outcome"].startswith("⏱️ not known: timed out after 0.3s")


def test_no_step_summary_outside_actions(sami, server, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "step_summary"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(path))  # GITHUB_ACTIONS is not "true".
    assert sami(*DEPLOY).code == 0
    assert not path.exists()


def test_step_summary_links_back_and_says_how_long() -> None:
    from google.protobuf import timestamp_pb2

    from sami.v1 import artifact_pb2
    from sami_client import render

    sha = "0123456789abcdef0123456789abcdef01234567"
    d = deployment_pb2.Deployment(
        id="d7",
        service="web",
        environment="pull_request",
        pull_request=12,
        state=deployment_pb2.SUCCEEDED,
        create_time=timestamp_pb2.Timestamp(seconds=1000),
        finish_time=timestamp_pb2.Timestamp(seconds=1065),
        artifact=artifact_pb2.Artifact(
            ref=REF,
            digest=DIGEST,
            provenance=artifact_pb2.Provenance(
                git_repo="https://github.com/acme/web",
                git_commit=sha,
                ci_run_url="https://github.com/acme/web/actions/runs/42",
            ),
        ),
    )
    rows = _rows(render.step_summary(d))
    assert rows["environment"] == "pull_request (pull request #12)"
    assert rows["outcome"] == "✅ SUCCEEDED"
    assert rows["duration"] == "1m5s"
    assert rows["commit"] == f"[0123456789ab](https://github.com/acme/web/commit/{sha})"
    assert rows["built by"] == "[CI run](https://github.com/acme/web/actions/runs/42)"
