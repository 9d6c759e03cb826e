"""Cron jobs on Swarm: deploying a `cron` manifest, and the engine side of the agent's cron
scheduler (sami_agent/cron.py). See docs/cron.md.

**Deploying** is a Swarm deployment (swarm.py: plan, pin by digest, `docker stack deploy`,
watch, roll back) whose generated override also makes every service of the stack a
*dormant job*:

    services:
      backup:
        image: registry/app@sha256:...
        deploy:
          mode: replicated-job
          replicas: 0                  # dormant: Swarm runs nothing when it is deployed
          restart_policy: {condition: none}
          labels:
            sami.deployment-id: dep_...
            sami.cron-schedule: "30 2 * * *"
            sami.cron-replicas: "1"    # the stack file's replicas: tasks per run
            sami.cron-since: "1767225600.000"
            sami.service: backup
            sami.environment: production

Swarm starts a replicated job every time its service is created or updated; with 0
completions that start does nothing, so deploying never runs the job outside its schedule.
The deployment succeeds as soon as the job services carry the new spec; it does not wait for
a run.

**Running** (the scheduler's `start_run`): one versioned service update that sets the
job's completions to its replicas and labels the run (`sami.cron-run`, `sami.cron-scheduled`,
`sami.cron-started`, `sami.cron-iteration`). Swarm refuses an update based on a stale
version ("update out of sequence"), so when two agents start the same run only one update
lands. Swarm then starts a new job iteration: `replicas` tasks, each run once (restart
policy `none`: a retry is the next scheduled run). The run ends when all its tasks did;
it succeeded when every task exited 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import re
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import docker

from sami_agent import cron
from sami_agent.cron import CronJob, RunMark, RunState, ScaledClock
from sami_agent.executor import ExecutionResult, Job, Outcome, ProgressReporter
from sami_agent.executors import swarm_apply, swarm_variables
from sami_agent.executors.swarm_apply import (
    LABEL_DEPLOYMENT,
    STACK_NAMESPACE_LABEL,
    JobError,
    StackPlan,
)
from sami_agent.executors.swarm_watch import TERMINAL_STATES
from sami_common import cron as schedules

if TYPE_CHECKING:
    from sami_agent.executors.swarm import SwarmExecutor

__all__ = ["SwarmCronExecutor", "cron_plan"]

LABEL_SCHEDULE = "sami.cron-schedule"
LABEL_REPLICAS = "sami.cron-replicas"
LABEL_SINCE = "sami.cron-since"
LABEL_SERVICE = "sami.service"
LABEL_ENVIRONMENT = "sami.environment"
LABEL_RUN = "sami.cron-run"
LABEL_SCHEDULED = "sami.cron-scheduled"
LABEL_STARTED = "sami.cron-started"
LABEL_ITERATION = "sami.cron-iteration"
JOB_MODES = (None, "replicated-job")
# How much of a failed run's output goes into its message.
OUTPUT_LINES = 5
OUTPUT_CHARS = 400
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def _deploy_blocks(job: Job, plan: StackPlan) -> dict[str, dict[str, Any]]:
    """Each service's `deploy:` mapping, merged over the stack files in order (shallowly:
    enough to read mode, replicas, update_config and restart_policy), read from the plan's
    files: the stack files with their variables filled."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in plan.services}
    for path in plan.stack_files:
        doc = swarm_variables.filled_document(plan.files[path]) or {}
        for name, spec in (doc.get("services") or {}).items():
            deploy = (spec or {}).get("deploy") if isinstance(spec, dict) else None
            if isinstance(deploy, dict) and name in merged:
                merged[name].update(deploy)
    return merged


def cron_plan(job: Job, since: float) -> tuple[StackPlan, list[str]]:
    """The Swarm plan of a cron job (every service a dormant job), and notes for the log.
    Raises JobError, like swarm_apply.plan, when the job cannot be deployed as given."""
    try:
        schedules.parse(job.cron_schedule)
    except ValueError as exc:
        raise JobError(
            f"cron schedule {job.cron_schedule!r} is not valid: {exc}"
            if job.cron_schedule
            else "the job has no cron schedule (sami.yaml: cron.schedule)"
        ) from None
    plan = swarm_apply.plan(job)
    notes: list[str] = []
    overrides: dict[str, Mapping[str, Any]] = {}
    for name, deploy in _deploy_blocks(job, plan).items():
        mode = deploy.get("mode")
        if mode not in JOB_MODES:
            raise JobError(
                f"service {name}: a cron job runs as a Swarm job (mode replicated-job, which"
                f" Sami sets); remove `mode: {mode}` from the stack file"
            )
        if "update_config" in deploy:
            raise JobError(
                f"service {name}: Swarm jobs may not have an update config;"
                " remove deploy.update_config from the stack file"
            )
        replicas = deploy.get("replicas", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise JobError(f"service {name}: deploy.replicas must be a whole number, 0 or more")
        condition = (deploy.get("restart_policy") or {}).get("condition")
        if condition not in (None, "none"):
            notes.append(
                f"{name}: restart_policy condition {condition} replaced by none (a run is one"
                " attempt; the next scheduled run is the retry)"
            )
        if replicas == 0:
            notes.append(f"{name}: replicas 0: the job is paused (no run is started)")
        overrides[name] = {
            "deploy": {
                "mode": "replicated-job",
                "replicas": 0,
                "restart_policy": {"condition": "none"},
                "labels": {
                    LABEL_SCHEDULE: job.cron_schedule,
                    LABEL_REPLICAS: str(replicas),
                    LABEL_SINCE: f"{since:.3f}",
                    LABEL_SERVICE: job.service,
                    LABEL_ENVIRONMENT: job.environment,
                },
            }
        }
    return dataclasses.replace(plan, service_overrides=overrides), notes


def _demultiplex(data: bytes) -> bytes:
    """The payload of Docker's multiplexed log stream (8-byte frame headers: stream, 0, 0,
    0, big-endian size); data that is not framed (a TTY) is returned as it is."""
    out = bytearray()
    pos = 0
    while pos + 8 <= len(data):
        kind, size = data[pos], int.from_bytes(data[pos + 4 : pos + 8], "big")
        if kind not in (0, 1, 2) or data[pos + 1 : pos + 4] != b"\0\0\0":
            return data
        out += data[pos + 8 : pos + 8 + size]
        pos += 8 + size
    return bytes(out) if pos == len(data) else data


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _real_time(text: str) -> float | None:
    """An engine timestamp (RFC 3339, nanoseconds) as seconds since the epoch."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.datetime.fromisoformat(_FRACTION.sub(r"\1", text)).timestamp()
    except ValueError:
        return None


class SwarmCronExecutor:
    """Executor of `cron` deployments, and the agent's CronBackend, on the engine of a
    SwarmExecutor (its settings, its way of finding the engine)."""

    capabilities: tuple[str, ...] = ("cron",)

    def __init__(self, swarm: SwarmExecutor, *, clock: ScaledClock | None = None) -> None:
        self._swarm = swarm
        self._clock = clock or ScaledClock()
        self._client: docker.DockerClient | None = None

    # -- deploying -------------------------------------------------------------------------

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        if job.deployment_type != "cron":
            return ExecutionResult(
                Outcome.FAILED, f"the cron executor does not deploy {job.deployment_type!r}"
            )
        if job.teardown:  # a pull-request preview's stack: removed like any other
            return self._swarm.execute(
                dataclasses.replace(job, deployment_type="swarm"), report, cancelled
            )
        now = self._clock.now()
        try:
            plan, notes = cron_plan(job, since=now)
        except JobError as exc:
            return ExecutionResult(Outcome.FAILED, str(exc))
        for note in notes:
            report("plan", note)
        schedule = schedules.parse(job.cron_schedule)
        upcoming = schedule.next_after(now)
        when = _iso(upcoming) if upcoming is not None else "never"
        report(
            "plan",
            f"cron job {', '.join(plan.services)}: schedule {job.cron_schedule!r} (UTC),"
            f" next run {when}; installed dormant (nothing runs until then)",
        )
        result = self._swarm.deploy_plan(job, plan, report, cancelled, settle=0.0)
        if result.outcome is Outcome.SUCCEEDED:
            return ExecutionResult(
                Outcome.SUCCEEDED,
                f"cron job {', '.join(plan.swarm_name(s) for s in plan.services)} installed"
                f" on {plan.image}; schedule {job.cron_schedule!r} (UTC), next run {when}",
            )
        return result

    # -- the scheduler's backend -----------------------------------------------------------

    def now(self) -> float:
        return self._clock.now()

    def _api(self) -> Any:
        if self._client is None:
            self._client = self._swarm._client()
        return self._client.api

    def _reset(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @contextlib.contextmanager
    def _reset_on_error(self) -> Iterator[None]:
        # A failed call may have left the client broken (engine restarted): open a new one
        # on the next call.
        try:
            yield
        except (docker.errors.DockerException, OSError):
            self._reset()
            raise

    def list_cron_jobs(self) -> list[CronJob]:
        with self._reset_on_error():
            services = self._api().services(filters={"label": LABEL_SCHEDULE})
        jobs: list[CronJob] = []
        for raw in services:
            job = _cron_job(raw)
            if job is not None:
                jobs.append(job)
        return sorted(jobs, key=lambda j: j.name)

    def run_state(self, key: str, mark: RunMark, current_iteration: int | None) -> RunState:
        with self._reset_on_error():
            try:
                tasks = self._api().tasks(filters={"service": key})
            except docker.errors.NotFound:
                tasks = []
        mine = [
            t
            for t in tasks
            if t.get("ServiceID") == key
            and int((t.get("JobIteration") or {}).get("Index", -1)) == mark.iteration
        ]
        ended = [t for t in mine if (t.get("Status") or {}).get("State") in TERMINAL_STATES]
        if mark.completions > 0 and len(mine) >= mark.completions and len(ended) == len(mine):
            return self._ended(mine)
        if current_iteration == mark.iteration:
            return RunState(False)
        done = sum(1 for t in ended if t["Status"]["State"] == "complete")
        why = (
            "the job service was removed"
            if current_iteration is None
            else "the job service was updated (deployed again, or by hand)"
        )
        return RunState(
            finished=True,
            succeeded=False,
            message=f"interrupted: {why} before the run ended ({done}/{mark.completions}"
            " task(s) had completed; Swarm stopped the others)",
            finished_at=self._clock.now(),
        )

    def _ended(self, tasks: list[dict[str, Any]]) -> RunState:
        def when(t: dict[str, Any]) -> float:
            return _real_time((t.get("Status") or {}).get("Timestamp") or "") or 0.0

        tasks = sorted(tasks, key=when)
        last = max((when(t) for t in tasks), default=0.0)
        finished_at = self._clock.from_real(last) if last else self._clock.now()
        failed = [t for t in tasks if t["Status"]["State"] != "complete"]
        if not failed:
            n = len(tasks)
            return RunState(True, True, 0, f"{n}/{n} task(s) completed", finished_at)
        first = failed[0]
        status = first.get("Status") or {}
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        what = (status.get("Err") or status.get("Message") or status.get("State") or "").strip()
        message = f"{what} (task {first['ID'][:12]})"
        if len(failed) > 1:
            message += f"; {len(failed)} of {len(tasks)} tasks failed"
        output = self._last_output(first["ID"])
        if output:
            message += f"; last output: {output}"
        return RunState(
            True,
            False,
            int(code) if code is not None and status.get("State") == "failed" else None,
            message,
            finished_at,
        )

    def _last_output(self, task_id: str) -> str:
        """The last lines the task's container wrote (the engine's task logs), or "" when
        they cannot be read (a log driver without reads, the engine busy)."""
        api = self._api()
        try:
            response = api._get(
                api._url("/tasks/{0}/logs", task_id),
                params={"stdout": 1, "stderr": 1, "tail": str(OUTPUT_LINES), "follow": 0},
                timeout=5,
            )
            if response.status_code != 200:
                return ""
            data = response.content
        except (docker.errors.DockerException, OSError):
            return ""
        text = _demultiplex(data).decode("utf-8", "replace")
        lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
        tail = " | ".join(lines[-OUTPUT_LINES:])
        return tail if len(tail) <= OUTPUT_CHARS else "..." + tail[-(OUTPUT_CHARS - 3) :]

    def start_run(self, job: CronJob, mark: RunMark) -> bool:
        api = self._api()
        try:
            raw = api.inspect_service(job.key)
        except docker.errors.NotFound:
            return False
        spec = raw["Spec"]
        spec["Labels"] = {
            **(spec.get("Labels") or {}),
            LABEL_RUN: mark.run_id,
            LABEL_SCHEDULED: f"{mark.scheduled_for:.0f}",
            LABEL_STARTED: f"{mark.started_at:.3f}",
            LABEL_ITERATION: str(mark.iteration),
        }
        spec["Mode"] = {
            "ReplicatedJob": {
                "MaxConcurrent": mark.completions,
                "TotalCompletions": mark.completions,
            }
        }
        # No local version check: Swarm refuses an update based on a stale job.version,
        # the one guard against two agents starting the same run.
        try:
            response = api._post_json(
                api._url("/services/{0}/update", job.key),
                data=spec,
                params={"version": job.version},
            )
            api._result(response, json=True)
        except docker.errors.APIError as exc:
            if "out of sequence" in str(exc.explanation or exc):
                return False  # someone (another agent) changed it first
            raise
        return True


def _cron_job(raw: Mapping[str, Any]) -> CronJob | None:
    """A job service as the scheduler sees it; None for a service that only looks like one
    (labelled by hand, or not a replicated job)."""
    spec = raw.get("Spec") or {}
    labels = spec.get("Labels") or {}
    job_mode = (spec.get("Mode") or {}).get("ReplicatedJob")
    if job_mode is None or not labels.get(LABEL_DEPLOYMENT):
        return None
    name = str(spec.get("Name", ""))
    stack = labels.get(STACK_NAMESPACE_LABEL, "")
    try:
        run = None
        if labels.get(LABEL_RUN):
            run = RunMark(
                run_id=labels[LABEL_RUN],
                scheduled_for=float(labels.get(LABEL_SCHEDULED, "0")),
                started_at=float(labels.get(LABEL_STARTED, "0")),
                iteration=int(labels.get(LABEL_ITERATION, "-1")),
                completions=int(job_mode.get("TotalCompletions") or 0),
            )
        return CronJob(
            key=str(raw["ID"]),
            name=name,
            version=int(raw["Version"]["Index"]),
            deployment_id=labels[LABEL_DEPLOYMENT],
            service=labels.get(LABEL_SERVICE, ""),
            environment=labels.get(LABEL_ENVIRONMENT, ""),
            stack=stack,
            job=name.removeprefix(f"{stack}_") if stack else name,
            schedule=labels.get(LABEL_SCHEDULE, ""),
            since=float(labels.get(LABEL_SINCE, "0")),
            replicas=int(labels.get(LABEL_REPLICAS, "1")),
            iteration=int(((raw.get("JobStatus") or {}).get("JobIteration") or {}).get("Index", 0)),
            run=run,
        )
    except (KeyError, ValueError):
        return None


# The backend this module provides, checked once at import time (mypy checks the rest).
_: type[cron.CronBackend] = SwarmCronExecutor
