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
