"""`POST /deployment_request`: the webhook of Sami's original design, for CI jobs that call
it rather than the sami CLI (docs/webhook.md).

The handler is thin: it reads the caller's fields (JSON or a form), authenticates the bearer
token with the same `ControlPlane.authenticate` as the gRPC API, and asks the same
`ControlPlane.create_deployment`, so validation, authorization, idempotency (request_id) and
the audit log are those of CreateDeployment. With `wait` it follows the deployment with
`ControlPlane.watch` (counted against the token's open streams like any watch) and answers
with the outcome. Everything runs on the control plane's event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import structlog

from sami_common.httpserve import HttpError, HttpServer, Limits, Request, Response
from sami_common.imageref import normalize_artifact_ref
from sami_control.api.auth import REQUEST_ID_HEADER, bearer, log_unauthenticated, request_id
from sami_control.core import errors
from sami_control.core.audit import clean
from sami_control.core.controlplane import ControlPlane
from sami_control.core.model import Deployment, Principal, State
from sami_control.core.requests import DeploymentInput
from sami_control.core.store import StorageFailed
from sami_control.metrics import ControlMetrics
from sami_manifests import canonical_environment

log = structlog.get_logger("sami.webhook")

PATH = "/deployment_request"
# The original webhook's path (behind its `hooks/` prefix): existing CI jobs call it.
ORIGINAL_PATH = "/hooks/deployment_request"
PATHS = (PATH, ORIGINAL_PATH)
# Query parameters that carry a token in the original webhook's calls: refused, with how
# to send it instead, never logged.
TOKEN_PARAMETERS = ("token", "access_token")
DEFAULT_WAIT_TIMEOUT = 600.0
MAX_WAIT_TIMEOUT = 3600.0

# Domain errors → HTTP statuses, in one place (api/errors.py does the same for gRPC).
HTTP_STATUS: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.FailedPrecondition: 412,
    errors.ResourceExhausted: 429,
}

# The outcome of a waited-for deployment → HTTP status.
OUTCOME_STATUS = {
    State.SUCCEEDED: 200,
    State.FAILED: 422,
    State.ROLLED_BACK: 422,
    State.CANCELLED: 409,
    State.SUPERSEDED: 409,
}

# Field names a CI may send → the CreateDeployment field they mean.
ALIASES = {
    "service": "service",
    "service_name": "service",
    "environment": "environment",
    "env": "environment",
    "artifact": "artifact",
    "image": "artifact",
    "ref": "artifact",
    "digest": "digest",
    "pull_request": "pull_request",
    "pr": "pull_request",
    "reason": "reason",
    "request_id": "request_id",
    "deployment_type": "deployment_type",
    "wait": "wait",
    "timeout": "timeout",
}
TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off", ""}


@dataclasses.dataclass
class WebhookRequest:
    deployment: DeploymentInput
    wait: bool
    timeout: float
    # Canonical field → the name the caller used, to name it back in errors.
    names: dict[str, str]


def http_error(exc: errors.DomainError, names: dict[str, str] | None = None) -> Response:
    """The one mapping of domain errors to HTTP answers."""
    status = HTTP_STATUS.get(type(exc), 500)
    body: dict[str, Any] = {"error": exc.code, "message": clean(exc.message, 2000)}
    if isinstance(exc, errors.InvalidArgument):
        body["field_violations"] = [
            {"field": clean((names or {}).get(f, f), 300), "description": clean(d, 2000)}
            for f, d in exc.violations[:100]
        ]
    headers = {"WWW-Authenticate": 'Bearer realm="sami"'} if status == 401 else None
    return Response.json(status, body, headers)


def deployment_json(d: Deployment) -> dict[str, Any]:
    return {
        "deployment_id": d.id,
        "state": d.state.name,
        "service": d.service,
        "environment": d.environment,
        "pull_request": d.pull_request,
        "cluster": d.cluster,
        "artifact_id": d.artifact_id,
        "request_id": d.request_id,
        "status_message": d.status_message,
        "watch": f"sami watch {d.id}",
    }


def parse_fields(req: Request, body: bytes) -> dict[str, tuple[str, object]]:
    """The request's fields (query string and body), as canonical → (name sent, value)."""
    raw: list[tuple[str, object]] = []
    for key, values in req.query().items():
        raw += [(key, v) for v in values]
    ctype = req.content_type
    text = body.decode("utf-8", errors="strict") if body else ""
    # An empty body is no body, whatever its Content-Type says.
    if body.strip():
        raw += _body_fields(ctype, text)
    fields: dict[str, tuple[str, object]] = {}
    for name, value in raw:
        canonical = ALIASES.get(name)
        if canonical is None:
            raise errors.InvalidArgument(
                clean(name, 100), f"unknown field; known: {', '.join(sorted(ALIASES))}"
            )
        if canonical in fields:
            first = fields[canonical][0]
            raise errors.InvalidArgument(
                name, "given twice" if first == name else f"given twice (also as {first})"
            )
        fields[canonical] = (name, value)
    return fields


def _body_fields(ctype: str, text: str) -> list[tuple[str, object]]:
    if ctype == "application/json" or (
        # `curl -d '{…}'` labels JSON as a form; a form never starts with "{".
        ctype in ("", "application/x-www-form-urlencoded") and text.lstrip().startswith("{")
    ):
        try:
            obj = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError) as exc:
            raise errors.InvalidArgument("body", f"is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise errors.InvalidArgument("body", "must be a JSON object of fields")
        return list(obj.items())
    if ctype in ("application/x-www-form-urlencoded", ""):
        try:
            form = parse_qs(text, keep_blank_values=True, strict_parsing=True, max_num_fields=50)
        except ValueError as exc:
            raise errors.InvalidArgument("body", f"is not a valid form: {exc}") from None
        return [(key, v) for key, values in form.items() for v in values]
    raise HttpError(415, "send application/json or application/x-www-form-urlencoded")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose keys are all different. json.loads keeps the last of two equal
    keys; a proxy or WAF in front of Sami may check the first: the two would then disagree
    on what was asked (say, the environment)."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise errors.InvalidArgument(clean(key, 100), "given twice in the JSON body")
        out[key] = value
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def webhook_request(fields: dict[str, tuple[str, object]]) -> WebhookRequest:
    names = {k: name for k, (name, _) in fields.items()}

    def text(key: str) -> str:
        if key not in fields:
            return ""
        name, value = fields[key]
        if not isinstance(value, str):
            raise errors.InvalidArgument(name, "must be a string")
        return value

    service = text("service")
    environment = text("environment")
    # "prod" → "production"; anything else goes to the core as sent, to be refused there.
    environment = canonical_environment(environment) or environment
    artifact = text("artifact")
    digest = text("digest")
    if digest:
        if not artifact:
            # A bare digest names the artifact registered under the service's name.
            artifact = f"{service}@{digest}"
        elif "@" not in artifact:
            artifact = f"{artifact}@{digest}"
        elif artifact.rpartition("@")[2] != digest:
            raise errors.InvalidArgument(names["digest"], f"does not match {names['artifact']}")
    # `repo:tag@sha256:…` as CI prints it finds the artifact however it was registered.
    artifact = normalize_artifact_ref(artifact)
    pull_request = 0
    if "pull_request" in fields:
        name, value = fields["pull_request"]
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise errors.InvalidArgument(name, "must be a pull request number")
        if isinstance(value, str):
            digits = value.strip().removeprefix("-")
            # isascii: isdigit() alone accepts "²", which int() then refuses.
            if not (digits.isascii() and digits.isdigit()) or len(value) > 12:
                raise errors.InvalidArgument(name, "must be a pull request number")
            value = int(value)
        pull_request = value
    wait = False
    if "wait" in fields:
        name, value = fields["wait"]
        if isinstance(value, bool):
            wait = value
        elif isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
            wait = value.strip().lower() in TRUE
        elif isinstance(value, int) and value in (0, 1):
            wait = bool(value)
        else:
            raise errors.InvalidArgument(name, "must be true or false")
    timeout = DEFAULT_WAIT_TIMEOUT
    if "timeout" in fields:
        name, value = fields["timeout"]
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError
            timeout = float(value)
        except ValueError:
            raise errors.InvalidArgument(name, "must be a number of seconds") from None
        if not 0 < timeout <= MAX_WAIT_TIMEOUT:
            raise errors.InvalidArgument(
                name, f"must be more than 0 and at most {MAX_WAIT_TIMEOUT:.0f} seconds"
            )
        if not wait:
            raise errors.InvalidArgument(name, "limits the wait: add wait=true, or drop it")
    return WebhookRequest(
        DeploymentInput(
            service=service,
            environment=environment,
            artifact=artifact,
            pull_request=pull_request,
            reason=text("reason"),
            request_id=text("request_id"),
            deployment_type=text("deployment_type"),
        ),
        wait,
        timeout,
        names,
    )


class Webhook:
    def __init__(self, core: ControlPlane, metrics: ControlMetrics) -> None:
        self.core = core
        self.metrics = metrics

    async def handle(self, req: Request) -> Response:
        try:
            # Answered only once what the request wrote is on disk (group commits).
            async with self.core.durable_call():
                response = await self._handle(req)
        except HttpError as exc:
            response = Response.error(exc.status, exc.message, exc.headers)
        except StorageFailed as exc:
            response = Response.error(503, str(exc))
        self.metrics.webhook_requests.labels(str(response.status)).inc()
        return response

    async def _authenticate(self, req: Request) -> Principal:
        header = req.headers.get("authorization")
        try:
            who = await self.core.tokens.authenticate(
                bearer([("authorization", header)] if header else [])
            )
        except errors.DomainError as exc:
            # Logged, not audited (as in gRPC); the reason names a token id, never a secret.
            log_unauthenticated(endpoint=PATH, peer=req.peer, reason=exc.message)
            raise
        rid = request_id([(REQUEST_ID_HEADER, req.headers.get(REQUEST_ID_HEADER, ""))])
        return dataclasses.replace(who, peer=f"webhook:{req.peer}", request_id=rid)

    async def _handle(self, req: Request) -> Response:
        if req.path not in PATHS:
            raise HttpError(404, f"not found: the webhook is POST {PATH}")
        if req.method != "POST":
            # A GET must not deploy: a link, a prefetch or a crawler could trigger it, and a
            # token in a URL ends up in proxy logs.
            raise HttpError(405, f"use POST {req.path}", {"Allow": "POST"})
        _refuse_token_in_url(req)
        names: dict[str, str] = {}
        try:
            # The token is checked from the headers before the body is read, as in gRPC.
            who = await self._authenticate(req)
            body = await req.body()
            try:
                fields = parse_fields(req, body)
            except UnicodeDecodeError:
                raise errors.InvalidArgument("body", "is not UTF-8") from None
            wr = webhook_request(fields)
            names = wr.names
            d = await self.core.deployments.create(who, wr.deployment)
        except errors.DomainError as exc:
            return http_error(exc, names)
        log.info(
            "webhook_deployment",
            deployment_id=d.id,
            service=d.service,
            environment=d.environment,
            cluster=d.cluster,
            token_id=who.token_id,
            peer=req.peer,
            wait=wr.wait,
        )
        if not wr.wait:
            return Response.json(202, deployment_json(d))
        return await self._wait(who, d, wr.timeout)

    async def _wait(self, who: Principal, d: Deployment, timeout: float) -> Response:
        try:
            try:
                async with asyncio.timeout(timeout):
                    # Ends after the terminal event; a cancellation (timeout, stop) runs
                    # the watch's own clean-up, inside it.
                    async for _ in self.core.deployments.watch(who, d.id, 0):
                        pass
            except TimeoutError:
                now = await self.core.deployments.get(who, d.id)
                body = deployment_json(now)
                body["timed_out"] = True
                body["message"] = (
                    f"still {now.state.name} after {timeout:g} s; it goes on: "
                    f"follow it with `sami watch {d.id}`"
                )
                return Response.json(504, body)
            final = await self.core.deployments.get(who, d.id)
        except errors.DomainError as exc:
            response = http_error(exc)
            body = json.loads(response.body)
            body["deployment_id"] = d.id
            return Response.json(response.status, body, response.headers)
        return Response.json(OUTCOME_STATUS.get(final.state, 500), deployment_json(final))


def _refuse_token_in_url(req: Request) -> None:
    """The original webhook took `?token=`; a URL ends up in proxy and access logs, so the
    token goes in a header: say how, before anything else is read."""
    try:
        sent = [name for name in TOKEN_PARAMETERS if name in req.query()]
    except HttpError:
        return  # a malformed query string is refused with the fields
    if sent:
        raise HttpError(
            400,
            f"a token in the URL (?{sent[0]}=) is refused: URLs end up in proxy and server "
            "logs. Send it as a header, `Authorization: Bearer <token>` (curl -H "
            '"Authorization: Bearer $SAMI_TOKEN"), and revoke this one if the URL was logged '
            "(`sami token revoke ID`)",
        )


def ssl_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """The webhook's TLS: the same certificate (and client CA) as the gRPC port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def webhook_server(
    listen: str,
    core: ControlPlane,
    metrics: ControlMetrics,
    tls: ssl.SSLContext | None,
) -> HttpServer:
    return HttpServer(
        listen,
        Webhook(core, metrics).handle,
        name="webhook",
        # The default limits (a 64 KiB body, 16 KiB of headers), but more connections: a
        # caller that waits for the outcome holds one until then.
        limits=Limits(connections=128),
        ssl_context=tls,
    )
