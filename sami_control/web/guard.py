"""What stands between a request and a page: the security headers of every answer, the
session cookie, the token checked again through the core on each request, the CSRF token
and Origin check of every POST, and domain errors turned into pages."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import structlog
from aiohttp import web

from sami_control.core.errors import DomainError, Unauthenticated
from sami_control.core.model import Principal
from sami_control.core.store import StorageFailed
from sami_control.web import render
from sami_control.web.data import Data
from sami_control.web.sessions import LoginLimiter, Session, Sessions, same_secret

log = structlog.get_logger("sami.control")

# No inline script or style, nothing from another origin, no framing, forms post only here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Status of each domain error's page.
STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
}


@dataclass
class Web:
    """What every handler reaches through the app: the core calls, sessions, the limiter."""

    data: Data
    sessions: Sessions
    limiter: LoginLimiter
    tls: bool

    @property
    def cookie(self) -> str:
        # Under TLS the __Host- prefix makes the browser insist on Secure, Path=/ and no
        # Domain: no other host of the domain can plant or read it.
        return "__Host-sami_session" if self.tls else "sami_session"


WEB = web.AppKey("sami_web", Web)


@dataclass(frozen=True)
class Visit:
    """A signed-in request: who (as the core authenticated the session's token just now)
    and the session (for its CSRF token)."""

    who: Principal
    session: Session
    ctx: Web

    def page(self, template: str, status: int = 200, **context: object) -> web.Response:
        return render.html(template, status, who=self.who, csrf=self.session.csrf, **context)


Handler = Callable[[web.Request, Visit], Awaitable[web.StreamResponse]]


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, pages, errors, the live stream and files alike."""
    response.headers.update(HEADERS)
    if request.app[WEB].tls:
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        return render.html(
            "error.html", STATUS.get(exc.code, 500), who=None, csrf="", message=exc.message
        )
    except StorageFailed:
        return render.html(
            "error.html",
            503,
            who=None,
            csrf="",
            message="the control plane could not store a change; try again",
        )


def refused(message: str, status: int = 403) -> web.Response:
    return render.html("error.html", status, who=None, csrf="", message=message)


def same_origin(request: web.Request) -> bool:
    """The POST comes from a page of this dashboard: its Origin (or, where a browser sends
    none, its Referer) names this host. Another site's form fails here even before the
    CSRF token is looked at; the scheme is not compared, so a TLS-terminating proxy in
    front (--insecure) does not break it."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc == request.host


def safe_next(target: str) -> str:
    """Where to go after sign-in: a path of this dashboard only (no open redirect)."""
    if (
        target.startswith("/")
        and not target.startswith(("//", "/\\"))
        and target.isprintable()
        and len(target) <= 2000
    ):
        return target
    return "/"


def to_login(request: web.Request) -> web.Response:
    here = request.path_qs if request.method == "GET" else "/"
    return redirect(f"/login?next={quote(safe_next(here), safe='')}")


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST, the browser GETs `location`."""
    return web.Response(status=303, headers={"Location": location})


def set_cookie(response: web.StreamResponse, w: Web, session: Session) -> None:
    response.set_cookie(
        w.cookie,
        session.id,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=w.tls,
    )


def clear_cookie(response: web.StreamResponse, w: Web) -> None:
    response.del_cookie(w.cookie, path="/", secure=w.tls, httponly=True, samesite="Strict")


async def visit_of(request: web.Request) -> Visit | None:
    """The signed-in visit of this request, or None. A session whose token no longer
    authenticates (revoked, expired) ends here."""
    w = request.app[WEB]
    sid = request.cookies.get(w.cookie, "")
    session = w.sessions.get(sid) if sid else None
    if session is None:
        return None
    try:
        who = await w.data.authenticate(session.token)
    except Unauthenticated:
        w.sessions.end(session.id)
        return None
    return Visit(dataclasses.replace(who, peer=f"web:{request.remote}"), session, w)


def signed_in(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Run `handler` for a signed-in visitor; send anyone else to the sign-in page. A POST
    must come from this dashboard (Origin) and carry the session's CSRF token."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        visit = await visit_of(request)
        if visit is None:
            if request.headers.get("Accept") == "text/event-stream":
                return web.Response(status=401, text="signed out")
            response = to_login(request)
            clear_cookie(response, request.app[WEB])
            return response
        if request.method == "POST":
            if not same_origin(request):
                log.warning("web_post_refused", reason="origin", peer=request.remote)
                return refused("refused: this request did not come from a Sami page")
            form = await request.post()
            given = form.get("csrf")
            if not isinstance(given, str) or not same_secret(given, visit.session.csrf):
                log.warning("web_post_refused", reason="csrf", peer=request.remote)
                return refused("refused: the form's security token is missing or stale")
        return await handler(request, visit)

    return wrapper
