"""A notification receiver on 127.0.0.1 for tests: an aiohttp server that records every
request and answers like a webhook receiver, a chat API or GitHub's REST API (deployments
and their statuses), and can fail the first N requests or hang."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    fail_first: int = 0  # answer 500 to this many requests first
    hang: float = 0.0  # wait this long before answering
    close_first: int = 0  # close the connection without an answer to this many first
    requests: list[Request] = field(default_factory=list)
    answered: int = 0
    in_flight: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None
    _next_id: int = 1000

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        try:
            body = await request.read()
            self.requests.append(
                Request(request.method, request.path_qs, dict(request.headers), body)
            )
            if self.hang:
                await asyncio.sleep(self.hang)
            if len(self.requests) <= self.close_first:
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=204)  # never reaches the sender
            if len(self.requests) <= self.fail_first:
                return web.json_response({"message": "try later"}, status=500)
            self.answered += 1
            if request.path.endswith("/deployments") and request.method == "POST":
                self._next_id += 1
                return web.json_response({"id": self._next_id, "url": "x"}, status=201)
            if request.path.endswith("/statuses"):
                return web.json_response({"id": 1, "state": json.loads(body)["state"]}, status=201)
            return web.json_response({"ok": True})
        finally:
            self.in_flight -= 1

    def by_delivery(self) -> dict[str, int]:
        """How many answered requests each X-Sami-Delivery got."""
        counts: dict[str, int] = {}
        for r in self.requests[self.fail_first :]:
            key = r.headers.get("X-Sami-Delivery", "")
            counts[key] = counts.get(key, 0) + 1
        return counts


class ThreadedReceiver:
    """A Receiver on an event loop of its own thread, for tests that are not async."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self, port: int = 0) -> Receiver:
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(self.receiver.start(port), self.loop)
        return fut.result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    """Poll until predicate() is true (a coroutine function or a plain one)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)
