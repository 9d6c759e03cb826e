"""Notifications: who is told of which outcome (targets, `sami notify`), the outbox their
deliveries wait in, and the sender that delivers them (docs/notifications.md).

The outbox is transactional: `Outbox.enqueue()` runs inside the transaction that stores a
deployment's state change and writes one delivery per matching target there, so a crash
never loses a notification of a change that committed, nor sends one of a change that did
not. The `Sender` claims due deliveries (a claim is a row update: two replicas never hold
one row), waits until what it read is durable, sends outside any transaction through a
`Transport` (sami_control/notify_http.py: HTTP with a timeout), and stores the outcome:
delivered, retried later (exponential backoff with jitter) or, after `max_attempts`,
dead-lettered (`sami notify log` shows it). Sending never holds up a deployment.

Secrets of targets (signing secret, chat or GitHub token, a token inside a URL) never leave
this module's callers: answers carry `public()` views, the audit log names the target only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlsplit

import structlog

from sami_control.core import authz, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.errors import AlreadyExists, InvalidArgument, NotFound
from sami_control.core.ids import new_id
from sami_control.core.model import (
    Artifact,
    Delivery,
    Deployment,
    DeploymentAction,
    Event,
    EventType,
    NotifyTarget,
    Principal,
    State,
)
from sami_control.core.store import Tx

log = structlog.get_logger("sami.notify")

SCHEMA = "sami.notification/v1"
KINDS = ("generic", "slack", "discord", "telegram", "github")
# The event each state change is (a delivery's `event`, the payload's "event").
EVENT_OF_STATE = {
    State.AWAITING_APPROVAL: "awaiting_approval",
    State.QUEUED: "queued",
    State.ASSIGNED: "assigned",
    State.IN_PROGRESS: "in_progress",
    State.SUCCEEDED: "succeeded",
    State.FAILED: "failed",
    State.ROLLED_BACK: "rolled_back",
    State.CANCELLED: "cancelled",
    State.SUPERSEDED: "superseded",
}
EVENTS = frozenset(EVENT_OF_STATE.values()) | {"torn_down"}
# What a target with no --events is told. Chats get the outcomes someone must look at,
# and a success only in production (CHAT_SUCCESS_ENVIRONMENTS); GitHub follows the whole
# life of a deployment (its statuses).
DEFAULT_EVENTS: dict[str, frozenset[str]] = {
    # A deployment awaiting approval waits for someone: chats are told too.
    "generic": frozenset(
        {"awaiting_approval", "succeeded", "failed", "rolled_back", "cancelled", "torn_down"}
    ),
    "slack": frozenset({"awaiting_approval", "succeeded", "failed", "rolled_back"}),
    "discord": frozenset({"awaiting_approval", "succeeded", "failed", "rolled_back"}),
    "telegram": frozenset({"awaiting_approval", "succeeded", "failed", "rolled_back"}),
    "github": frozenset(
        {
            "awaiting_approval",
            "queued",
            "in_progress",
            "succeeded",
            "failed",
            "rolled_back",
            "cancelled",
            "torn_down",
        }
    ),
}
CHAT_KINDS = frozenset({"slack", "discord", "telegram"})
CHAT_SUCCESS_ENVIRONMENTS = frozenset({"production"})
MAX_SECRET = 4096
MAX_ERROR = 500
MAX_LOG = 200
# Finished deliveries older than the retention are deleted this often, so many at a time.
PRUNE_INTERVAL = 600.0
PRUNE_BATCH = 1000


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (from 1) that failed is tried again after base·2^(n-1) seconds (at most
    `cap`), times a random factor in [0.5, 1] so receivers that came back are not hit by
    every sender at once; after `max_attempts` the delivery is dead-lettered."""

    max_attempts: int = 10
    base: float = 2.0
    cap: float = 600.0

    def delay(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        return min(self.cap, self.base * 2 ** (attempts - 1)) * (0.5 + 0.5 * rng())


@dataclass(frozen=True)
class Attempt:
    """What one try at a delivery gave: `ok`, the receiver's HTTP status (0: no answer),
    an error to show (never a secret), whether trying again can help, and what the
    receiver called the deployment (GitHub's deployment id), to keep."""

    ok: bool
    status_code: int = 0
    error: str = ""
    retry: bool = True
    ref: str = ""


class Transport(Protocol):
    async def send(self, target: NotifyTarget, delivery: Delivery, ref: str) -> Attempt: ...


def redact_url(url: str) -> str:
    """What may be shown of a target's URL: scheme and host (a path may hold a token:
    Telegram's bot URL, Slack's and Discord's webhook URLs are secrets themselves)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def public(t: NotifyTarget) -> NotifyTarget:
    """The target as answers show it: no secret, the URL redacted."""
    return replace(t, url=redact_url(t.url), secret="")


def wants(t: NotifyTarget, d: Deployment, event: str) -> bool:
    """Whether target `t` is told of `event` about deployment `d`."""
    if t.service and t.service != d.service:
        return False
    if t.environment and t.environment != d.environment:
        return False
    if t.kind == "github" and d.action is DeploymentAction.TEARDOWN:
        # A torn-down preview is one status on GitHub (inactive), not a deployment's life.
        return event == "torn_down"
    if t.events:
        return event in t.events
    if event == "succeeded" and t.kind in CHAT_KINDS:
        return d.environment in CHAT_SUCCESS_ENVIRONMENTS
    return event in DEFAULT_EVENTS[t.kind]


def event_of(d: Deployment, ev: Event) -> str:
    if d.action is DeploymentAction.TEARDOWN and ev.state is State.SUCCEEDED:
        return "torn_down"
    return EVENT_OF_STATE[ev.state]


def payload(
    d: Deployment, ev: Event, event: str, artifact: Artifact | None, dashboard_url: str
) -> dict[str, object]:
    """The document every delivery carries (the generic webhook's body; chats and GitHub
    are rendered from it). Its schema is documented in docs/notifications.md: add fields,
    never change or remove one."""
    link = f"{dashboard_url.rstrip('/')}/deployments/{d.id}" if dashboard_url else None
    return {
        "schema": SCHEMA,
        "event": event,
        "sequence": ev.sequence,
        "time": ev.time,
        "deployment": {
            "id": d.id,
            "service": d.service,
            "environment": d.environment,
            "pull_request": d.pull_request or None,
            "cluster": d.cluster,
            "action": d.action.name.lower(),
            "state": ev.state.name.lower(),
            "reason": ev.message,
            "requested_by": d.created_by,
            "request_reason": d.reason,
            "attempt": d.attempt,
            "created_at": d.created_at,
            "finished_at": d.finished_at or None,
            "environment_url": environment_url(d),
        },
        "artifact": {
            "id": d.artifact_id,
            "name": artifact.artifact_name if artifact else "",
            "ref": artifact.ref if artifact else "",
            "digest": artifact.digest if artifact else "",
            "git_repo": (artifact.git_repo or None) if artifact else None,
            "git_commit": (artifact.git_commit or None) if artifact else None,
            "ci_run_url": (artifact.ci_run_url or None) if artifact else None,
        },
        "links": {"dashboard": link},
    }


def environment_url(d: Deployment) -> str | None:
    url = d.manifest_settings.environment_url
    return url.replace("{pr}", str(d.pull_request)) if url else None


class Outbox:
    """Writes deliveries in the transaction of the state change that causes them."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Called after the commit that wrote a delivery (the sender wakes up).
        self.wake: Callable[[], None] = lambda: None

    async def enqueue(self, tx: Tx, d: Deployment, ev: Event) -> int:
        """Inside the transaction storing `ev`: one delivery per target that wants it."""
        if ev.type is not EventType.STATE_CHANGED:
            return 0
        event = event_of(d, ev)
        targets = [t for t in await tx.list_notify_targets() if wants(t, d, event)]
        if not targets:
            return 0
        artifact = await tx.get_artifact(d.artifact_id) if d.artifact_id else None
        if artifact is None or not (artifact.git_repo and artifact.git_commit):
            # GitHub is told about commits: an artifact without provenance has none.
            targets = [t for t in targets if t.kind != "github"]
            if not targets:
                return 0
        body = json.dumps(
            payload(d, ev, event, artifact, self.ctx.settings.dashboard_url),
            sort_keys=True,
            separators=(",", ":"),
        )
        now = self.ctx.clock()
        for t in targets:
            await tx.insert_delivery(
                Delivery(
                    id=new_id("dlv"),
                    target_id=t.id,
                    target_name=t.name,
                    deployment_id=d.id,
                    sequence=ev.sequence,
                    event=event,
                    payload=body,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        self.ctx.store.after_commit(self.wake)
        return len(targets)


def _target_subject(
    self: Notifications, who: Principal, name: str, *rest: object, **kw: object
) -> Subject:
    return Subject(who, f"notify/{name}")


def _check_url(kind: str, url: str) -> str:
    """An http(s) URL with a host. Never echoed: it may hold a token."""
    if len(url) > validation.MAX_REF:
        raise InvalidArgument("url", f"is longer than {validation.MAX_REF} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument("url", "must be an http(s) URL with a host")
    if "@" in parts.netloc:
        raise InvalidArgument("url", "must not hold user:password@ (use --secret-from-file)")
    return url


def check_events(events: Sequence[str]) -> list[str]:
    unknown = sorted(set(events) - EVENTS)
    if unknown:
        raise InvalidArgument(
            "events", f"unknown event(s) {', '.join(unknown)}; known: {', '.join(sorted(EVENTS))}"
        )
    return sorted(set(events))


class Notifications:
    """Targets (admins only), the deliveries' log, and a sample sent on demand."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.outbox = Outbox(ctx)
        self.sender: Sender | None = None

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("notify.create", _target_subject)
    async def create_target(
        self,
        who: Principal,
        name: str,
        kind: str,
        url: str,
        *,
        secret: str = "",
        service: str = "",
        environment: str = "",
        events: Sequence[str] = (),
    ) -> NotifyTarget:
        authz.require(who, Action.MANAGE_NOTIFICATIONS)
        validation.name("name", name, "target name")
        if kind not in KINDS:
            raise InvalidArgument("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        _check_url(kind, url)
        if len(secret) > MAX_SECRET:
            raise InvalidArgument("secret", f"is longer than {MAX_SECRET} characters")
        if kind == "github" and not secret:
            raise InvalidArgument("secret", "a github target needs a token (--secret-from-file)")
        if kind == "telegram" and "chat_id=" not in url:
            raise InvalidArgument(
                "url", "a telegram target's URL ends with ?chat_id=<chat> (docs/notifications.md)"
            )
        if service:
            validation.name("service", service, "service name")
        if environment:
            validation.environment("environment", environment)
        t = NotifyTarget(
            id=new_id("ntf"),
            name=name,
            kind=kind,
            url=url,
            secret=secret,
            service=service,
            environment=environment,
            events=check_events(events),
            created_by=who.name,
            created_at=self.ctx.clock(),
        )
        async with self.ctx.store.tx() as tx:
            if any(o.name == name for o in await tx.list_notify_targets()):
                raise AlreadyExists(f"notification target {name!r} exists (`sami notify rm` it)")
            await tx.insert_notify_target(t)
            # The entry names the target and kind only: never its URL or secret.
            await self.audit.ok(tx, who, "notify.create", f"notify/{name}", detail=kind)
        return public(t)

    async def list_targets(self, who: Principal) -> list[tuple[NotifyTarget, bool]]:
        """Each target's public view, and whether it has a secret."""
        authz.require(who, Action.MANAGE_NOTIFICATIONS)
        async with self.ctx.store.tx() as tx:
            return [(public(t), bool(t.secret)) for t in await tx.list_notify_targets()]

    @audited("notify.delete", _target_subject)
    async def delete_target(self, who: Principal, name: str) -> None:
        authz.require(who, Action.MANAGE_NOTIFICATIONS)
        async with self.ctx.store.tx() as tx:
            if not await tx.delete_notify_target(name):
                raise NotFound(f"no notification target {name!r} (`sami notify list`)")
            await self.audit.ok(tx, who, "notify.delete", f"notify/{name}")

    async def list_deliveries(
        self, who: Principal, target_name: str = "", limit: int = 50
    ) -> list[Delivery]:
        authz.require(who, Action.MANAGE_NOTIFICATIONS)
        limit = max(1, min(limit or 50, MAX_LOG))
        async with self.ctx.store.tx() as tx:
            return await tx.list_deliveries(target_name, limit)

    @audited("notify.test", _target_subject)
    async def test_target(self, who: Principal, name: str) -> Attempt:
        """Send one sample notification to `name` now (not through the outbox) and say
        how it went."""
        authz.require(who, Action.MANAGE_NOTIFICATIONS)
        async with self.ctx.store.tx() as tx:
            found = [t for t in await tx.list_notify_targets() if t.name == name]
            if not found:
                raise NotFound(f"no notification target {name!r} (`sami notify list`)")
            await self.audit.ok(tx, who, "notify.test", f"notify/{name}")
        await self.ctx.store.durable()
        if self.sender is None:
            return Attempt(ok=False, error="this control plane sends no notifications")
        return await self.sender.transport.send(found[0], sample(found[0], who), "")


def sample(t: NotifyTarget, who: Principal) -> Delivery:
    """A made-up success in production, for `sami notify test`."""
    doc = {
        "schema": SCHEMA,
        "event": "succeeded",
        "sequence": 0,
        "time": 0.0,
        "test": True,
        "deployment": {
            "id": "dep_test",
            "service": t.service or "example",
            "environment": t.environment or "production",
            "pull_request": None,
            "cluster": "",
            "action": "deploy",
            "state": "succeeded",
            "reason": "a test notification (sami notify test)",
            "requested_by": who.name,
            "request_reason": "",
            "attempt": 1,
            "created_at": 0.0,
            "finished_at": 0.0,
            "environment_url": None,
        },
        "artifact": {
            "id": "",
            "name": "example",
            "ref": "",
            "digest": "",
            "git_repo": None,
            "git_commit": None,
            "ci_run_url": None,
        },
        "links": {"dashboard": None},
    }
    return Delivery(
        id=new_id("dlv"),
        target_id=t.id,
        target_name=t.name,
        deployment_id="dep_test",
        sequence=0,
        event="succeeded",
        payload=json.dumps(doc, sort_keys=True, separators=(",", ":")),
    )


class Sender:
    """Delivers the outbox: claim, make durable, send (outside any transaction), store
    the outcome. One per control plane; replicas share the outbox through claims."""

    def __init__(
        self,
        ctx: Context,
        outbox: Outbox,
        transport: Transport,
        policy: RetryPolicy | None = None,
        claim_seconds: float = 60.0,
        batch: int = 32,
        retention: float = 14 * 24 * 3600.0,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.policy = policy or RetryPolicy()
        self.claim_seconds = claim_seconds
        self.batch = batch
        self.retention = retention
        self._pruned_at = 0.0
        # Claims name their owner: a replica only finishes what it claimed.
        self.owner = f"snd_{secrets.token_hex(8)}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One task per delivery being sent: a slow receiver holds up only its own.
        self._sending: set[asyncio.Task[None]] = set()
        # Outcomes of sends, stored together by the loop (store_outcomes).
        self._outcomes: list[tuple[Delivery, Attempt, NotifyTarget | None]] = []
        self.coalesce = 0.05
        self._stopping = False
        outbox.wake = self._wake.set

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sami-notify")
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Let what is being sent finish (for up to `grace` seconds), store the outcomes,
        and end the loop. A send cut short keeps its claim until it runs out, and is tried
        again then (the receiver may see it twice: X-Sami-Delivery is for that)."""
        self._stopping = True
        self._wake.set()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=grace)
        for task in list(self._sending):
            task.cancel()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._task is not None:
            # The loop ends by itself once it sees _stopping, storing the outcomes.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, grace)
        with contextlib.suppress(Exception):  # a store already closed: tried again later
            await self.store_outcomes()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # retries fall due without a wake-up
                    await self._wake.wait()
            # Gather what a burst of state changes enqueued (and what finished sending)
            # into one claim and one write of outcomes, not one transaction each.
            await asyncio.sleep(self.coalesce)
            self._wake.clear()
            try:
                await self.store_outcomes()
                while not self._stopping and await self.run_once():
                    pass
                if self.ctx.clock() - self._pruned_at >= PRUNE_INTERVAL:
                    self._pruned_at = self.ctx.clock()
                    await self.prune()
            except Exception:  # a bad row or a busy database must not end the loop
                log.exception("notify_sender_failed")
                await asyncio.sleep(1.0)
        await self.store_outcomes()

    async def run_once(self) -> int:
        """Claim what is due and start sending it (at most `batch` at once); the number
        of deliveries claimed."""
        room = self.batch - len(self._sending)
        if room <= 0:
            return 0
        await self.ctx.store.writable()
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            claimed = await tx.claim_deliveries(now, self.owner, now + self.claim_seconds, room)
            targets = {t.id: t for t in await tx.list_notify_targets()} if claimed else {}
            refs = {c.id: await tx.get_notify_ref(c.target_id, c.deployment_id) for c in claimed}
        if not claimed:
            return 0
        # What was read must be on disk before the world hears of it: a state change whose
        # commit fails must not be announced.
        await self.ctx.store.durable()
        for c in claimed:
            task = asyncio.create_task(self._deliver(c, targets.get(c.target_id), refs[c.id]))
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return len(claimed)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        # The next delivery of the same target and deployment may be due now.
        self._wake.set()

    async def _deliver(self, d: Delivery, target: NotifyTarget | None, ref: str) -> None:
        if target is None:
            attempt = Attempt(ok=False, error="the target was removed", retry=False)
        else:
            try:
                attempt = await self.transport.send(target, d, ref)
            except Exception as exc:  # a transport bug must not leave the row claimed
                log.exception("notify_transport_failed", delivery=d.id)
                attempt = Attempt(ok=False, error=type(exc).__name__)
        self._outcomes.append((self.outcome(d, attempt), attempt, target))

    async def prune(self) -> int:
        """Delete deliveries finished more than `retention` ago, a bounded batch at a
        time (each its own short transaction); how many."""
        total = 0
        while not self._stopping:
            await self.ctx.store.writable()
            async with self.ctx.store.tx() as tx:
                n = await tx.prune_deliveries(self.ctx.clock() - self.retention, PRUNE_BATCH)
            total += n
            if n < PRUNE_BATCH:
                break
        return total

    async def store_outcomes(self) -> None:
        """Store the outcomes of the sends that finished, in one transaction. If that
        fails, their claims run out and they are tried again."""
        done, self._outcomes = self._outcomes, []
        if not done:
            return
        await self.ctx.store.writable()
        async with self.ctx.store.tx() as tx:
            for d, attempt, target in done:
                await tx.finish_attempt(d, self.owner)
                if attempt.ref and target is not None:
                    await tx.put_notify_ref(target.id, d.deployment_id, attempt.ref)
        for d, attempt, _ in done:
            # A delivery that went through is routine (debug: a line each would cost more
            # than the send); a retry is worth a line, a dead letter a warning.
            log_fn = {"dead": log.warning, "pending": log.info}.get(d.status, log.debug)
            log_fn(
                "notify_delivery",
                delivery=d.id,
                target=d.target_name,
                deployment_id=d.deployment_id,
                notify_event=d.event,
                status=d.status,
                attempts=d.attempts,
                status_code=attempt.status_code or None,
                error=attempt.error or None,
            )

    def outcome(self, d: Delivery, attempt: Attempt) -> Delivery:
        now = self.ctx.clock()
        attempts = d.attempts + 1
        if attempt.ok:
            return replace(
                d,
                status="delivered",
                attempts=attempts,
                status_code=attempt.status_code,
                last_error="",
                finished_at=now,
            )
        dead = not attempt.retry or attempts >= self.policy.max_attempts
        return replace(
            d,
            status="dead" if dead else "pending",
            attempts=attempts,
            status_code=attempt.status_code,
            last_error=attempt.error[:MAX_ERROR],
            next_attempt_at=now if dead else now + self.policy.delay(attempts),
            finished_at=now if dead else 0.0,
        )
