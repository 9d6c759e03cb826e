"""Deployments: requests to put an artifact on a service in an environment (or to tear a
preview down), resolved against the current manifest revision when they are made, queued,
superseded, cancelled, listed and watched. Leases and dispatch are core/dispatch.py's."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from sami_control.core import (
    approval_rules,
    authz,
    paging,
    quarantine,
    secrets,
    target_locks,
    validation,
)
from sami_control.core.artifacts import Artifacts
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.commands import CancelCommand
from sami_control.core.context import Context
from sami_control.core.effects import Effects
from sami_control.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from sami_control.core.hub import Hub
from sami_control.core.ids import new_id
from sami_control.core.locks import hold, key_lock
from sami_control.core.manifest_catalog import ManifestCatalog
from sami_control.core.model import (
    Deployment,
    DeploymentAction,
    Event,
    EventType,
    ManifestSettings,
    Principal,
    State,
)
from sami_control.core.requests import DeploymentInput
from sami_control.core.sessions import Sessions
from sami_control.core.store import Tx
from sami_control.core.streams import Streams
from sami_control.core.transitions import move, record
from sami_manifests import QUEUE_FIFO


def _create_subject(self: Deployments, who: Principal, req: DeploymentInput) -> Subject:
    target = f"{req.service}/{req.environment}" + (
        f"#{req.pull_request}" if req.pull_request else ""
    )
    return Subject(who, target, req.service, req.request_id)


def _teardown_subject(
    self: Deployments, who: Principal, service: str, pull_request: int, reason: str, rid: str
) -> Subject:
    return Subject(who, f"{service}/pull_request#{pull_request}", service, rid)


class Deployments:
    def __init__(
        self,
        ctx: Context,
        artifacts: Artifacts,
        manifests: ManifestCatalog,
        sessions: Sessions,
        hub: Hub,
        streams: Streams,
    ) -> None:
        self.ctx = ctx
        self.artifacts = artifacts
        self.manifests = manifests
        self.sessions = sessions
        self.hub = hub
        self.streams = streams

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("deployment.create", _create_subject)
    async def create(self, who: Principal, req: DeploymentInput) -> Deployment:
        service = validation.name("service", req.service, "service name")
        env = validation.environment("environment", req.environment)
        pr = validation.pull_request("pull_request", env, req.pull_request)
        validation.text("reason", req.reason)
        validation.text("deployment_type", req.deployment_type, limit=32)
        request_id = validation.request_id("request_id", req.request_id)
        authz.require_deploy_scope(who, service, env)
        fingerprint = req.fingerprint()
        now = self.ctx.clock()
        fx = Effects(wake=True)
        async with self.ctx.store.tx() as tx:
            # Replicas creating on one key (or retrying one request id) take turns.
            await tx.lock(key_lock(service, env, pr))
            prior = await self._prior_request(tx, who, request_id, fingerprint)
            if prior is not None:
                return prior
            # Read after the key's lock: a lock taken on another replica before it is seen.
            lock = await target_locks.covering(tx, service, env, now)
            if lock is not None:
                raise target_locks.refusal(lock)
            art = await self.artifacts.resolve(tx, req.artifact, "artifact")
            cluster = await tx.cluster_for_environment(env)
            if cluster is None:
                raise FailedPrecondition(
                    f"no cluster serves environment {env!r}: create one with "
                    f"`sami cluster create NAME --env {env}` (or, offline, "
                    f"`sami-control cluster create NAME --env {env} --data DIR`)"
                )
            resolved = await self.manifests.resolve(tx, service, req.deployment_type, env)
            m = resolved.manifest
            self.artifacts.check_fits(art, m.deployment_type, f"{service} in {env}")
            if pr and not m.pr_deploy:
                raise FailedPrecondition(
                    f"service {service} does not deploy previews: set `pr_deploy: true` in "
                    f"{m.manifest_path} and sync the manifests"
                )
            if m.cluster and m.cluster != cluster:
                raise FailedPrecondition(
                    f"{m.manifest_path} pins cluster {m.cluster!r}, but environment {env!r} "
                    f"is served by cluster {cluster!r}"
                )
            if pr:
                await self._check_preview_room(tx, service, pr, now)
            if req.rollback_of:
                await self._check_rollback(tx, req.rollback_of, service, env, pr, art.id)
            bad = await quarantine.quarantine_of(tx, self.artifacts, service, env, pr, art)
            if bad is not None and not req.force:
                raise quarantine.refusal(bad, art, service, env)
            forced = f" (forced past quarantine: {bad.why})" if bad is not None else ""
            d = Deployment(
                id=new_id("dep"),
                service=service,
                environment=env,
                pull_request=pr,
                artifact_id=art.id,
                cluster=cluster,
                deployment_type=m.deployment_type,
                stack_name=m.stack_name_for(pr),
                reason=req.reason,
                request_id=request_id,
                request_hash=fingerprint,
                created_by=who.name,
                created_by_token=who.token_id,
                created_at=now,
                converge_timeout=float(m.converge_timeout),
                stack_files=list(m.stack_files),
                image_services=list(m.image_services),
                manifest_revision=resolved.revision.id,
                manifest_folder=m.folder,
                rollback_of=req.rollback_of,
                manifest_settings=ManifestSettings(
                    pr_deploy=m.pr_deploy,
                    static_target_dir=m.static_file.target_dir if m.static_file else "",
                    keep_releases=m.static_file.keep_releases if m.static_file else 0,
                    cron_schedule=m.cron.schedule if m.cron else "",
                    queue=m.queue,
                    approval_required=m.approval_required,
                    approvers=m.approvers,
                    approval_expires=float(m.approval_expires),
                    environment_url=m.environment_url,
                ),
            )
            if m.approval_required:
                # Waits for another identity's approval before it is queued (core/approvals.py).
                d.state = State.AWAITING_APPROVAL
            await self.enqueue(
                tx,
                fx,
                d,
                f"requested by {who.name}",
                req.reason,
                needs=(m.manifest_path, m.variables),
            )
            await self.audit.ok(
                tx,
                who,
                "deployment.create",
                d.id,
                detail=f"{service}/{env}"
                + (f"#{pr}" if pr else "")
                + f" {art.artifact_name}@{art.digest}"
                + forced,
                service=service,
                request_id=request_id,
            )
        self.ctx.publisher.apply(fx)
        return d

    async def _check_preview_room(self, tx: Tx, service: str, pr: int, now: float) -> None:
        """A preview of a new pull request needs room under max_previews_per_service: each
        is a stack on the cluster, and a CI that never tears down would pile them up."""
        limit = self.ctx.settings.max_previews_per_service
        if limit <= 0:
            return
        ttl = self.ctx.settings.preview_ttl
        live = [
            d
            for d in await tx.latest_previews(service)
            if d.action is DeploymentAction.DEPLOY and now - d.created_at < ttl
        ]
        if len(live) < limit or any(d.pull_request == pr for d in live):
            return
        oldest = ", ".join(f"#{d.pull_request}" for d in live[:5])
        raise FailedPrecondition(
            f"service {service} has {len(live)} live previews, the most one service may have "
            f"({limit}): tear down those no longer needed first, e.g. the oldest ({oldest}) "
            f"with `sami teardown {service} --pr N`"
        )

    @staticmethod
    async def _check_rollback(
        tx: Tx, target_id: str, service: str, env: str, pr: int, artifact_id: str
    ) -> None:
        """A rollback goes back to a SUCCEEDED deploy of the same target, with its artifact."""
        validation.text("rollback_of", target_id, limit=100)
        target = await tx.get_deployment(target_id.removeprefix("deployments/"))
        if target is None:
            raise InvalidArgument("rollback_of", f"deployment {target_id!r} does not exist")
        if target.key != (service, env, pr):
            raise InvalidArgument(
                "rollback_of",
                f"deployment {target.id} is of {target.service}/{target.environment}"
                + (f"#{target.pull_request}" if target.pull_request else "")
                + ", not of the service and environment this request deploys",
            )
        if target.state is not State.SUCCEEDED or target.action is not DeploymentAction.DEPLOY:
            raise FailedPrecondition(
                f"deployment {target.id} is not a SUCCEEDED deploy ({target.state.name}): "
                "only a deployment that ran can be rolled back to; `sami history` shows them"
            )
        if target.artifact_id != artifact_id:
            raise InvalidArgument(
                "rollback_of",
                f"deployment {target.id} deployed another artifact ({target.artifact_id}) "
                "than the one requested: a rollback deploys its target's artifact again",
            )

    async def _prior_request(
        self, tx: Tx, who: Principal, request_id: str, fingerprint: str
    ) -> Deployment | None:
        """The deployment an earlier request of the same token with this idempotency key
        created, if any: keys are the caller's own, so one token cannot claim another's."""
        if not request_id:
            return None
        prior = await tx.get_deployment_by_request_id(who.token_id, request_id)
        if prior is not None and prior.request_hash != fingerprint:
            raise AlreadyExists(
                f"request_id {request_id!r} was already used for deployment {prior.id} with "
                "a different request; use a new request_id"
            )
        return prior

    async def enqueue(
        self,
        tx: Tx,
        fx: Effects,
        d: Deployment,
        who: str,
        reason: str,
        needs: tuple[str, Sequence[str]] = ("", ()),
    ) -> None:
        """Store a new deployment (QUEUED, or AWAITING_APPROVAL when its target requires an
        approval) and, once it is queued, apply the supersede rule (`supersede_queued`).
        `needs`: the manifest and the variables its stack files need a value for; a
        deployment whose recorded variables lack one is refused, naming them."""
        await tx.lock(key_lock(d.service, d.environment, d.pull_request))
        now = d.created_at
        message = who + (f": {reason}" if reason else "")
        if d.state is State.AWAITING_APPROVAL:
            d.status_message = approval_rules.awaiting_message(d)
            message += f"; {d.status_message}"
        first = record(d, EventType.STATE_CHANGED, now, message=message)
        # Every path that creates a deployment comes here: each records what it uses.
        await secrets.record(tx, d)
        _check_variables(d, *needs)
        await tx.insert_deployment(d)
        await self.ctx.publisher.store_event(tx, d, first)
        fx.add(d, first)
        if d.state is State.QUEUED:
            await self.supersede_queued(tx, fx, d, now)

    async def supersede_queued(self, tx: Tx, fx: Effects, d: Deployment, now: float) -> None:
        """`d` entered the queue: supersede the older queued deployments of its key, unless
        its manifest says `queue: fifo`: then it waits behind them, and dispatch (oldest of a
        key first, one at a time) runs them in order. The caller holds the key's lock."""
        if d.manifest_settings.queue == QUEUE_FIFO:
            return
        queued = await tx.queued_of_key(d.service, d.environment, d.pull_request)
        for candidate in sorted(queued, key=lambda q: q.id):
            old = await hold(tx, candidate.id) if candidate.id != d.id else None
            if old is not None and old.state is State.QUEUED:
                ev = move(old, State.SUPERSEDED, now, f"superseded by {d.id}")
                await tx.update_deployment(old)
                await self.ctx.publisher.store_event(tx, old, ev)
                fx.add(old, ev)

    @audited("preview.teardown", _teardown_subject)
    async def teardown_preview(
        self, who: Principal, service: str, pull_request: int, reason: str, request_id: str
    ) -> Deployment:
        service = validation.name("service", service, "service name")
        pr = validation.pull_request("pull_request", "pull_request", pull_request)
        validation.text("reason", reason)
        request_id = validation.request_id("request_id", request_id)
        authz.require_deploy_scope(who, service, "pull_request")
        fingerprint = DeploymentInput(
            service, "pull_request", "", pr, reason, deployment_type="teardown"
        ).fingerprint()
        fx = Effects(wake=True)
        async with self.ctx.store.tx() as tx:
            await tx.lock(key_lock(service, "pull_request", pr))
            prior = await self._prior_request(tx, who, request_id, fingerprint)
            if prior is not None:
                return prior
            latest = await tx.latest_for_key(service, "pull_request", pr)
            if latest is None:
                raise NotFound(f"there is no preview of {service} for pull request {pr}")
            if latest.action is DeploymentAction.TEARDOWN and latest.state is not State.FAILED:
                raise FailedPrecondition(
                    f"the preview of {service} for pull request {pr} is already torn down "
                    f"(or being torn down) by {latest.id}"
                )
            d = self.teardown_of(latest, who.name, reason, request_id, fingerprint)
            d.created_by_token = who.token_id
            await self.enqueue(tx, fx, d, f"teardown requested by {who.name}", reason)
            await self.audit.ok(
                tx,
                who,
                "preview.teardown",
                d.id,
                detail=f"{service} PR {pr}",
                service=service,
                request_id=request_id,
            )
        self.ctx.publisher.apply(fx)
        return d

    def teardown_of(
        self, latest: Deployment, who: str, reason: str, request_id: str = "", fingerprint: str = ""
    ) -> Deployment:
        """A teardown of the preview `latest` deployed (not stored yet)."""
        return Deployment(
            id=new_id("dep"),
            service=latest.service,
            environment="pull_request",
            pull_request=latest.pull_request,
            artifact_id=latest.artifact_id,
            cluster=latest.cluster,
            deployment_type=latest.deployment_type,
            stack_name=latest.stack_name,
            action=DeploymentAction.TEARDOWN,
            reason=reason,
            request_id=request_id,
            request_hash=fingerprint,
            created_by=who,
            created_at=self.ctx.clock(),
            converge_timeout=latest.converge_timeout,
            manifest_revision=latest.manifest_revision,
            manifest_folder=latest.manifest_folder,
            stack_files=list(latest.stack_files),
            image_services=list(latest.image_services),
            manifest_settings=latest.manifest_settings,
        )

    async def get(self, who: Principal, name: str) -> Deployment:
        authz.require(who, Action.READ)
        async with self.ctx.store.tx() as tx:
            return await self.must_get(tx, name)

    async def must_get(self, tx: Tx, name: str, lock: bool = False) -> Deployment:
        """The deployment `name` (held under its lock if it is to be changed)."""
        ident = name.removeprefix("deployments/")
        if not ident:
            raise InvalidArgument("name", "deployment id is required")
        validation.text("name", ident, limit=100)
        d = await (hold(tx, ident) if lock else tx.get_deployment(ident))
        if d is None:
            raise NotFound(f"deployment {ident!r} does not exist; `sami list` shows deployments")
        return d

    async def list(
        self,
        who: Principal,
        service: str,
        environment: str,
        state: State | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Deployment], str]:
        authz.require(who, Action.READ)
        if service:
            validation.name("service", service, "service name")
        if environment:
            validation.environment("environment", environment)
        before, limit = paging.parse_page(page_token, page_size)
        async with self.ctx.store.tx() as tx:
            rows = await tx.list_deployments(service, environment, state, before, limit + 1)
        return paging.cut(rows, limit, lambda d: d.seq)

    @audited("deployment.cancel", lambda self, who, name, reason: Subject(who, name))
    async def cancel(self, who: Principal, name: str, reason: str) -> Deployment:
        validation.text("reason", reason)
        now = self.ctx.clock()
        fx = Effects()
        async with self.ctx.store.tx() as tx:
            d = await self.must_get(tx, name, lock=True)
            authz.require_deploy_scope(who, d.service, d.environment)
            if d.state.terminal:
                raise FailedPrecondition(
                    f"deployment {d.id} already ended ({d.state.name}); to undo a deployment, "
                    "deploy the previous artifact"
                )
            msg = f"cancelled by {who.name}" + (f": {reason}" if reason else "")
            if d.state in (State.QUEUED, State.AWAITING_APPROVAL):
                ev = move(d, State.CANCELLED, now, msg)
            elif d.cancel_requested:
                return d
            else:
                # The agent may already be applying: it must roll back, then report.
                d.cancel_requested = True
                ev = record(
                    d, EventType.NOTICE, now, f"cancel requested by {who.name}", phase="cancel"
                )
                cmd = CancelCommand(d.id, d.lease_id, msg)
                session = self.sessions.get(d.cluster, d.agent_id)
                if session is not None:
                    fx.send(session, cmd)
                # Its stream may be on another replica (or move there before this commits).
                fx.tell_agent(d.cluster, d.agent_id, cmd)
            await tx.update_deployment(d)
            await self.ctx.publisher.store_event(tx, d, ev)
            fx.add(d, ev)
            fx.wake = True
            await self.audit.ok(
                tx, who, "deployment.cancel", d.id, detail=reason, service=d.service
            )
        self.ctx.publisher.apply(fx)
        return d

    async def watch(
        self, who: Principal, name: str, after: int
    ) -> AsyncGenerator[Deployment | Event, None]:
        """The deployment now, then every event after `after`, ending after the terminal one."""
        authz.require(who, Action.READ)
        if after < 0:
            raise InvalidArgument("after_sequence", "must not be negative")
        store = self.ctx.store
        async with store.tx() as tx:
            d = await self.must_get(tx, name)
        # Subscribe before reading the log, so nothing published in between is missed;
        # duplicates between the two are dropped by sequence. The stream counts against the
        # token's limit and is ended (UNAUTHENTICATED) when the token is revoked or expires,
        # which also wakes the watcher up.
        with (
            self.hub.subscribe(d.id) as sub,
            self.streams.opened("watch", who, lambda why: sub.wakeup.set()) as stream,
        ):
            # One generator, no inner one: every delivery to every watcher runs this loop,
            # and each generator layer costs a hop per item. `d` was read before subscribing:
            # what changed since is in the log read below. What the store shows may still be
            # in this turn's commit: never show a watcher what a crash could undo (the hub
            # publishes only after commits).
            await store.durable()
            yield d
            last = after
            caught_up = False
            while True:
                if stream.ended:
                    raise Unauthenticated(stream.ended)
                if not caught_up or sub.lagged:
                    # Read from the store, which holds every event ever published: at the
                    # start, and whenever this watcher fell behind its queue.
                    sub.lagged = False
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    # Not while a commit holds the store: reading would block the loop.
                    await store.writable()
                    caught = [e async for e in store.iter_events(d.id, last)]
                    await store.durable()
                    for e in caught:
                        if stream.ended:
                            raise Unauthenticated(stream.ended)
                        yield e
                        last = e.sequence
                        if _ends(e):
                            return
                    if d.state.terminal and last >= d.last_sequence:
                        return
                    caught_up = True
                    continue
                if sub.queue.empty():
                    sub.wakeup.clear()
                    await sub.wakeup.wait()
                    continue
                e = sub.queue.get_nowait()
                if e.sequence <= last:
                    continue
                if e.sequence > last + 1:  # a gap (cannot happen in one process): re-read
                    sub.lagged = True
                    continue
                yield e
                last = e.sequence
                if _ends(e):
                    return


def _ends(e: Event) -> bool:
    return e.type is EventType.STATE_CHANGED and e.state.terminal


def _check_variables(d: Deployment, manifest_path: str, needed: Sequence[str]) -> None:
    """Refuse `d` now if its stack files need a variable it did not record: its agent
    would fail it in its plan (the agent's own environment is never used), after a queue
    and an assignment, where a CI job learns it a minute later."""
    if d.action is not DeploymentAction.DEPLOY:
        return
    missing = [name for name in needed if name not in d.variables]
    if not missing:
        return
    names = ", ".join("${" + name + "}" for name in missing)
    where = f"{d.service} in {d.environment}"
    if d.rollback_of:
        raise FailedPrecondition(
            f"the stack files of {manifest_path} use {names}, which deployment "
            f"{d.rollback_of} (this rollback's target) did not record; set it with "
            f"`sami var set {d.service} {missing[0]}=VALUE --env {d.environment}` and "
            "deploy its artifact again instead of rolling back"
        )
    raise FailedPrecondition(
        f"the stack files of {manifest_path} use {names}, not set for {where}: "
        f"`sami var set {d.service} {missing[0]}=VALUE --env {d.environment}` (or give it a "
        "default in the stack file: ${" + missing[0] + ":-value})"
    )
