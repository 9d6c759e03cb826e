"""The runs of cron jobs: recorded as agents report them, listed for people (docs/cron.md).

A run is reported by an agent of the cluster that runs the job, with the deployment that
installed the job (the job service's `sami.deployment-id` label). It is stored once, keyed
by its `run_id`: the agents derive the id from the job service and the scheduled time, so a
run reported twice (two managers watching the same job, or a report sent again after a
reconnect) is the same run. Runs are reports, not changes anybody asked for: they are not
written to the audit log (a refused report is, by the caller).

Nothing here imports grpc.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sami_common import limits
from sami_control.core import authz, paging, validation
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from sami_control.core.model import CronRun, CronRunOutcome, Principal

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# A compose service name, as Docker accepts it in a stack.
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_LATEST_TIME = 1e11  # year 5138: anything later is a broken clock or a forged report


@dataclass(frozen=True)
class CronRunInput:
    """A run as the agent reports it (sami.v1.CronRun in AgentMessage.cron_run)."""

    run_id: str
    deployment_id: str
    job: str
    scheduled_for: float
    started_at: float
    finished_at: float
    outcome: int
    exit_code: int | None = None
    message: str = ""
    schedule: str = ""
    # Checked against the deployment when given; the deployment's values are stored.
    service: str = ""
    environment: str = ""
    stack: str = ""


def _time(field: str, value: float, required: bool) -> float:
    if not math.isfinite(value) or not 0 <= value < _LATEST_TIME:
        raise InvalidArgument(field, "must be a time after 1970")
    if required and value == 0:
        raise InvalidArgument(field, "is required")
    return value


class CronRuns:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def record(
        self, cluster: str, agent_id: str, report: CronRunInput
    ) -> tuple[CronRun, bool]:
        """Store the run an agent of `cluster` reports; (the run, whether it is new).

        Raises NotFound (no such deployment), PermissionDenied (the deployment is another
        cluster's), FailedPrecondition (not a cron deployment), InvalidArgument (a field), and
        AlreadyExists (the run id is taken by another deployment's run).
        """
        if not _RUN_ID.fullmatch(report.run_id):
            raise InvalidArgument(
                "cron_run.run_id", "must be 1-128 characters of letters, digits and ._:-"
            )
        if not report.deployment_id:
            raise InvalidArgument("cron_run.deployment_id", "is required")
        validation.text("cron_run.deployment_id", report.deployment_id, limit=100)
        if not _JOB.fullmatch(report.job):
            raise InvalidArgument("cron_run.job", "must be the compose service name of the job")
        try:
            outcome = CronRunOutcome(report.outcome)
        except ValueError:
            raise InvalidArgument("cron_run.outcome", "must be SUCCEEDED or FAILED") from None
        if report.exit_code is not None and not -(2**31) <= report.exit_code < 2**31:
            raise InvalidArgument("cron_run.exit_code", "is not a 32-bit integer")
        scheduled = _time("cron_run.scheduled_time", report.scheduled_for, required=True)
        started = _time("cron_run.start_time", report.started_at, required=False)
        finished = _time("cron_run.finish_time", report.finished_at, required=False)
        message = validation.text("cron_run.message", report.message, limit=limits.MAX_CRON_MESSAGE)
        schedule = validation.text(
            "cron_run.schedule", report.schedule, limit=limits.MAX_CRON_SCHEDULE
        )
        async with self.ctx.store.tx() as tx:
            d = await tx.get_deployment(report.deployment_id)
            if d is None:
                raise NotFound(f"deployment {report.deployment_id!r} does not exist")
            if d.cluster != cluster:
                raise PermissionDenied(
                    f"deployment {d.id} belongs to another cluster than {cluster!r}"
                )
            if d.deployment_type != "cron":
                raise FailedPrecondition(
                    f"deployment {d.id} is a {d.deployment_type} deployment, not a cron job"
                )
            for field_, given, stored in (
                ("service", report.service, d.service),
                ("environment", report.environment, d.environment),
                ("stack", report.stack, d.stack_name),
            ):
                if given and given != stored:
                    raise InvalidArgument(
                        f"cron_run.{field_}",
                        f"{given!r} is not the {field_} of deployment {d.id} ({stored!r})",
                    )
            existing = await tx.get_cron_run(report.run_id)
            if existing is not None:
                if existing.deployment_id != d.id:
                    raise AlreadyExists(
                        f"run {report.run_id} is already stored for deployment "
                        f"{existing.deployment_id}"
                    )
                return existing, False
            run = CronRun(
                run_id=report.run_id,
                deployment_id=d.id,
                service=d.service,
                environment=d.environment,
                pull_request=d.pull_request,
                cluster=d.cluster,
                stack=d.stack_name,
                job=report.job,
                scheduled_for=scheduled,
                started_at=started,
                finished_at=finished,
                outcome=outcome,
                exit_code=report.exit_code,
                message=message,
                schedule=schedule,
                agent_id=agent_id,
                reported_at=self.ctx.clock(),
            )
            await tx.insert_cron_run(run)
        return run, True

    async def list(
        self,
        who: Principal,
        service: str,
        environment: str,
        page_size: int,
        page_token: str,
    ) -> tuple[list[CronRun], str]:
        """Runs of `service` in `environment` (each optional), most recently reported first."""
        authz.require(who, Action.READ)
        if service:
            validation.name("service", service, "service name")
        if environment:
            validation.environment("environment", environment)
        before, limit = paging.parse_page(page_token, page_size)
        async with self.ctx.store.tx() as tx:
            rows = await tx.list_cron_runs(service, environment, before, limit + 1)
        return paging.cut(rows, limit, lambda r: r.seq)
