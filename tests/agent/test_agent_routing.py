"""Routing jobs to the executor of their deployment type, and how the agent builds it."""

from __future__ import annotations

import dataclasses
import sys
import threading
import types

import pytest
import structlog
from agent_fakes import assignment

from sami_agent.executor import ExecutionResult, Job, Outcome, ProgressReporter
from sami_agent.executors import RoutingExecutor, StaticFileExecutor, build_executors
from sami_agent.executors.swarm_cron import SwarmCronExecutor
from sami_agent.jobs import job_from_assignment

pytestmark = pytest.mark.timeout(30)


class Fake:
    def __init__(self, *capabilities: str) -> None:
        self.capabilities = capabilities
        self.jobs: list[str] = []

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        self.jobs.append(job.deployment_id)
        return ExecutionResult(Outcome.SUCCEEDED, f"{self.capabilities[0]} did {job.deployment_id}")


def a_job(deployment_type: str, deployment_id: str = "d1") -> Job:
    job = job_from_assignment(assignment(deployment_id, deployment_type=deployment_type))
    return dataclasses.replace(job, deployment_type=deployment_type)


def test_jobs_go_to_the_executor_of_their_type() -> None:
    swarm, files = Fake("swarm", "compose"), Fake("static_file", "dry-run")
    router = RoutingExecutor({"swarm": swarm, "compose": swarm, "static_file": files})
    assert router.capabilities == ("swarm", "compose", "static_file", "dry-run")
    for kind, deployment_id in (("swarm", "a"), ("compose", "b"), ("static_file", "c")):
        result = router.execute(a_job(kind, deployment_id), lambda p, m: None, threading.Event())
        assert result.outcome is Outcome.SUCCEEDED
    assert (swarm.jobs, files.jobs) == (["a", "b"], ["c"])


def test_an_unrouted_type_fails_clearly_and_is_not_advertised() -> None:
    swarm = Fake("swarm", "compose")
    router = RoutingExecutor({"swarm": swarm})
    assert router.capabilities == ("swarm",)  # compose is not routed, so not advertised
    for kind in ("cron", "compose", ""):
        result = router.execute(a_job(kind), lambda p, m: None, threading.Event())
        assert result.outcome is Outcome.FAILED
        assert "no executor for" in result.reason and "it deploys: swarm" in result.reason
    assert swarm.jobs == []


def test_a_route_to_an_executor_that_cannot_deploy_the_type_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot deploy 'cron'"):
        RoutingExecutor({"cron": Fake("swarm")})
    with pytest.raises(ValueError, match="at least one"):
        RoutingExecutor({})


def test_build_executors_routes_swarm_compose_cron_and_static_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("sami_agent.executors.swarm")
    keys_given: list[object] = []

    def swarm_executor(*, key: object) -> Fake:
        keys_given.append(key)
        return Fake("swarm", "compose")

    module.SwarmExecutor = swarm_executor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sami_agent.executors.swarm", module)
    key = object()
    built = build_executors(dry_run=False, key=key)  # type: ignore[arg-type]
    assert keys_given == [key]  # the agent's key opens the secrets of swarm deployments
    executor = built.executor
    assert isinstance(executor, RoutingExecutor)
    assert executor.capabilities == ("swarm", "compose", "cron", "static_file")
    assert isinstance(executor.executors["static_file"], StaticFileExecutor)
    assert isinstance(executor.executors["swarm"], Fake)
    # The cron jobs the agent deploys are the ones its scheduler runs: one object, on the
    # Swarm executor's engine.
    assert isinstance(built.cron, SwarmCronExecutor)
    assert executor.executors["cron"] is built.cron
    assert built.cron._swarm is executor.executors["swarm"]


def _broken_engine(**_: object) -> Fake:
    raise ConnectionRefusedError("connection refused: /var/run/docker.sock")


@pytest.mark.parametrize(
    ("module", "said"),
    [
        (None, "the Swarm executor is unavailable"),  # an install without the Docker SDK
        (
            types.SimpleNamespace(SwarmExecutor=_broken_engine),
            "could not start the Swarm executor: connection refused",
        ),
    ],
)
def test_without_a_swarm_executor_the_agent_still_deploys_static_files(
    monkeypatch: pytest.MonkeyPatch, module: object, said: str
) -> None:
    monkeypatch.setitem(sys.modules, "sami_agent.executors.swarm", module)
    with structlog.testing.capture_logs() as logs:
        built = build_executors(dry_run=False)
    executor = built.executor
    assert executor.capabilities == ("static_file",)
    assert built.cron is None
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "swarm_executor_unavailable"
    assert "swarm and compose deployments are disabled" in warnings[0]["message"]
    assert said in warnings[0]["reason"] and "--dry-run" in warnings[0]["reason"]
    result = executor.execute(a_job("swarm"), lambda p, m: None, threading.Event())
    assert result.outcome is Outcome.FAILED and "no executor for swarm" in result.reason
