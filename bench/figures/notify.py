"""Figure 15: notifications do not slow deployments. Whole lifecycles (figure 3's closed
loops) with no notification target, then with 3 generic webhook targets (every success is
written to the outbox three times in its state change's transaction, and sent by the
sender loop to a receiver in this process), in the same run; and how many deliveries the
receiver got."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
from aiohttp import web

from bench.common import Row
from bench.control import ControlPlane, bearer
from bench.figures.lifecycle import run_lifecycles
from bench.figures.shared import Ctx

TARGETS = 3


class _Receiver:
    """Answers 200 to every POST and counts them, on a loop of its own thread."""

    def __init__(self) -> None:
        self.count = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        return web.Response(text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> _Receiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _add_targets(url: str) -> Any:
    def configure(cp: ControlPlane, admin: str) -> None:
        from sami.v1 import notify_pb2, notify_pb2_grpc

        with grpc.insecure_channel(cp.addr) as ch:
            stub = notify_pb2_grpc.NotificationServiceStub(ch)
            for i in range(TARGETS):
                stub.CreateTarget(
                    notify_pb2.CreateTargetRequest(
                        name=f"bench-{i}", kind="generic", url=f"{url}/{i}", secret="bench"
                    ),
                    metadata=bearer(admin),
                    timeout=30,
                )

    return configure


def fig_notify(ctx: Ctx) -> list[Row]:
    none = run_lifecycles(ctx, "notify-none")
    receiver = _Receiver().start()
    try:
        three = run_lifecycles(ctx, "notify-three", configure=_add_targets(receiver.url))
        received = receiver.count
    finally:
        receiver.stop()
    ratio = three["rate"] / none["rate"] if none["rate"] else None
    return [
        Row("15", "full lifecycles, no notification target", none["rate"], "/s"),
        Row(
            "15",
            f"full lifecycles, {TARGETS} webhook targets (same run)",
            three["rate"],
            "/s",
            ratio=ratio,
            note=f"ratio: vs no target; the receiver got {received} deliveries; server CPU "
            f"{none['server_cpu_ms_per_lifecycle']:.2f} → "
            f"{three['server_cpu_ms_per_lifecycle']:.2f} ms a lifecycle",
            extra={"none": none, "three_targets": three, "deliveries_received": received},
        ),
    ]
