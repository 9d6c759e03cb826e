"""The agent's cron scheduler against a fake control plane and a fake engine: due jobs are
started once on their schedule (a test clock advances the minutes), runs never overlap,
each ended run is reported as a CronRun and sent again after a reconnect until the control
plane acknowledges it, and a start lost to another agent or a run interrupted by an update
is handled. The real engine side is tests/swarm/test_swarm_cron.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from agent_fakes import WAIT, FakeControl, FakeStream, assignment, connect, running_agent

from sami.v1 import agent_pb2, cron_pb2
from sami_agent import cron
from sami_agent.connection import Agent
from sami_agent.cron import CronJob, RunMark, RunState
from sami_agent.executor import ExecutionResult, Job, Outcome, ProgressReporter

pytestmark = pytest.mark.timeout(60)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a minute boundary


@dataclass
class FakeJob:
    key: str
    name: str
    stack: str
    schedule: str = "* * * * *"
    since: float = T0 + 10
    replicas: int = 1
    version: int = 1
    iteration: int = 1
    deployment_id: str = "dep_1"
    run: RunMark | None = None
    # Outcome of each iteration's run once it ended: (succeeded, exit code, message).
    results: dict[int, tuple[bool, int | None, str]] = field(default_factory=dict)


class FakeCron:
    """A CronBackend (and a cron executor) over jobs held in memory, with a test clock."""

    capabilities = ("cron",)

    def __init__(self, *jobs: FakeJob) -> None:
        self.t = T0 + 20
        self.jobs = {j.key: j for j in jobs}
        self.lock = threading.Lock()
        self.starts: list[tuple[str, RunMark]] = []
        # Called once, inside the next start_run before it checks the version (a competing
        # agent).
        self.before_start: Callable[[FakeJob, RunMark], None] | None = None
        self.gate = threading.Event()
        self.gate.set()

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        self.gate.wait(WAIT)
        return ExecutionResult(Outcome.SUCCEEDED, "installed")

    def now(self) -> float:
        return self.t

    def list_cron_jobs(self) -> list[CronJob]:
        with self.lock:
            return [
                CronJob(
                    key=j.key,
                    name=j.name,
                    version=j.version,
                    deployment_id=j.deployment_id,
                    service="backup",
                    environment="stage",
                    stack=j.stack,
                    job=j.name.removeprefix(j.stack + "_"),
                    schedule=j.schedule,
                    since=j.since,
                    replicas=j.replicas,
                    iteration=j.iteration,
                    run=j.run,
                )
                for j in self.jobs.values()
            ]

    def run_state(self, key: str, mark: RunMark, current_iteration: int | None) -> RunState:
        with self.lock:
            job = self.jobs.get(key)
            result = job.results.get(mark.iteration) if job else None
        if result is not None:
            ok, code, message = result
            return RunState(True, ok, code, message, self.t)
        if current_iteration != mark.iteration:
            return RunState(True, False, None, "interrupted: the job service was updated", self.t)
        return RunState(False)

    def start_run(self, job: CronJob, mark: RunMark) -> bool:
        with self.lock:
            stored = self.jobs[job.key]
            before_start, self.before_start = self.before_start, None
            if before_start is not None:
                before_start(stored, mark)
            if stored.version != job.version:
                return False
            stored.run = mark
            stored.iteration = mark.iteration
            stored.version += 1
            self.starts.append((job.key, mark))
            return True

    # -- test controls --------------------------------------------------------------------

    def finish(self, key: str, ok: bool = True, code: int | None = 0, message: str = "") -> None:
        with self.lock:
            job = self.jobs[key]
            assert job.run is not None
            job.results[job.run.iteration] = (ok, code, message or ("done" if ok else "failed"))

    def redeploy(self, key: str) -> None:
        """What a `docker stack deploy` of the job does: new spec, labels reset."""
        with self.lock:
            job = self.jobs[key]
            job.version += 1
            job.iteration += 1
            job.run = None
            job.since = self.t
            job.deployment_id = "dep_2"


def backup(**kw: object) -> FakeJob:
    return FakeJob(key="svc1", name="stage_backup_backup", stack="stage_backup", **kw)  # type: ignore[arg-type]


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def next_run(stream: object) -> cron_pb2.CronRun:
    message: agent_pb2.AgentMessage = await stream.recv_kind("cron_run")  # type: ignore[attr-defined]
    return message.cron_run


@contextlib.asynccontextmanager
async def backup_started(
    before_start: Callable[[FakeJob, RunMark], None] | None = None, *, welcome: bool = True
) -> AsyncIterator[tuple[FakeCron, FakeControl, FakeStream, Agent]]:
    """An agent whose backup() job is due (it is 00:01:01), once the job's run started (by
    this agent, or by `before_start`, a competing agent): (fake, control, stream, agent).
    welcome=False: the agent sent its Hello but is not welcomed."""
    fake = FakeCron(backup())
    fake.t = T0 + 61
    fake.before_start = before_start
    async with running_agent(fake, cron_backend=fake, cron_interval=0.02) as (control, agent, _):
        if welcome:
            stream, _ = await connect(control)
        else:
            stream = await control.next_stream()
            await stream.recv_kind("hello")
        await until(lambda: fake.jobs["svc1"].run is not None, "the run to start")
        yield fake, control, stream, agent


def test_due_runs_start_on_schedule_never_overlap_and_are_reported() -> None:
    async def scenario() -> None:
        fake = FakeCron(backup())
        async with running_agent(fake, cron_backend=fake, cron_interval=0.02) as (control, _, _):
            stream, hello = await connect(control)
            assert "cron" in hello.capabilities
            await asyncio.sleep(0.2)
            assert fake.starts == []  # installed at 00:00:10: 00:00 is before it
            fake.t = T0 + 61  # 00:01:01
            await until(lambda: len(fake.starts) == 1, "the 00:01 run to start")
            key, mark = fake.starts[0]
            assert mark.scheduled_for == T0 + 60 and mark.started_at == T0 + 61
            assert mark.iteration == 2 and mark.completions == 1
            # While it runs, later minutes start nothing: runs never overlap.
            fake.t = T0 + 200
            await asyncio.sleep(0.2)
            assert len(fake.starts) == 1
            fake.finish(key, ok=True, code=0, message="1/1 task(s) completed")
            run = await next_run(stream)
            assert run.run_id == mark.run_id == cron.run_id_for("svc1", T0 + 60)
            assert (run.deployment_id, run.service, run.environment, run.stack, run.job) == (
                "dep_1",
                "backup",
                "stage",
                "stage_backup",
                "backup",
            )
            assert run.outcome == cron_pb2.CRON_RUN_OUTCOME_SUCCEEDED and run.exit_code == 0
            assert run.scheduled_time.seconds == int(T0 + 60)
            assert run.start_time.seconds == int(T0 + 61)
            assert run.finish_time.seconds == int(T0 + 200)
            assert run.message == "1/1 task(s) completed" and run.schedule == "* * * * *"
            stream.send(cron_run_ack=agent_pb2.CronRunAck(run_id=run.run_id))
            # The minutes missed meanwhile are run once, late: only the latest (00:03).
            await until(lambda: len(fake.starts) == 2, "the missed run to start")
            assert fake.starts[1][1].scheduled_for == T0 + 180
            fake.finish(key, ok=False, code=3, message="task: non-zero exit (3)")
            failed = await next_run(stream)
            assert failed.outcome == cron_pb2.CRON_RUN_OUTCOME_FAILED
            assert failed.exit_code == 3 and failed.message == "task: non-zero exit (3)"
            await asyncio.sleep(0.2)
            assert len(fake.starts) == 2  # 00:03 ran; 00:04 is not due yet

    asyncio.run(scenario())


def test_reports_are_sent_again_after_a_reconnect_until_acknowledged() -> None:
    async def scenario() -> None:
        async with backup_started() as (fake, control, stream, _):
            fake.finish("svc1")
            first = await next_run(stream)
            stream.close()  # lost before it was acknowledged
            stream, _ = await connect(control)
            again = await next_run(stream)
            assert again == first
            stream.send(cron_run_ack=agent_pb2.CronRunAck(run_id=first.run_id))
            await asyncio.sleep(0.2)
            stream.close()
            stream, _ = await connect(control)
            assert [m for m in await stream.quiet(0.3) if m.WhichOneof("msg") == "cron_run"] == []

    asyncio.run(scenario())


def test_runs_go_on_while_disconnected_and_are_reported_after_welcome() -> None:
    async def scenario() -> None:
        # No Welcome yet: the scheduler does not wait for the control plane.
        async with backup_started(welcome=False) as (fake, _, stream, _):
            fake.finish("svc1")
            await asyncio.sleep(0.2)
            stream.welcome()
            run = await next_run(stream)
            assert run.run_id == fake.starts[0][1].run_id

    asyncio.run(scenario())


def test_a_start_lost_to_another_agent_is_still_watched_and_reported() -> None:
    async def scenario() -> None:
        def competitor(job: FakeJob, mark: RunMark) -> None:
            # Another manager's agent started the same run a moment earlier.
            job.run, job.iteration, job.version = mark, mark.iteration, job.version + 1

        async with backup_started(competitor) as (fake, _, stream, _):
            await asyncio.sleep(0.2)
            assert fake.starts == []  # this agent's start lost; it started nothing else
            fake.finish("svc1")
            run = await next_run(stream)
            assert run.run_id == cron.run_id_for("svc1", T0 + 60)
            assert run.outcome == cron_pb2.CRON_RUN_OUTCOME_SUCCEEDED

    asyncio.run(scenario())


def test_a_run_interrupted_by_a_deployment_is_reported_failed() -> None:
    async def scenario() -> None:
        fake = FakeCron(backup())
        fake.t = T0 + 61
        async with running_agent(fake, cron_backend=fake, cron_interval=0.02) as (control, _, _):
            stream, _ = await connect(control)
            await until(lambda: len(fake.starts) == 1, "the run to start")
            await asyncio.sleep(0.1)  # watched at least once
            fake.redeploy("svc1")
            run = await next_run(stream)
            assert run.outcome == cron_pb2.CRON_RUN_OUTCOME_FAILED
            assert "interrupted" in run.message and not run.HasField("exit_code")
            assert run.deployment_id == "dep_1"  # the deployment whose job ran
            # The new version starts at its own next scheduled minute, not before.
            await asyncio.sleep(0.2)
            assert len(fake.starts) == 1
            fake.t = T0 + 121
            await until(lambda: len(fake.starts) == 2, "the next run")
            assert fake.starts[1][1].scheduled_for == T0 + 120

    asyncio.run(scenario())


def test_paused_jobs_bad_schedules_and_stacks_being_deployed_are_not_started() -> None:
    async def scenario() -> None:
        paused = dataclasses.replace(backup(), key="svc2", name="stage_p_p", stack="stage_p")
        paused.replicas = 0
        broken = dataclasses.replace(backup(), key="svc3", name="stage_b_b", stack="stage_b")
        broken.schedule = "61 * * * *"
        fake = FakeCron(backup(), paused, broken)
        fake.gate.clear()  # the deployment below runs until the gate opens
        async with running_agent(fake, cron_backend=fake, cron_interval=0.02) as (control, _, _):
            stream, _ = await connect(control)
            a = assignment(service="backup", deployment_type="cron")
            assert a.deployment.stack_name == "stage_backup"
            stream.send(assignment=a)
            await stream.recv_kind("ack")
            fake.t = T0 + 61  # every job is due now
            await asyncio.sleep(0.3)
            assert fake.starts == []  # its stack is being deployed by this agent
            fake.gate.set()
            await stream.recv_kind("result")
            await until(lambda: len(fake.starts) == 1, "the run after the deployment")
            await asyncio.sleep(0.2)
            assert [key for key, _ in fake.starts] == ["svc1"]

    asyncio.run(scenario())


def test_refused_reports_are_dropped() -> None:
    async def scenario() -> None:
        async with backup_started() as (fake, _, stream, agent):
            fake.finish("svc1")
            run = await next_run(stream)
            stream.send(
                cron_run_ack=agent_pb2.CronRunAck(run_id=run.run_id, error="PERMISSION_DENIED: x")
            )
            await until(lambda: agent._cron is not None and not agent._cron.pending(), "drop")

    asyncio.run(scenario())


def test_no_scheduler_without_a_cron_backend() -> None:
    from agent_fakes import ScriptedExecutor, make_agent

    agent = make_agent(1, ScriptedExecutor())
    assert agent._cron is None
