"""SamiClient's calls of NotificationService (`sami notify`): a mixin of SamiClient
(client.py), which provides `_call` and the stub."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sami_client.pb import notify_pb2


class NotifyCalls:
    _notify: Any  # notify_pb2_grpc.NotificationServiceStub, on the client's channel

    def _call(self, method: Any, request: Any, *, timeout: float | None = None) -> Any:
        raise NotImplementedError  # SamiClient's

    def create_notify_target(
        self,
        name: str,
        kind: str,
        url: str,
        *,
        secret: str = "",
        service: str = "",
        environment: str = "",
        events: Sequence[str] = (),
    ) -> notify_pb2.NotifyTarget:
        target: notify_pb2.NotifyTarget = self._call(
            self._notify.CreateTarget,
            notify_pb2.CreateTargetRequest(
                name=name,
                kind=kind,
                url=url,
                secret=secret,
                service=service,
                environment=environment,
                events=list(events),
            ),
        )
        return target

    def list_notify_targets(self) -> list[notify_pb2.NotifyTarget]:
        resp = self._call(self._notify.ListTargets, notify_pb2.ListTargetsRequest())
        return list(resp.targets)

    def delete_notify_target(self, name: str) -> None:
        self._call(self._notify.DeleteTarget, notify_pb2.DeleteTargetRequest(name=name))

    def test_notify_target(self, name: str) -> notify_pb2.TestTargetResponse:
        resp: notify_pb2.TestTargetResponse = self._call(
            self._notify.TestTarget, notify_pb2.TestTargetRequest(name=name), timeout=60.0
        )
        return resp

    def list_deliveries(self, target: str = "", limit: int = 50) -> list[notify_pb2.Delivery]:
        resp = self._call(
            self._notify.ListDeliveries,
            notify_pb2.ListDeliveriesRequest(target=target, limit=limit),
        )
        return list(resp.deliveries)
