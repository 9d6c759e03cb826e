"""StatusService (`sami status`, docs/status.md): protobuf in, one core call, protobuf out."""

from __future__ import annotations

import contextlib
from typing import Any

from sami_control.api.auth import principal
from sami_control.api.convert import ts
from sami_control.api.pb import status_pb2, status_pb2_grpc
from sami_control.api.rpc import Servicer
from sami_control.core.live_status import DriftRecord, ServiceStatus, running_digest


def status_message(s: ServiceStatus) -> status_pb2.ServiceStatus:
    live = s.live
    return status_pb2.ServiceStatus(
        service=live.service,
        environment=live.environment,
        pull_request=live.pull_request,
        cluster=live.cluster,
        stack_name=live.stack_name,
        swarm_service=live.swarm_service,
        artifact_name=s.artifact_name,
        running_digest=running_digest(live.image),
        deployment_id=live.deployment_id,
        deploy_time=ts(s.deploy_time),
        desired_replicas=live.desired_replicas,
        running_replicas=live.running_replicas,
        unhealthy_tasks=live.unhealthy_tasks,
        health=s.health,
        update_state=live.update_state,
        change_time=ts(live.change_time),
        drifted=bool(s.drift_reason),
        drift_reason=s.drift_reason,
        drift_time=ts(s.drift_since),
        stale=s.stale,
        report_time=ts(s.report_time),
    )


def drift_message(r: DriftRecord) -> status_pb2.DriftRecord:
    return status_pb2.DriftRecord(
        service=r.service,
        environment=r.environment,
        pull_request=r.pull_request,
        swarm_service=r.swarm_service,
        reason=r.reason,
        start_time=ts(r.started),
        end_time=ts(r.ended),  # unset while it goes on
    )


def _response(rows: list[ServiceStatus]) -> status_pb2.GetStatusResponse:
    return status_pb2.GetStatusResponse(services=[status_message(r) for r in rows])


class StatusServicer(Servicer, status_pb2_grpc.StatusServiceServicer):
    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: Any
    ) -> status_pb2.GetStatusResponse:
        rows = await self.core.live.get(principal(), request.service, request.environment)
        return _response(rows)

    async def ListDriftRecords(
        self, request: status_pb2.ListDriftRecordsRequest, context: Any
    ) -> status_pb2.ListDriftRecordsResponse:
        records = await self.core.live.drift_history(
            principal(),
            request.service,
            request.environment,
            request.pull_request,
            request.limit,
        )
        return status_pb2.ListDriftRecordsResponse(records=[drift_message(r) for r in records])

    async def WatchStatus(self, request: status_pb2.GetStatusRequest, context: Any) -> None:
        # A coroutine that writes (not a generator): see DeploymentServicer.WatchDeployment.
        watch = self.core.live.watch(principal(), request.service, request.environment)
        async with contextlib.aclosing(watch) as updates:
            async for rows in updates:
                await context.write(_response(rows))
