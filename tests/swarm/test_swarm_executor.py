"""SwarmExecutor against a real engine, swarm and registry (see conftest.py).

Each test deploys its own stack, so they do not depend on each other's order. Health checks
run inside the containers (`test -f /app/healthy`); no service publishes a port and nothing
sends traffic to a container.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sami_agent.executor import ExecutionResult, Job, Outcome
from sami_agent.executors.swarm import SwarmExecutor
from sami_agent.executors.swarm_apply import LABEL_DEPLOYMENT, LABEL_DIGEST
from sami_dev.devswarm import DevSwarm
from tests.swarm.conftest import Image, Images

pytestmark = pytest.mark.timeout(180)

# Short health intervals and monitors keep each rollout to a few seconds. The check's timeout
# is generous: on a loaded machine `docker exec` of the check alone can take over a second,
# and a healthy image must not be judged unhealthy for it.
STACK = """\
version: "3.8"
services:
  web:
    image: example.invalid/replaced-by-sami:latest
    healthcheck:
      test: ["CMD", "test", "-f", "/app/healthy"]
      interval: 1s
      timeout: 10s
      retries: 3
    stop_grace_period: 2s
    deploy:
      replicas: 2
      labels:
        team: shop
      update_config:
        parallelism: 1
        delay: 0s
        failure_action: rollback
        monitor: 2s
        order: start-first
      rollback_config:
        parallelism: 0
        monitor: 1s
      restart_policy:
        condition: any
        delay: 1s
"""


class Recorder:
    def __init__(self, on_report: Callable[[str, str], None] | None = None) -> None:
        self.lines: list[tuple[str, str]] = []
        self._on_report = on_report

    def __call__(self, phase: str, message: str) -> None:
        self.lines.append((phase, message))
        print(f"[{phase}] {message}", flush=True)
        if self._on_report is not None:
            self._on_report(phase, message)

    def messages(self, phase: str | None = None) -> list[str]:
        return [m for p, m in self.lines if phase is None or p == phase]


def job(
    stack: str,
    image: Image,
    deployment_id: str,
    *,
    digest: str | None = None,
    timeout: float = 90.0,
) -> Job:
    return Job(
        deployment_id=deployment_id,
        service="shop",
        environment="stage",
        pull_request=0,
        deployment_type="swarm",
        stack_name=stack,
        artifact_name="shop",
        artifact_ref=image.tagless_repo + ":latest",
        artifact_digest=digest or image.digest,
        attempt=1,
        converge_timeout=timeout,
        files={"stack.yml": STACK.encode()},
        stack_files=("stack.yml",),
        image_services=("web",),
    )


def run(
    executor: SwarmExecutor, the_job: Job, recorder: Recorder | None = None
) -> tuple[ExecutionResult, Recorder]:
    recorder = recorder or Recorder()
    result = executor.execute(the_job, recorder, threading.Event())
    return result, recorder


def service(devswarm: DevSwarm, stack: str) -> dict[str, Any]:
    inspected: dict[str, Any] = devswarm.client().api.inspect_service(f"{stack}_web")
    return inspected


def running_images(devswarm: DevSwarm, stack: str) -> list[str]:
    tasks = devswarm.client().api.tasks(filters={"service": f"{stack}_web"})
    return sorted(
        t["Spec"]["ContainerSpec"]["Image"]
        for t in tasks
        if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
    )


def assert_runs(devswarm: DevSwarm, stack: str, image: Image, deployment_id: str) -> None:
    spec = service(devswarm, stack)["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == image.ref
    assert spec["Labels"][LABEL_DEPLOYMENT] == deployment_id
    assert running_images(devswarm, stack) == [image.ref, image.ref]


def test_first_deployment_converges_and_reports_progress(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor
) -> None:
    result, rec = run(executor, job("first", images.v1, "dep-first-1"))

    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert "web 2/2 running" in result.reason
    assert_runs(devswarm, "first", images.v1, "dep-first-1")
    labels = service(devswarm, "first")["Spec"]["Labels"]
    assert labels[LABEL_DIGEST] == images.v1.digest
    assert labels["team"] == "shop"  # the stack's own labels are kept
    progress = rec.messages("converge")
    assert "web 0/2 running (new)" in progress
    assert "web 2/2 running (new)" in progress
    assert any(m.startswith("web.1 ") and "running (healthy)" in m for m in progress), progress
    assert any("starting" in m for m in progress), progress
    assert "Creating service first_web" in rec.messages("apply")


def test_rolling_update_runs_the_new_digest(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor
) -> None:
    assert run(executor, job("rolling", images.v1, "dep-rolling-1"))[0].outcome is Outcome.SUCCEEDED

    result, rec = run(executor, job("rolling", images.v2, "dep-rolling-2"))

    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert_runs(devswarm, "rolling", images.v2, "dep-rolling-2")
    progress = rec.messages("converge")
    assert "web update updating: update in progress" in progress
    assert "web update completed: update completed" in progress
    assert any("(previous spec)" in m for m in progress), progress  # old tasks stopping


def test_failing_health_check_is_rolled_back_with_the_reason(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor
) -> None:
    assert run(executor, job("health", images.v2, "dep-health-2"))[0].outcome is Outcome.SUCCEEDED

    result, rec = run(executor, job("health", images.v3, "dep-health-3"))

    assert result.outcome is Outcome.ROLLED_BACK, result.reason
    assert "unhealthy" in result.reason
    assert "health check `test -f /app/healthy` failed (exit 1)" in result.reason
    # Swarm's own failure_action: rollback did it, and Sami watched it settle.
    assert "update rolled back due to failure" in result.reason
    assert "rolled back to the previous spec: web" in result.reason
    assert "web update rollback_completed: rollback completed" in rec.messages(), rec.lines
    assert_runs(devswarm, "health", images.v2, "dep-health-2")


def test_digest_missing_from_the_registry_fails_with_its_reason(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor
) -> None:
    assert run(executor, job("missing", images.v1, "dep-missing-1"))[0].outcome is Outcome.SUCCEEDED
    before = service(devswarm, "missing")["Version"]["Index"]

    absent = "sha256:" + "0" * 64
    result, _ = run(executor, job("missing", images.v1, "dep-missing-2", digest=absent))

    assert result.outcome is Outcome.FAILED, result.reason
    assert "manifest unknown" in result.reason
    assert absent in result.reason
    # Nothing was applied: the running release is untouched.
    assert service(devswarm, "missing")["Version"]["Index"] == before
    assert_runs(devswarm, "missing", images.v1, "dep-missing-1")


def test_cancel_during_the_rollout_restores_the_previous_spec(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor
) -> None:
    assert run(executor, job("cancel", images.v1, "dep-cancel-1"))[0].outcome is Outcome.SUCCEEDED

    cancelled = threading.Event()

    def cancel_once_updating(phase: str, message: str) -> None:
        if message.startswith("web update updating"):
            cancelled.set()

    rec = Recorder(cancel_once_updating)
    result = executor.execute(job("cancel", images.v2, "dep-cancel-2"), rec, cancelled)

    assert result.outcome is Outcome.CANCELLED, result.reason
    assert "rolled back to the previous spec" in result.reason
    assert any("rollback to the previous spec requested" in m for m in rec.messages("rollback"))
    assert_runs(devswarm, "cancel", images.v1, "dep-cancel-1")


def test_redelivered_job_is_watched_not_applied_again(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor
) -> None:
    assert run(executor, job("again", images.v1, "dep-again-1"))[0].outcome is Outcome.SUCCEEDED
    first, _ = run(executor, job("again", images.v2, "dep-again-2"))
    assert first.outcome is Outcome.SUCCEEDED, first.reason
    before = service(devswarm, "again")

    second, rec = run(executor, job("again", images.v2, "dep-again-2"))

    assert second.outcome is Outcome.SUCCEEDED, second.reason
    assert any(m.startswith("already applied") for m in rec.messages("apply")), rec.lines
    assert not any(m.startswith("docker stack deploy") for m in rec.messages()), rec.lines
    after = service(devswarm, "again")
    assert after["Version"] == before["Version"]
    # The spec to roll back to is still v1's (applying again would have overwritten it).
    previous = after["PreviousSpec"]
    assert previous["TaskTemplate"]["ContainerSpec"]["Image"] == images.v1.ref
    assert_runs(devswarm, "again", images.v2, "dep-again-2")


def test_failed_first_deployment_removes_what_it_created(
    devswarm: DevSwarm, images: Images
) -> None:
    executor = SwarmExecutor(docker_env=devswarm.env, poll_interval=0.25, crash_loop_failures=2)

    result, _ = run(executor, job("broken", images.v3, "dep-broken-3"))

    assert result.outcome is Outcome.FAILED, result.reason
    assert "crash loop" in result.reason
    assert "health check `test -f /app/healthy` failed (exit 1)" in result.reason
    assert "removed" in result.reason
    names = [s["Spec"]["Name"] for s in devswarm.client().api.services()]
    assert "broken_web" not in names


def test_stack_file_the_cli_refuses_fails_without_changes(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor
) -> None:
    bad = dataclasses.replace(
        job("refused", images.v1, "dep-refused-1"),
        files={"stack.yml": STACK.encode() + b"bogus_key: 1\n"},
    )

    result, _ = run(executor, bad)

    assert result.outcome is Outcome.FAILED, result.reason
    assert "docker stack deploy failed" in result.reason
    assert "bogus_key" in result.reason
    names = [s["Spec"]["Name"] for s in devswarm.client().api.services()]
    assert "refused_web" not in names


def test_converge_timeout_rolls_back(
    devswarm: DevSwarm, images: Images, executor: SwarmExecutor
) -> None:
    assert run(executor, job("slow", images.v1, "dep-slow-1"))[0].outcome is Outcome.SUCCEEDED

    # v3 never becomes healthy; a 2 s budget runs out before swarm gives up on it.
    result, _ = run(executor, job("slow", images.v3, "dep-slow-3", timeout=2.0))

    assert result.outcome is Outcome.ROLLED_BACK, result.reason
    assert "did not converge within 2s" in result.reason
    assert_runs(devswarm, "slow", images.v1, "dep-slow-1")
