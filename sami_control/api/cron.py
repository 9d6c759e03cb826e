"""CronService (listing cron runs) and the agent's cron run reports: protobuf in and out."""

from __future__ import annotations

from typing import Any

import structlog

from sami_control.api.auth import principal
from sami_control.api.convert import seconds, ts
from sami_control.api.pb import cron_pb2, cron_pb2_grpc
from sami_control.api.rpc import Servicer
from sami_control.core.commands import CronRunAckCommand
from sami_control.core.controlplane import ControlPlane
from sami_control.core.cron_runs import CronRunInput
from sami_control.core.errors import DomainError, Unauthenticated
from sami_control.core.model import CronRun
from sami_control.core.sessions import AgentSession

log = structlog.get_logger("sami.api")


def cron_run(r: CronRun) -> cron_pb2.CronRun:
    out = cron_pb2.CronRun(
        run_id=r.run_id,
        deployment_id=r.deployment_id,
        service=r.service,
        environment=r.environment,
        pull_request=r.pull_request,
        stack=r.stack,
        job=r.job,
        scheduled_time=ts(r.scheduled_for),
        start_time=ts(r.started_at),
        finish_time=ts(r.finished_at),
        outcome=int(r.outcome),  # type: ignore[arg-type]
        message=r.message,
        agent_id=r.agent_id,
        cluster=r.cluster,
        report_time=ts(r.reported_at),
        schedule=r.schedule,
    )
    if r.exit_code is not None:
        out.exit_code = r.exit_code
    return out


def cron_run_input(m: cron_pb2.CronRun) -> CronRunInput:
    return CronRunInput(
        run_id=m.run_id,
        deployment_id=m.deployment_id,
        job=m.job,
        scheduled_for=seconds(m.scheduled_time),
        started_at=seconds(m.start_time),
        finished_at=seconds(m.finish_time),
        outcome=int(m.outcome),
        exit_code=m.exit_code if m.HasField("exit_code") else None,
        message=m.message,
        schedule=m.schedule,
        service=m.service,
        environment=m.environment,
        stack=m.stack,
    )


async def handle_report(core: ControlPlane, session: AgentSession, m: cron_pb2.CronRun) -> None:
    """An agent's AgentMessage.cron_run. A refused run is acknowledged with the reason, so
    the agent drops it instead of sending it again after every reconnect; the stream stays
    open (only a revoked or expired token ends it)."""
    try:
        await core.reports.cron_run(session, cron_run_input(m))
    except Unauthenticated:
        raise
    except DomainError as exc:
        log.warning(
            "cron_run_refused",
            agent_id=session.agent_id,
            run_id=m.run_id[:128],
            deployment_id=m.deployment_id[:100],
            code=exc.code,
            error=exc.message,
        )
        session.send(CronRunAckCommand(m.run_id[:128], f"{exc.code}: {exc.message}"))


class CronServicer(Servicer, cron_pb2_grpc.CronServiceServicer):
    async def ListCronRuns(
        self, request: cron_pb2.ListCronRunsRequest, context: Any
    ) -> cron_pb2.ListCronRunsResponse:
        runs, nxt = await self.core.cron_runs.list(
            principal(), request.service, request.environment, request.page_size, request.page_token
        )
        return cron_pb2.ListCronRunsResponse(runs=[cron_run(r) for r in runs], next_page_token=nxt)
