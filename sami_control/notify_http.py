"""Notifications over HTTP: the transport the sender (core/notifications.py) delivers
through, and how each kind of target is spoken to (docs/notifications.md).

- generic: the payload as is, signed: `X-Sami-Signature-256: sha256=<hex>` is
  HMAC-SHA256(secret, `<X-Sami-Timestamp>.<body>`);
- slack, discord, telegram: one short line of text;
- github: a deployment on the artifact's commit, then its statuses.

Every request carries `X-Sami-Delivery` (the delivery's id: the receiver drops duplicates)
and has `timeout` seconds, connect to last byte. An error kept for `sami notify log` never
holds the target's URL or secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp

from sami_control.core.model import Delivery, NotifyTarget
from sami_control.core.notifications import Attempt

USER_AGENT = "sami-notify/1"
# Answers worth trying again: the receiver may be back later.
RETRY_STATUSES = frozenset({408, 425, 429})
GITHUB_STATE = {
    "awaiting_approval": "pending",
    "queued": "queued",
    "assigned": "queued",
    "in_progress": "in_progress",
    "succeeded": "success",
    "failed": "failure",
    "rolled_back": "failure",
    "cancelled": "error",
    "superseded": "inactive",
    "torn_down": "inactive",
}
ICON = {
    "succeeded": "✅",
    "failed": "❌",
    "rolled_back": "↩️",
    "torn_down": "🧹",
    "awaiting_approval": "✋",
}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The value of X-Sami-Signature-256 for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def chat_text(doc: dict[str, Any]) -> str:
    """One short line: what happened to what, where, why, and who asked."""
    d = doc["deployment"]
    a = doc["artifact"]
    where = d["environment"] + (f" (PR #{d['pull_request']})" if d["pull_request"] else "")
    what = a["name"] or d["service"]
    version = f" {a['digest'][7:19]}" if a["digest"].startswith("sha256:") else ""
    verb = {
        "succeeded": "is live",
        "failed": "failed",
        "rolled_back": "was rolled back",
        "cancelled": "was cancelled",
        "torn_down": "was torn down",
        "awaiting_approval": "awaits approval",
    }.get(doc["event"], doc["event"].replace("_", " "))
    text = f"{ICON.get(doc['event'], '•')} {d['service']} ({what}{version}) {verb} in {where}"
    if d["reason"] and doc["event"] != "succeeded":
        text += f": {d['reason']}"
    text += f" — asked by {d['requested_by'] or 'unknown'}"
    link = doc["links"]["dashboard"]
    return text + (f" {link}" if link else "")


def github_repo(git_repo: str) -> str:
    """owner/name of a repository given as a URL (https://host/owner/name(.git)), an
    scp-like address (git@host:owner/name.git) or owner/name; "" if none."""
    path = git_repo.strip()
    if "://" in path:
        path = urlsplit(path).path
    elif ":" in path:
        path = path.split(":", 1)[1]
    path = path.strip("/").removesuffix(".git")
    parts = path.split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 and all(parts[-2:]) else ""


def github_environment(doc: dict[str, Any]) -> str:
    d = doc["deployment"]
    return f"pr-{d['pull_request']}" if d["pull_request"] else str(d["environment"])


class HttpTransport:
    def __init__(self, timeout: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.timeout = timeout
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, target: NotifyTarget, delivery: Delivery, ref: str) -> Attempt:
        try:
            if target.kind == "github":
                return await self._github(target, delivery, ref)
            url, body, headers = self._request(target, delivery)
            status, _ = await self._post(url, body, headers)
            return _attempt(status)
        except TimeoutError:
            return Attempt(ok=False, error=f"no answer within {self.timeout:g} s")
        except aiohttp.ClientConnectorError as exc:
            return Attempt(ok=False, error=f"cannot connect to {exc.host}:{exc.port}")
        except aiohttp.ClientError as exc:
            # Its text may quote the URL (a token in it): the class says enough.
            return Attempt(ok=False, error=type(exc).__name__)

    def _request(
        self, target: NotifyTarget, delivery: Delivery
    ) -> tuple[str, bytes, dict[str, str]]:
        headers = {
            "Content-Type": "application/json",
            "X-Sami-Delivery": delivery.id,
            "X-Sami-Event": delivery.event,
        }
        if target.kind == "generic":
            body = delivery.payload.encode()
            timestamp = str(int(self.clock()))
            headers["X-Sami-Timestamp"] = timestamp
            if target.secret:
                headers["X-Sami-Signature-256"] = sign(target.secret, timestamp, body)
            return target.url, body, headers
        text = chat_text(json.loads(delivery.payload))
        if target.kind == "slack":
            return target.url, json.dumps({"text": text}).encode(), headers
        if target.kind == "discord":
            return target.url, json.dumps({"content": text}).encode(), headers
        # telegram: https://api.telegram.org/bot<token>/sendMessage?chat_id=<chat>
        parts = urlsplit(target.url)
        chat_id = parse_qs(parts.query).get("chat_id", [""])[0]
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return url, json.dumps({"chat_id": chat_id, "text": text}).encode(), headers

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        async with self._client().post(url, data=body, headers=headers) as resp:
            raw = await resp.read()
            try:
                answer = json.loads(raw) if raw else {}
            except ValueError:
                answer = {}
            return resp.status, answer if isinstance(answer, dict) else {}

    async def _github_check(self, target: NotifyTarget) -> Attempt:
        """`sami notify test` of a GitHub target: the API answers the token (GET
        /rate_limit), without creating a deployment anywhere."""
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {target.secret}",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        async with self._client().get(
            f"{target.url.rstrip('/')}/rate_limit", headers=headers
        ) as resp:
            await resp.read()
            return _attempt(resp.status)

    async def _github(self, target: NotifyTarget, delivery: Delivery, ref: str) -> Attempt:
        """A GitHub deployment for the artifact's commit and environment (created by the
        first delivery about it, its id kept as `ref`), and one status per delivery."""
        doc = json.loads(delivery.payload)
        if doc.get("test"):
            return await self._github_check(target)
        repo = github_repo(doc["artifact"]["git_repo"] or "")
        commit = doc["artifact"]["git_commit"] or ""
        if not repo or not commit:
            return Attempt(ok=False, error="the artifact has no repository and commit", retry=False)
        base = f"{target.url.rstrip('/')}/repos/{repo}"
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {target.secret}",
            "X-GitHub-Api-Version": "2022-11-28",
            "Content-Type": "application/json",
            "X-Sami-Delivery": delivery.id,
        }
        environment = github_environment(doc)
        d = doc["deployment"]
        if not ref:
            status, answer = await self._post(
                f"{base}/deployments",
                json.dumps(
                    {
                        "ref": commit,
                        "environment": environment,
                        "auto_merge": False,
                        "required_contexts": [],
                        "production_environment": d["environment"] == "production",
                        "transient_environment": bool(d["pull_request"]),
                        "description": f"sami {d['id']}",
                        "payload": {"sami_deployment_id": d["id"]},
                    }
                ).encode(),
                headers,
            )
            if status != 201 or not answer.get("id"):
                return _attempt(status if status != 201 else 502)
            ref = str(answer["id"])
        status_body: dict[str, Any] = {
            "state": GITHUB_STATE.get(doc["event"], "pending"),
            "description": (d["reason"] or doc["event"])[:140],
            "environment": environment,
            "auto_inactive": True,
        }
        if doc["links"]["dashboard"]:
            status_body["log_url"] = doc["links"]["dashboard"]
        if d.get("environment_url"):
            status_body["environment_url"] = d["environment_url"]
        status, _ = await self._post(
            f"{base}/deployments/{ref}/statuses", json.dumps(status_body).encode(), headers
        )
        attempt = _attempt(status)
        return Attempt(attempt.ok, attempt.status_code, attempt.error, attempt.retry, ref)


def _attempt(status: int) -> Attempt:
    if 200 <= status < 300:
        return Attempt(ok=True, status_code=status)
    retry = status >= 500 or status in RETRY_STATUSES
    return Attempt(ok=False, status_code=status, error=f"HTTP {status}", retry=retry)
