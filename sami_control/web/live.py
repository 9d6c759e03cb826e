"""A deployment's timeline, live: Server-Sent Events fed by the watch `sami watch` follows
(core.deployments.watch through data.py). Each event carries its sequence as the SSE id,
so a browser that lost the connection reconnects with Last-Event-ID and the watch resumes
right after it: no gap, no duplicate. The stream ends after the terminal event (an `end`
event tells the page not to reconnect), when the session ends, or when the token is
revoked (`signed-out`)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from sami_control.core.errors import DomainError, InvalidArgument, Unauthenticated
from sami_control.core.model import Deployment, Event
from sami_control.web import render
from sami_control.web.guard import Visit, signed_in
from sami_control.web.status_rows import status_row

log = structlog.get_logger("sami.control")

# Tells a browser that lost the stream to try again after this long (milliseconds).
RETRY_MS = 2000


def resume_point(request: web.Request) -> int:
    """The sequence the stream starts after: the browser's Last-Event-ID when it
    reconnects, else the `after` the page asked for (the last event it shows)."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidArgument("after", f"{raw[:40]!r} is not an event sequence")
    return int(raw)


def _look(state: Any) -> dict[str, str]:
    return {
        "state": state.name,
        "state_word": render.STATE_LOOK[state][2],
        "state_class": render.STATE_LOOK[state][0],
        "state_icon": render.STATE_LOOK[state][1],
    }


def deployment_data(d: Deployment) -> dict[str, Any]:
    return {
        **_look(d.state),
        "terminal": d.state.terminal,
        "status_message": d.status_message,
        "last_sequence": d.last_sequence,
        "agent_id": d.agent_id,
        "attempt": d.attempt,
    }


def event_data(e: Event) -> dict[str, Any]:
    return {
        **_look(e.state),
        "sequence": e.sequence,
        "type": e.type.name,
        "phase": e.phase,
        "message": e.message,
        "agent_id": e.agent_id,
        "attempt": e.attempt,
        "time": render.when(e.time),
    }


def frame(kind: str, payload: dict[str, Any], ident: int | None = None) -> bytes:
    """One SSE message. JSON has no raw newline, so `data` is always one line."""
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()


async def _open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    return response


@contextlib.asynccontextmanager
async def _stream_ends(
    request: web.Request, visit: Visit, response: web.StreamResponse
) -> AsyncIterator[None]:
    """How a live stream ends once it has started (its status line has left): a revoked
    or expired token ends the session and tells the page; another refusal is told to the
    page; a browser gone is only logged."""
    try:
        yield
    except Unauthenticated:
        visit.ctx.sessions.end(visit.session.id)
        await response.write(frame("signed-out", {}))
    except DomainError as exc:
        await response.write(frame("failed", {"message": exc.message}))
    except ConnectionResetError:
        log.debug("web_stream_gone", peer=request.remote)


@signed_in
async def status_events(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The status page's rows as JSON (status_rows.status_row), now and on each change,
    until the browser leaves or the session ends. A browser that reconnects gets the
    rows of that moment: there is no history to resume."""
    service = request.query.get("service", "")[:100]
    env = request.query.get("env", "")[:40]
    watch = visit.ctx.data.watch_status(visit.who, service, env)
    try:
        # Errors before the first rows (a bad name, too many streams) are pages with a
        # status, through the error middleware.
        rows = await anext(watch)
        response = await _open_stream(request)
        async with _stream_ends(request, visit, response):
            while True:
                now = time.time()
                await response.write(frame("rows", {"rows": [status_row(r, now) for r in rows]}))
                rows = await anext(watch)
                if visit.session.ended:
                    await response.write(frame("signed-out", {}))
                    break
        return response
    finally:
        await watch.aclose()


@signed_in
async def events(request: web.Request, visit: Visit) -> web.StreamResponse:
    after = resume_point(request)
    watch = visit.ctx.data.watch(visit.who, request.match_info["id"], after)
    try:
        # Errors until the first item (no such deployment, too many watches) are pages
        # with a status, through the error middleware.
        first = await anext(watch)
        assert isinstance(first, Deployment)
        response = await _open_stream(request)
        await response.write(frame("deployment", deployment_data(first)))
        async with _stream_ends(request, visit, response):
            async for item in watch:
                if visit.session.ended:
                    await response.write(frame("signed-out", {}))
                    return response
                if isinstance(item, Event):
                    await response.write(frame("progress", event_data(item), item.sequence))
            await response.write(frame("end", {}))
        return response
    finally:
        await watch.aclose()
