"""What changes state: signing in and out, cancelling a deployment, rolling back to an
earlier one. Cancel and rollback go through a confirmation page whose form carries the
session's CSRF token (checked by guard.signed_in); the core decides whether the signed-in
Principal may do it, exactly as for the API."""

from __future__ import annotations

import math
import secrets
from typing import Any

import structlog
from aiohttp import web

from sami_control.core.errors import InvalidArgument, Unauthenticated
from sami_control.web import data, render
from sami_control.web.guard import (
    WEB,
    Visit,
    clear_cookie,
    redirect,
    refused,
    safe_next,
    same_origin,
    set_cookie,
    signed_in,
    visit_of,
)
from sami_control.web.sessions import token_id_of

log = structlog.get_logger("sami.control")

# A Sami token is 62 characters; anything much longer is not one.
MAX_TOKEN_FIELD = 300


def _login_page(status: int = 200, message: str = "", next_path: str = "/") -> web.Response:
    return render.html(
        "login.html", status, who=None, csrf="", message=message, next_path=next_path
    )


async def login_form(request: web.Request) -> web.StreamResponse:
    next_path = safe_next(request.query.get("next", "/"))
    if await visit_of(request) is not None:
        return redirect(next_path)
    return _login_page(next_path=next_path)


async def login(request: web.Request) -> web.StreamResponse:
    w = request.app[WEB]
    # Login CSRF (signing a victim in as someone else) is refused by the Origin check:
    # there is no session yet whose token a form could carry.
    if not same_origin(request):
        return refused("refused: this request did not come from a Sami page")
    form = await request.post()
    token = form.get("token", "")
    next_path = safe_next(str(form.get("next", "/")))
    if not isinstance(token, str) or len(token) > MAX_TOKEN_FIELD:
        return _login_page(400, "that is not a Sami token", next_path)
    token = token.strip()
    address = request.remote or ""
    wait = w.limiter.retry_after(address, token)
    if wait:
        response = _login_page(
            429,
            f"too many failed sign-ins; try again in {math.ceil(wait)} s",
            next_path,
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    try:
        who = await w.data.authenticate(token)
    except Unauthenticated:
        w.limiter.failed(address, token)
        # The token's id when it has one (ids are not secret); never what was typed.
        log.warning("web_sign_in_refused", peer=address, token_id=token_id_of(token))
        return _login_page(
            401, "that token is not valid: it may be mistyped, revoked or expired", next_path
        )
    if not data.may_read(who):
        return _login_page(
            403,
            f"token {who.name!r} has role {who.role.value}, which cannot read deployments: "
            "sign in with a reader, deployer or admin token",
            next_path,
        )
    # Always a new session id: one the browser had before sign-in (planted or not) ends.
    old = request.cookies.get(w.cookie, "")
    if old:
        w.sessions.end(old)
    session = w.sessions.start(token)
    log.info("web_signed_in", peer=address, token_id=who.token_id, token_name=who.name)
    response = redirect(next_path)
    set_cookie(response, w, session)
    return response


@signed_in
async def logout(request: web.Request, visit: Visit) -> web.StreamResponse:
    visit.ctx.sessions.end(visit.session.id)
    response = redirect("/login")
    clear_cookie(response, visit.ctx)
    return response


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise InvalidArgument(name, "must be text")
    return value.strip()


@signed_in
async def confirm_cancel(request: web.Request, visit: Visit) -> web.StreamResponse:
    d, artifact = await visit.ctx.data.deployment(visit.who, request.match_info["id"])
    return visit.page(
        "confirm.html",
        d=d,
        artifact=artifact,
        action="cancel",
        request_id="",
        may_audit=data.may_read_audit(visit.who),
    )


@signed_in
async def cancel(request: web.Request, visit: Visit) -> web.StreamResponse:
    form = await request.post()
    d = await visit.ctx.data.cancel(visit.who, request.match_info["id"], _field(form, "reason"))
    return redirect(f"/deployments/{d.id}")


@signed_in
async def confirm_rollback(request: web.Request, visit: Visit) -> web.StreamResponse:
    d, artifact = await visit.ctx.data.deployment(visit.who, request.match_info["id"])
    return visit.page(
        "confirm.html",
        d=d,
        artifact=artifact,
        action="rollback",
        # One key per confirmation page: pressing the button twice makes one deployment.
        request_id=f"web-{secrets.token_hex(12)}",
        may_audit=data.may_read_audit(visit.who),
    )


@signed_in
async def rollback(request: web.Request, visit: Visit) -> web.StreamResponse:
    form = await request.post()
    request_id = _field(form, "request_id")
    d = await visit.ctx.data.rollback(
        visit.who, request.match_info["id"], _field(form, "reason"), request_id
    )
    return redirect(f"/deployments/{d.id}")
