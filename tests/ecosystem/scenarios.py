"""The events the example workflows (examples/github/) answer, run through tests/ecosystem/
gha.py: with a recording `sami` (test_workflows_lint.py) or the real CLI against a live
control plane and a dry-run agent (test_action_live.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import gha
from .gha_expressions import to_string

EXAMPLES = gha.REPO / "examples" / "github"
APP = EXAMPLES / "application-repo" / ".github" / "workflows"
DEPLOYMENTS = EXAMPLES / "deployments-repo" / ".github" / "workflows"
# What actions/checkout gives the deployments repo's jobs: the example deployments repo,
# with the example workflows' .github folder.
DEPLOYMENTS_CHECKOUT = (gha.REPO / "examples" / "deployments", EXAMPLES / "deployments-repo")

DIGEST = "sha256:" + "d1" * 32
SHA = "c0ffee" + "0" * 34
SECRET = "sami-secret-do-not-print"


@dataclass(frozen=True)
class Scenario:
    id: str
    workflow: Path
    event_name: str
    event: dict[str, Any]
    repository: str
    # Every job of the workflow, in an order that satisfies `needs`, with whether it runs.
    jobs: dict[str, bool]
    checkout: tuple[Path, ...] = ()
    ref: str = "refs/heads/main"
    inputs: dict[str, str] = field(default_factory=dict)

    def github(self) -> dict[str, Any]:
        return {
            "event_name": self.event_name,
            "event": self.event,
            "sha": SHA,
            "ref": self.ref,
            "ref_name": self.ref.rsplit("/", 1)[-1],
            "repository": self.repository,
            "repository_owner": self.repository.split("/")[0],
            "server_url": "https://github.com",
            "run_id": "4242",
            "run_attempt": "1",
            "actor": "octocat",
            "workflow": gha.load_yaml(self.workflow).get("name", ""),
            "token": "ghs_fake",
        }

    def workflow_inputs(self) -> dict[str, str]:
        """workflow_dispatch inputs: their defaults, then what the scenario gives."""
        on = gha.load_yaml(self.workflow)["on"]
        declared = ((on or {}).get("workflow_dispatch") or {}).get("inputs") or {}
        values = {k: to_string(v.get("default", "")) for k, v in declared.items()}
        return {**values, **self.inputs}


def _pull_request(action: str, number: int, head_repo: str = "osscameroon/camerdevs") -> dict:
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"repo": {"full_name": head_repo}, "sha": SHA},
        },
    }


SCENARIOS = [
    Scenario(
        "app-push-main",
        APP / "build-and-deploy.yml",
        "push",
        {"ref": "refs/heads/main"},
        "osscameroon/camerdevs",
        {"build": True, "deploy-stage": True},
    ),
    Scenario(
        "preview-opened",
        APP / "preview.yml",
        "pull_request",
        _pull_request("opened", 7),
        "osscameroon/camerdevs",
        {"deploy-preview": True, "teardown-preview": False},
        ref="refs/pull/7/merge",
    ),
    Scenario(
        "preview-closed",
        APP / "preview.yml",
        "pull_request",
        _pull_request("closed", 7),
        "osscameroon/camerdevs",
        {"deploy-preview": False, "teardown-preview": True},
        ref="refs/pull/7/merge",
    ),
    Scenario(
        "preview-from-a-fork",
        APP / "preview.yml",
        "pull_request",
        _pull_request("opened", 8, head_repo="someone/camerdevs"),
        "osscameroon/camerdevs",
        {"deploy-preview": False, "teardown-preview": False},
        ref="refs/pull/8/merge",
    ),
    Scenario(
        "promote",
        APP / "promote.yml",
        "workflow_dispatch",
        {},
        "osscameroon/camerdevs",
        {"promote": True},
    ),
    Scenario(
        "manifests-pull-request",
        DEPLOYMENTS / "manifests.yml",
        "pull_request",
        _pull_request("opened", 3, head_repo="osscameroon/deployments"),
        "osscameroon/deployments",
        {"lint": True, "sync": False},
        checkout=DEPLOYMENTS_CHECKOUT,
        ref="refs/pull/3/merge",
    ),
    Scenario(
        "manifests-push-main",
        DEPLOYMENTS / "manifests.yml",
        "push",
        {"ref": "refs/heads/main"},
        "osscameroon/deployments",
        {"lint": False, "sync": True},
        checkout=DEPLOYMENTS_CHECKOUT,
    ),
]
BY_ID = {s.id: s for s in SCENARIOS}


def stubs(scenario: Scenario, runner: gha.Runner) -> dict[str, gha.UsesStub]:
    """The third-party actions the examples use, reduced to what later steps see."""

    def checkout(step: dict[str, Any], with_: dict[str, str]) -> dict[str, str]:
        for tree in scenario.checkout:
            shutil.copytree(tree, runner.workspace, dirs_exist_ok=True)
        return {"commit": SHA}

    def build_push(step: dict[str, Any], with_: dict[str, str]) -> dict[str, str]:
        assert with_.get("push") == "true", "the image must be pushed before it is registered"
        return {"digest": DIGEST, "imageid": "sha256:" + "e" * 64}

    def nothing(step: dict[str, Any], with_: dict[str, str]) -> dict[str, str]:
        return {}

    return {
        "actions/checkout": checkout,
        "docker/setup-buildx-action": nothing,
        "docker/login-action": nothing,
        "docker/build-push-action": build_push,
    }


def run(
    scenario: Scenario,
    make_runner: Callable[[str], gha.Runner],
    *,
    vars: Mapping[str, str],
    secrets: Mapping[str, str],
    action_preset: Mapping[str, dict[str, str]],
) -> dict[str, gha.JobRun]:
    """Run the scenario's jobs in order, each on a runner of its own (`make_runner(job)`)
    and seeing the outputs of the jobs it needs."""
    ctx = gha.Context(scenario.github(), dict(vars), dict(secrets), scenario.workflow_inputs())
    workflow = gha.load_yaml(scenario.workflow)
    done: dict[str, gha.JobRun] = {}
    for job in scenario.jobs:
        needs = workflow["jobs"][job].get("needs") or []
        needs = [needs] if isinstance(needs, str) else needs
        upstream = {n: done[n] for n in needs}
        if any(u.skipped or not u.ok for u in upstream.values()):
            done[job] = gha.JobRun(job, True, [], {}, {})
            continue
        runner = make_runner(job)
        done[job] = gha.run_job(
            scenario.workflow,
            job,
            ctx,
            runner,
            needs=upstream,
            uses=stubs(scenario, runner),
            action_preset=action_preset,
        )
    return done
