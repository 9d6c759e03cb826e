"""The example workflows, run as GitHub Actions would run them (tests/ecosystem/gha.py),
through action.yml and the real `sami` CLI, against the real control plane (in a thread of
this process) and a real dry-run agent: the deployments repo is synced, the application's
artifact registered and deployed to stage, a preview deployed and torn down, stage promoted
to production. Only the third-party actions (checkout, docker build/push) are stubs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sami_control import offline
from tests.control.conftest import LiveServer

from . import gha, scenarios
from .conftest import start_dry_run_agent, stop


@dataclass
class Live:
    addr: str
    admin: str
    app_token: str  # CI of the application: camerdevs on stage and pull_request
    production_token: str  # the `production` GitHub environment's: camerdevs on production
    sync_token: str  # CI of the deployments repo: an unscoped deployer
    sami: Path
    tmp: Path

    def cli(self, *args: str) -> Any:
        """`sami ARGS --output json` as an admin; the parsed output."""
        proc = subprocess.run(
            [str(self.sami), *args, "--output", "json"],
            capture_output=True,
            text=True,
            env=self.env(self.admin),
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def env(self, token: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAMI_", "GITHUB_"))}
        return {**env, "SAMI_ADDR": self.addr, "SAMI_TOKEN": token}

    def runner_factory(self, prefix: str) -> Callable[[str], gha.Runner]:
        def make(job: str) -> gha.Runner:
            runner = gha.Runner(
                self.tmp / prefix / job,
                {"PATH": os.environ["PATH"], "HOME": str(self.tmp / "home")},
                {},
            )
            # As the preset install step would have done.
            runner.path_additions.append(str(self.sami.parent))
            return runner

        return make

    def run(self, scenario_id: str, token: str) -> dict[str, gha.JobRun]:
        scenario = scenarios.BY_ID[scenario_id]
        runs = scenarios.run(
            scenario,
            self.runner_factory(scenario_id),
            vars={"SAMI_ADDR": self.addr, "SAMI_CA": ""},
            secrets={"SAMI_TOKEN": token, "SAMI_SYNC_TOKEN": self.sync_token},
            action_preset={
                "python": {"python": str(self.sami.parent / "python")},
                "install": {"bin": str(self.sami)},
            },
        )
        assert {job: not run.skipped for job, run in runs.items()} == scenario.jobs
        for job, run in runs.items():
            assert run.ok, f"{scenario_id}: job {job} failed:\n{run.log}"
            assert token not in run.log and self.sync_token not in run.log
        return runs


@pytest.fixture
def live(live_server: LiveServer, tmp_path: Path, sami_bin: Path) -> Iterator[Live]:
    data = live_server.data
    admin = offline.add_token(data, "admin", "eco-admin").plaintext
    live = Live(
        addr=live_server.addr,
        admin=admin,
        app_token=offline.add_token(
            data,
            "deployer",
            "ci-camerdevs",
            services=["camerdevs"],
            environments=["stage", "pull_request"],
        ).plaintext,
        production_token=offline.add_token(
            data,
            "deployer",
            "ci-camerdevs-prod",
            services=["camerdevs"],
            environments=["production"],
        ).plaintext,
        sync_token=offline.add_token(data, "deployer", "ci-deployments").plaintext,
        sami=sami_bin,
        tmp=tmp_path,
    )
    live.cli("cluster", "create", "osscameroon", "--env", "stage", "--env", "production",
             "--env", "pull_request")  # fmt: skip
    agent_token = offline.add_token(data, "agent", "eco-agent", cluster="osscameroon").plaintext
    agent = start_dry_run_agent(live_server.addr, agent_token, tmp_path / "agent.log")
    try:
        yield live
    finally:
        stop(agent)


def action_log(run: gha.JobRun, step_id: str) -> str:
    action = run.actions[step_id]
    return "".join(s.stdout + s.stderr for s in action.steps)


def test_the_examples_end_to_end(live: Live) -> None:
    # The deployments repo: a push to main syncs it.
    sync = live.run("manifests-push-main", live.sync_token)["sync"]
    revision = sync.step("sync").outputs["manifest_revision"]
    assert re.fullmatch(r"[0-9a-f]{64}", revision)
    current = live.cli("manifests", "show", "current")
    assert (current["id"], current["commit"]) == (revision, scenarios.SHA)  # from $GITHUB_SHA
    summary = (live.tmp / "manifests-push-main" / "sync" / "temp" / "step-summary.md").read_text()
    assert f"manifest revision `{revision}` is current" in summary

    # ... and a pull request on it is linted (no server needed).
    lint = live.run("manifests-pull-request", live.sync_token)["lint"]
    assert "warning" in lint.step("lint").stdout + lint.step("lint").stderr  # prod/ is an alias

    # The application: a push to main builds, registers and deploys to stage.
    app = live.run("app-push-main", live.app_token)
    artifact_id = app["build"].outputs["artifact_id"]
    register = app["build"].step("register").outputs
    assert register["artifact_id"] == artifact_id and register["digest"] == scenarios.DIGEST
    artifact = live.cli("artifact", "get", artifact_id)
    assert artifact["ref"] == f"ghcr.io/osscameroon/camerdevs@{scenarios.DIGEST}"
    assert artifact["provenance"] == {
        "git_repo": "https://github.com/osscameroon/camerdevs",
        "git_commit": scenarios.SHA,
        "ci_run_url": "https://github.com/osscameroon/camerdevs/actions/runs/4242",
    }
    assert sorted(artifact["tags"]) == ["main", f"sha-{scenarios.SHA}"]
    assert artifact["labels"] == {"branch": "main"}

    deploy = app["deploy-stage"].step("deploy").outputs
    deployment_id = deploy["deployment_id"]
    assert deploy["digest"] == scenarios.DIGEST and deploy["exit_code"] == "0"
    log = action_log(app["deploy-stage"], "deploy")
    assert f"::group::sami: deployment {deployment_id}" in log
    assert "::endgroup::" in log and "::error" not in log
    stage = live.cli("get", deployment_id)
    assert (stage["state"], stage["environment"]) == ("SUCCEEDED", "stage")
    assert stage["artifact"]["id"] == artifact_id
    summary = (live.tmp / "app-push-main" / "deploy-stage" / "temp" / "step-summary.md").read_text()
    # Written by sami itself, not by a step of the workflow.
    assert "### Sami: camerdevs -> stage" in summary
    assert f"| deployment | `{deployment_id}`" in summary and "| outcome | ✅ SUCCEEDED" in summary
    assert f"| digest | `{scenarios.DIGEST}` |" in summary

    # A pull request gets a preview, torn down when it closes.
    preview = live.run("preview-opened", live.app_token)["deploy-preview"]
    preview_id = preview.step("deploy").outputs["deployment_id"]
    got = live.cli("get", preview_id)
    assert (got["state"], got["environment"], got["pull_request"]) == (
        "SUCCEEDED",
        "pull_request",
        7,
    )
    teardown = live.run("preview-closed", live.app_token)["teardown-preview"]
    teardown_id = teardown.step("teardown").outputs["deployment_id"]
    assert teardown_id != preview_id
    assert live.cli("get", teardown_id)["state"] == "SUCCEEDED"

    # Promotion, with the production environment's token: the digest stage runs.
    promote = live.run("promote", live.production_token)["promote"]
    out = promote.step("promote").stdout
    production = live.cli("list", "--env", "production")
    assert len(production) == 1
    assert production[0]["state"] == "SUCCEEDED"
    assert production[0]["artifact"]["digest"] == scenarios.DIGEST
    assert production[0]["id"] in out  # `sami history` lists it


def test_a_refused_deployment_fails_the_step_with_an_annotation(live: Live) -> None:
    """The stage token may not deploy to production: exit 2, annotated, no deployment."""
    live.run("manifests-push-main", live.sync_token)
    runner = live.runner_factory("refused")("job")
    run = gha.run_composite(
        runner,
        {
            "command": "deploy",
            "addr": live.addr,
            "token": live.app_token,
            "service": "camerdevs",
            "environment": "production",
            "artifact": f"ghcr.io/osscameroon/camerdevs@{scenarios.DIGEST}",
        },
        preset={
            "python": {"python": str(live.sami.parent / "python")},
            "install": {"bin": str(live.sami)},
        },
    )
    assert not run.ok
    assert run.outputs["exit_code"] == "2"
    assert run.outputs["deployment_id"] == ""
    step = run.step("sami")
    assert "::error title=sami::" in step.stdout + step.stderr
    assert "PERMISSION_DENIED" in step.stderr and "not 'production'" in step.stderr
    assert live.app_token not in step.stdout + step.stderr
