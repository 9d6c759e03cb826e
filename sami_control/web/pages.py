"""The pages people read: overview, a deployment, a service's history in an environment,
agents and clusters, the audit log. Each reads through data.py with the signed-in
Principal; what a page may show is what the core lets that Principal read."""

from __future__ import annotations

import datetime
import time
from html import escape as html_escape
from urllib.parse import urlencode

from aiohttp import web

from sami_control.core.errors import DomainError, InvalidArgument
from sami_control.core.store import StorageFailed
from sami_control.web import data, render
from sami_control.web.guard import Visit, signed_in
from sami_control.web.status_rows import status_row
from sami_manifests import ENVIRONMENTS

# Where overview.html's frame ends and the table goes.
STREAM_MARK = "<!--sami:stream-->"
# Events of a deployment one page shows; a longer timeline pages on.
TIMELINE_PAGE = 500
HISTORY_PAGE = 50
AGENTS_PAGE = 100
AUDIT_PAGE = 100
# The audit page shows the last day unless asked for another start.
AUDIT_DEFAULT_SPAN = 86400.0


def _int_param(request: web.Request, name: str, default: int = 0) -> int:
    raw = request.query.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidArgument(name, f"{raw[:40]!r} is not a whole number")
    return int(raw)


def _text_param(request: web.Request, name: str, limit: int = 400) -> str:
    raw = request.query.get(name, "")
    if len(raw) > limit:
        raise InvalidArgument(name, f"longer than {limit} characters")
    return raw


@signed_in
async def overview(request: web.Request, visit: Visit) -> web.StreamResponse:
    """Streamed: the page's frame (header, stylesheet, title) leaves before the overview's
    data is read, so the browser fetches the stylesheet and paints while the server reads
    the deployments; the table follows in the same answer."""
    after = _text_param(request, "after", 100)
    context = {
        "who": visit.who,
        "csrf": visit.session.csrf,
        "columns": data.COLUMNS,
        "may_audit": data.may_read_audit(visit.who),
    }
    shell = render.environment().get_template("overview.html").render(overview=None, **context)
    head, _, tail = shell.partition(STREAM_MARK)
    response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
    await response.prepare(request)
    await response.write(head.encode())
    try:
        ov = await visit.ctx.data.overview(visit.who, after)
        table = render.environment().get_template("_overview_table.html")
        body = table.render(overview=ov, now=time.time(), **context)
    except (DomainError, StorageFailed) as exc:
        # The status line has left: say it in the page.
        message = exc.message if isinstance(exc, DomainError) else "try again"
        body = f'<p class="alert" role="alert">{html_escape(message)}</p>'
    await response.write(body.encode())
    await response.write(tail.encode())
    await response.write_eof()
    return response


@signed_in
async def deployment(request: web.Request, visit: Visit) -> web.StreamResponse:
    ident = request.match_info["id"]
    after = _int_param(request, "after")
    d, events = await visit.ctx.data.events(visit.who, ident, after, TIMELINE_PAGE)
    _, artifact = await visit.ctx.data.deployment(visit.who, d.id)
    last_shown = events[-1].sequence if events else after
    return visit.page(
        "deployment.html",
        d=d,
        artifact=artifact,
        events=events,
        after=after,
        last_shown=last_shown,
        # The page follows live only when it shows the end of the timeline.
        live=not d.state.terminal and last_shown >= d.last_sequence,
        more=last_shown < d.last_sequence,
        may_cancel=not d.state.terminal and data.may_deploy(visit.who, d.service, d.environment),
        may_audit=data.may_read_audit(visit.who),
    )


@signed_in
async def history(request: web.Request, visit: Visit) -> web.StreamResponse:
    service = request.match_info["service"]
    env = request.match_info["environment"]
    page = _text_param(request, "page", 100)
    h = await visit.ctx.data.history(visit.who, service, env, HISTORY_PAGE, page)
    return visit.page(
        "history.html",
        service=service,
        environment=env,
        history=h,
        may_deploy=data.may_deploy(visit.who, service, env),
        may_audit=data.may_read_audit(visit.who),
        now=time.time(),
    )


@signed_in
async def status(request: web.Request, visit: Visit) -> web.StreamResponse:
    """What runs where, as `sami status` shows it; status.js keeps it live."""
    service = _text_param(request, "service", 100)
    env = _text_param(request, "env", 40)
    rows = await visit.ctx.data.status(visit.who, service, env)
    now = time.time()
    query = urlencode({k: v for k, v in (("service", service), ("env", env)) if v})
    return visit.page(
        "status.html",
        rows=[status_row(r, now) for r in rows],
        service=service,
        env=env,
        environments=ENVIRONMENTS,
        events_url="/status/events" + (f"?{query}" if query else ""),
        may_audit=data.may_read_audit(visit.who),
    )


@signed_in
async def agents(request: web.Request, visit: Visit) -> web.StreamResponse:
    page = _text_param(request, "page")
    clusters, records, nxt = await visit.ctx.data.agents(visit.who, AGENTS_PAGE, page)
    return visit.page(
        "agents.html",
        clusters=clusters,
        agents=records,
        next_page=nxt,
        now=time.time(),
        may_audit=data.may_read_audit(visit.who),
    )


def parse_since(raw: str, now: float) -> float:
    """The audit page's start: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]` (what a
    datetime-local field sends), read as UTC; empty: the last day."""
    if not raw:
        return now - AUDIT_DEFAULT_SPAN
    try:
        t = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidArgument(
            "since", f"{raw[:40]!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return t.timestamp()


@signed_in
async def audit(request: web.Request, visit: Visit) -> web.StreamResponse:
    now = time.time()
    since_raw = _text_param(request, "since", 40)
    since = parse_since(since_raw, now)
    service = _text_param(request, "service", 100)
    page = _text_param(request, "page")
    entries, nxt = await visit.ctx.data.audit(visit.who, since, service, AUDIT_PAGE, page)
    since_field = datetime.datetime.fromtimestamp(since, datetime.UTC).strftime("%Y-%m-%dT%H:%M")
    return visit.page(
        "audit.html",
        entries=entries,
        next_page=nxt,
        since=since_field,
        service=service,
        may_audit=True,
    )
