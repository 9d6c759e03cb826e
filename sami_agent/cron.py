"""The agent's cron scheduler: start each cron job on its schedule, watch the run, report how
it ended (docs/cron.md).

The scheduler keeps no state of its own that matters: what was started, and for which
scheduled time, is written on the job itself by the backend (for Swarm, labels of the job
service, see executors/swarm_cron.py), so an agent that restarts, or another agent of the
same swarm, carries on where the last one stopped. Every pass (`tick`, about once a second):

1. lists the cron jobs of the swarm (`CronBackend.list_cron_jobs`);
2. for each job's current run not yet reported, asks whether it ended (`run_state`); an
   ended run becomes a report; a run this agent watched that is no longer the job's
   current one (the job was deployed again, updated by hand or removed meanwhile) is read
   one last time and reported too (failed, "interrupted", if its tasks did not end);
3. for each job that is not running and not being deployed by this agent, takes the latest
   time its schedule fired after both the job's installation (`since`) and its last run's
   scheduled time; if there is one, starts a run for it (`start_run`). The backend makes
   the start conditional on the job not having changed since it was listed, so with two
   agents on two managers only one start wins.

A run missed while no agent ran (or while the previous run was still going: runs never
overlap) is started late, once: only the latest missed time is run, as Kubernetes CronJobs
do without a starting deadline. Reports are sent to the control plane and sent again after
each reconnect until it acknowledges them (`CronRunAck`); the control plane stores a run once
(by run id), whichever agent reports it and however often.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from sami_agent.jobs import run_in_daemon_thread
from sami_agent.pb import agent_pb2, cron_pb2
from sami_common import cron, logs

DEFAULT_INTERVAL = 1.0
# Reports kept for resending until acknowledged; beyond it the oldest are dropped (logged).
MAX_UNCONFIRMED = 1000
# Run ids remembered as reported, so a finished run is not read again every pass.
MAX_REPORTED = 4096


@dataclass
class ScaledClock:
    """The scheduler's clock: real time, or real time running `scale` times faster from
    `origin` on (tests see a minute pass every few seconds). `from_real` maps a real time
    (a task's end) onto this clock."""

    scale: float = 1.0
    origin: float = field(default_factory=time.time)

    def now(self) -> float:
        return self.from_real(time.time())

    def from_real(self, t: float) -> float:
        if self.scale == 1.0:
            return t
        return self.origin + (t - self.origin) * self.scale


@dataclass(frozen=True)
class RunMark:
    """A run as the backend wrote it on its job when it was started."""

    run_id: str
    scheduled_for: float  # the schedule's time this run is for
    started_at: float
    iteration: int  # the job's iteration (Swarm's JobIteration) this run is
    completions: int  # tasks that must complete


@dataclass(frozen=True)
class CronJob:
    """One cron job, as the backend found it."""

    key: str  # stable identity (the Swarm service id)
    name: str  # for people (the Swarm service name)
    version: int  # changes with every change of the job
    deployment_id: str
    service: str
    environment: str
    stack: str
    job: str  # the compose service name
    schedule: str
    since: float  # when this version of the job was installed (scheduler clock)
    replicas: int  # tasks per run; 0 pauses the job
    iteration: int  # the job's current iteration
    run: RunMark | None  # the last run started, if any


@dataclass(frozen=True)
class RunState:
    finished: bool
    succeeded: bool = False
    exit_code: int | None = None
    message: str = ""
    finished_at: float = 0.0  # scheduler clock


class CronBackend(Protocol):
    """What the scheduler needs from the engine. Called from one worker thread at a time."""

    def now(self) -> float:
        """The scheduler's clock (seconds since the epoch)."""

    def list_cron_jobs(self) -> list[CronJob]: ...

    def run_state(self, key: str, mark: RunMark, current_iteration: int | None) -> RunState:
        """How the run `mark` of job `key` stands. `current_iteration` is the job's iteration
        now, None when the job is gone: a run whose tasks did not all end and that is no
        longer the job's current iteration was interrupted (finished, failed)."""

    def start_run(self, job: CronJob, mark: RunMark) -> bool:
        """Start run `mark` of `job`, only if the job is still at `job.version`; False when it
        changed meanwhile (another agent started it, someone updated it)."""


def run_id_for(key: str, scheduled_for: float) -> str:
    """The same for every agent that starts or sees this job's run for that time."""
    digest = hashlib.sha256(f"{key}/{int(scheduled_for)}".encode()).hexdigest()
    return f"cron_{digest[:24]}"


def _timestamp(t: float) -> timestamp_pb2.Timestamp | None:
    if not t or not math.isfinite(t):
        return None
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(t * 1e9))
    return out


class CronScheduler:
    """Runs the passes described in the module docstring; see `run` for the loop."""

    def __init__(
        self,
        backend: CronBackend,
        *,
        interval: float = DEFAULT_INTERVAL,
        log: Any = None,
        max_unconfirmed: int = MAX_UNCONFIRMED,
    ) -> None:
        self.backend = backend
        self.interval = interval
        self._log = log if log is not None else logs.get("sami_agent.cron")
        self._max_unconfirmed = max_unconfirmed
        # Touched by the pass (a worker thread, one at a time):
        self._active: dict[str, tuple[CronJob, RunMark]] = {}
        self._reported: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._schedules: dict[str, cron.Schedule | None] = {}
        # Touched on the event loop only:
        self._unconfirmed: collections.OrderedDict[str, agent_pb2.AgentMessage] = (
            collections.OrderedDict()
        )
        self._last_error = ""

    # -- one pass (worker thread) --------------------------------------------------------

    def tick(self, busy: frozenset[str] = frozenset()) -> list[cron_pb2.CronRun]:
        """One pass: the runs that ended (to report), after starting the runs that are due.
        Jobs of the `busy` stacks (being deployed by this agent) are not started."""
        now = self.backend.now()
        jobs = self.backend.list_cron_jobs()
        by_key = {job.key: job for job in jobs}
        reports: list[cron_pb2.CronRun] = []
        for key, (seen, mark) in list(self._active.items()):
            current = by_key.get(key)
            current_run = current.run if current is not None else None
            if current_run is not None and current_run.run_id == mark.run_id:
                continue  # still the job's current run: looked at below
            del self._active[key]
            if mark.run_id in self._reported:
                continue
            try:
                state = self.backend.run_state(key, mark, current.iteration if current else None)
            except Exception as exc:
                self._log.warning("cron_run_read_failed", job=seen.name, error=str(exc))
                continue
            if not state.finished:  # a backend that cannot tell: it was not seen to end
                state = RunState(True, False, None, "the run was not seen to end", now)
            reports.append(self._report(seen, mark, state))
        for job in jobs:
            try:
                report = self._pass(job, now, busy)
            except Exception as exc:  # one broken job must not stop the others
                self._log.warning("cron_job_pass_failed", job=job.name, error=str(exc))
                continue
            if report is not None:
                reports.append(report)
        return reports

    def _pass(self, job: CronJob, now: float, busy: frozenset[str]) -> cron_pb2.CronRun | None:
        mark = job.run
        if mark is not None and mark.run_id not in self._reported:
            state = self.backend.run_state(job.key, mark, job.iteration)
            if not state.finished:
                self._active[job.key] = (job, mark)
                return None  # runs never overlap
            self._active.pop(job.key, None)
            return self._report(job, mark, state)
        if job.stack in busy or job.replicas < 1:
            return None
        schedule = self._schedule(job)
        if schedule is None:
            return None
        after = max(job.since, mark.scheduled_for if mark is not None else -math.inf)
        due = schedule.latest(now, after)
        if due is None:
            return None
        new = RunMark(
            run_id=run_id_for(job.key, due),
            scheduled_for=due,
            started_at=now,
            iteration=job.iteration + 1,
            completions=job.replicas,
        )
        if not self.backend.start_run(job, new):
            self._log.info("cron_run_started_elsewhere", reason="the job changed", job=job.name)
            return None
        self._active[job.key] = (job, new)
        self._log.info(
            "cron_run_started",
            job=job.name,
            run_id=new.run_id,
            deployment_id=job.deployment_id,
            scheduled_for=_iso(due),
            late_by=round(now - due, 1),
        )
        return None

    def _schedule(self, job: CronJob) -> cron.Schedule | None:
        if job.schedule not in self._schedules:
            try:
                self._schedules[job.schedule] = cron.parse(job.schedule)
            except ValueError as exc:
                self._schedules[job.schedule] = None
                self._log.error(
                    "cron_schedule_invalid",
                    reason="not running the job",
                    job=job.name,
                    schedule=job.schedule,
                    error=str(exc),
                )
        return self._schedules[job.schedule]

    def _report(self, job: CronJob, mark: RunMark, state: RunState) -> cron_pb2.CronRun:
        self._reported[mark.run_id] = None
        while len(self._reported) > MAX_REPORTED:
            self._reported.popitem(last=False)
        outcome = (
            cron_pb2.CRON_RUN_OUTCOME_SUCCEEDED
            if state.succeeded
            else cron_pb2.CRON_RUN_OUTCOME_FAILED
        )
        run = cron_pb2.CronRun(
            run_id=mark.run_id,
            deployment_id=job.deployment_id,
            service=job.service,
            environment=job.environment,
            stack=job.stack,
            job=job.job,
            scheduled_time=_timestamp(mark.scheduled_for),
            start_time=_timestamp(mark.started_at),
            finish_time=_timestamp(state.finished_at),
            outcome=outcome,
            message=state.message,  # cleaned with every message sent (sami_agent.outgoing)
            schedule=job.schedule,
        )
        if state.exit_code is not None:
            run.exit_code = state.exit_code
        self._log.info(
            "cron_run_ended",
            job=job.name,
            run_id=mark.run_id,
            deployment_id=job.deployment_id,
            outcome="succeeded" if state.succeeded else "failed",
            exit_code=state.exit_code,
            message=state.message,
        )
        return run

    # -- the loop and the reports (event loop) -------------------------------------------

    async def run(
        self,
        send: Callable[[agent_pb2.AgentMessage], None],
        busy_stacks: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """Pass every `interval` seconds for ever; `send` each ended run (it may drop
        messages while there is no stream: `pending()` has them after the next Welcome)."""
        while True:
            # A snapshot taken on the event loop: the worker thread must not read live state.
            busy = frozenset(busy_stacks())
            try:
                runs = await run_in_daemon_thread(functools.partial(self.tick, busy), "sami-cron")
            except Exception as exc:
                if str(exc) != self._last_error:
                    self._log.warning("cron_pass_failed", reason="trying again", error=str(exc))
                    self._last_error = str(exc)
            else:
                self._last_error = ""
                for r in runs:
                    send(self._remember(r))
            await asyncio.sleep(self.interval)

    def _remember(self, run: cron_pb2.CronRun) -> agent_pb2.AgentMessage:
        message = agent_pb2.AgentMessage(cron_run=run)
        self._unconfirmed[run.run_id] = message
        while len(self._unconfirmed) > self._max_unconfirmed:
            dropped, _ = self._unconfirmed.popitem(last=False)
            self._log.warning(
                "cron_runs_dropped",
                reason="too many not acknowledged by the control plane",
                run_id=dropped,
            )
        return message

    def pending(self) -> list[agent_pb2.AgentMessage]:
        """The reports the control plane has not acknowledged, oldest first."""
        return list(self._unconfirmed.values())

    def acknowledged(self, ack: agent_pb2.CronRunAck) -> None:
        self._unconfirmed.pop(ack.run_id, None)
        if ack.error:
            self._log.error("cron_run_report_refused", run_id=ack.run_id, error=ack.error)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
