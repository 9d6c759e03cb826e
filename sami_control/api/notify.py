"""NotificationService (`sami notify`): protobuf in, one core call, protobuf out. Answers
carry the core's public views of targets: never a secret, the URL redacted."""

from __future__ import annotations

from typing import Any

from sami_control.api.auth import principal
from sami_control.api.convert import ts
from sami_control.api.pb import notify_pb2, notify_pb2_grpc
from sami_control.api.rpc import Servicer
from sami_control.core.model import Delivery, NotifyTarget


def target_message(t: NotifyTarget, has_secret: bool) -> notify_pb2.NotifyTarget:
    return notify_pb2.NotifyTarget(
        name=t.name,
        kind=t.kind,
        url=t.url,
        service=t.service,
        environment=t.environment,
        events=t.events,
        has_secret=has_secret,
        created_by=t.created_by,
        create_time=ts(t.created_at),
    )


def delivery_message(d: Delivery) -> notify_pb2.Delivery:
    return notify_pb2.Delivery(
        id=d.id,
        target=d.target_name,
        deployment_id=d.deployment_id,
        event=d.event,
        status=d.status,
        attempts=d.attempts,
        status_code=d.status_code,
        last_error=d.last_error,
        create_time=ts(d.created_at),
        next_attempt_time=ts(d.next_attempt_at if d.status == "pending" else 0.0),
        finish_time=ts(d.finished_at),
    )


class NotificationServicer(Servicer, notify_pb2_grpc.NotificationServiceServicer):
    async def CreateTarget(
        self, request: notify_pb2.CreateTargetRequest, context: Any
    ) -> notify_pb2.NotifyTarget:
        t = await self.core.notifications.create_target(
            principal(),
            request.name,
            request.kind,
            request.url,
            secret=request.secret,
            service=request.service,
            environment=request.environment,
            events=list(request.events),
        )
        return target_message(t, bool(request.secret))

    async def ListTargets(
        self, request: notify_pb2.ListTargetsRequest, context: Any
    ) -> notify_pb2.ListTargetsResponse:
        targets = await self.core.notifications.list_targets(principal())
        return notify_pb2.ListTargetsResponse(
            targets=[target_message(t, has) for t, has in targets]
        )

    async def DeleteTarget(
        self, request: notify_pb2.DeleteTargetRequest, context: Any
    ) -> notify_pb2.DeleteTargetResponse:
        await self.core.notifications.delete_target(principal(), request.name)
        return notify_pb2.DeleteTargetResponse()

    async def TestTarget(
        self, request: notify_pb2.TestTargetRequest, context: Any
    ) -> notify_pb2.TestTargetResponse:
        a = await self.core.notifications.test_target(principal(), request.name)
        return notify_pb2.TestTargetResponse(ok=a.ok, status_code=a.status_code, error=a.error)

    async def ListDeliveries(
        self, request: notify_pb2.ListDeliveriesRequest, context: Any
    ) -> notify_pb2.ListDeliveriesResponse:
        rows = await self.core.notifications.list_deliveries(
            principal(), request.target, request.limit
        )
        return notify_pb2.ListDeliveriesResponse(deliveries=[delivery_message(d) for d in rows])
