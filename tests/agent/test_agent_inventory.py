"""The agent reports its swarm's preview stacks after each Welcome and then periodically,
and a teardown assignment reaches the executor as a teardown job."""

from __future__ import annotations

import asyncio
import threading

from sami.v1 import deployment_pb2
from sami_agent.executor import ExecutionResult, Job, Outcome, PreviewStack, ProgressReporter
from sami_agent.executors.dry_run import DryRunExecutor
from sami_agent.jobs import job_from_assignment
from tests.agent.agent_fakes import assignment, connect, running_agent


class PreviewExecutor:
    capabilities = ("swarm",)

    def __init__(self) -> None:
        self.stacks = [PreviewStack("pr-4_web", "web", 4, "dep_1")]
        self.listed = 0

    def list_previews(self) -> list[PreviewStack]:
        self.listed += 1
        return list(self.stacks)

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        return ExecutionResult(Outcome.SUCCEEDED, job.action)


def test_inventory_after_welcome_and_periodically() -> None:
    async def scenario() -> None:
        executor = PreviewExecutor()
        async with running_agent(executor, inventory_interval=0.1) as (control, _, _):
            stream, _ = await connect(control)
            first = (await stream.recv_kind("inventory")).inventory
            assert [
                (s.stack_name, s.service, s.pull_request, s.deployment_id) for s in first.stacks
            ] == [("pr-4_web", "web", 4, "dep_1")]
            executor.stacks = []
            second = (await stream.recv_kind("inventory")).inventory
            assert list(second.stacks) == []

    asyncio.run(scenario())


def test_teardown_assignment_becomes_a_teardown_job() -> None:
    a = assignment()
    assert job_from_assignment(a).action == "deploy"
    a.deployment.action = deployment_pb2.TEARDOWN
    assert job_from_assignment(a).teardown


def test_an_executor_without_previews_keeps_one_stream() -> None:
    # Regression: the inventory task ending at once for such executors used to end the
    # whole stream, so a dry-run agent reconnected every second.
    async def scenario() -> None:
        async with running_agent(DryRunExecutor(), inventory_interval=0.1) as (control, _, _):
            stream, _ = await connect(control, heartbeat=0.2)
            assert await stream.quiet(2.0) == []
            assert control.streams.empty()

    asyncio.run(scenario())
