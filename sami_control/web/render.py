"""Pages from Jinja2 templates with autoescape on for every template: whatever a user wrote
(a deployment's reason, an artifact's labels, an agent's progress message, an audit
detail) reaches the page escaped, with no `|safe` anywhere. Plus the small formatting
filters the templates share: times, digests and the states (colour, icon and word)."""

from __future__ import annotations

import datetime
import time
from typing import Any

import jinja2
from aiohttp import web

from sami_control.core.model import DeploymentAction, State

# What a state looks like: a CSS class (its colour), an icon and a word; never the colour
# alone, so that the state reads the same without colour and to a screen reader.
STATE_LOOK: dict[State, tuple[str, str, str]] = {
    State.AWAITING_APPROVAL: ("approval", "✋", "awaiting approval"),
    State.QUEUED: ("waiting", "◷", "queued"),
    State.ASSIGNED: ("running", "▸", "assigned"),
    State.IN_PROGRESS: ("running", "▸", "in progress"),
    State.SUCCEEDED: ("ok", "✓", "succeeded"),
    State.FAILED: ("bad", "✗", "failed"),
    State.ROLLED_BACK: ("bad", "↶", "rolled back"),
    State.CANCELLED: ("muted", "⊘", "cancelled"),
    State.SUPERSEDED: ("muted", "⤳", "superseded"),
}


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sami_control.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when,
        iso=iso,
        ago=ago,
        short_digest=short_digest,
        state_class=lambda s: STATE_LOOK[State(s)][0],
        state_icon=lambda s: STATE_LOOK[State(s)][1],
        state_word=lambda s: STATE_LOOK[State(s)][2],
        http_url=http_url,
    )
    env.globals.update(State=State, TEARDOWN=DeploymentAction.TEARDOWN)
    return env


_ENV: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = _env()
    return _ENV


def html(template: str, status: int = 200, **context: Any) -> web.Response:
    body = environment().get_template(template).render(**context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def when(ts: float) -> str:
    """An absolute time, UTC, to the second."""
    if not ts:
        return "—"
    t = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float) -> str:
    """For a <time datetime=…> attribute."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat() if ts else ""


def ago(ts: float, now: float | None = None) -> str:
    """How long ago, in the largest unit that fits: `42 s`, `5 min`, `3 h`, `2 d`."""
    if not ts:
        return "—"
    s = max(0.0, (now if now is not None else time.time()) - ts)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s // 60:.0f} min ago"
    if s < 86400:
        return f"{s // 3600:.0f} h ago"
    return f"{s // 86400:.0f} d ago"


def short_digest(digest: str) -> str:
    """`sha256:0123456789ab` — enough to tell artifacts apart at a glance."""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def http_url(value: str) -> str:
    """`value` when it is an http(s) URL (the only links a user-given URL may become),
    else "" (a `javascript:` URL must never reach an href)."""
    return value if value.startswith(("https://", "http://")) else ""
