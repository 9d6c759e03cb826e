"""The control plane's core: artifacts, deployments, leases and agent sessions.

Everything durable goes through the Store inside one transaction per operation; effects
that other parties see (events for watchers, commands for agents) are applied only after
that transaction committed. Nothing here imports grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

import structlog

from sami_control.core import audit, authz, cron_runs, paging, token_admin, tokens, validation
from sami_control.core.agents import (
    AgentSession,
    AssignCommand,
    CancelCommand,
    CloseCommand,
    Command,
    CronRunAckCommand,
    DoneCommand,
    HeartbeatAckCommand,
    HeldLease,
    RevokeCommand,
)
from sami_control.core.authz import Action
from sami_control.core.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from sami_control.core.hub import Hub
from sami_control.core.ids import new_id
from sami_control.core.manifest_catalog import ManifestCatalog, entry_of
from sami_control.core.model import (
    OUTCOME_STATE,
    AgentRecord,
    Artifact,
    ArtifactKind,
    AuditEntry,
    Cluster,
    CronRun,
    Deployment,
    DeploymentAction,
    Event,
    EventType,
    Outcome,
    PreviewStack,
    Principal,
    Role,
    State,
    TokenRecord,
)
from sami_control.core.requests import ArtifactInput, DeploymentInput
from sami_control.core.streams import Streams
from sami_control.core.transitions import move, record
from sami_control.storage.base import Store, Tx
from sami_manifests import ENVIRONMENTS

log = structlog.get_logger("sami.control")

P = ParamSpec("P")
R = TypeVar("R")


def _agent_report(
    fn: Callable[Concatenate[ControlPlane, AgentSession, P], R],
) -> Callable[Concatenate[ControlPlane, AgentSession, P], R]:
    """An agent's report is acted on only while its token is valid; a refused report
    (another cluster's deployment, bad input, a revoked token) is recorded in the audit log."""

    @functools.wraps(fn)
    def wrapper(self: ControlPlane, session: AgentSession, *args: P.args, **kw: P.kwargs) -> R:
        # Every report of every agent comes through here: no context manager per call.
        try:
            self._check_session(session)
            return fn(self, session, *args, **kw)
        except DomainError as exc:
            target = args[0] if args and isinstance(args[0], str) else ""
            audit.record_refusal(
                self.store,
                self.clock(),
                self._session_principal(session),
                "agent.report",
                target,
                exc,
            )
            raise

    return wrapper


@dataclass
class Settings:
    # An acked lease not renewed (heartbeat or progress) within this is offered again.
    lease_ttl: float = 30.0
    # An assignment not acked within this is offered again.
    ack_timeout: float = 10.0
    heartbeat_interval: float = 10.0
    # Deliveries before a deployment is failed instead of offered again.
    max_attempts: int = 5
    # After a control-plane start, leases get this long for their agents to reconnect.
    restart_grace: float = 30.0
    # A preview not deployed for this long counts as closed: its stack is torn down when
    # an agent reports it (a teardown CI forgot leaves no orphan for long).
    preview_ttl: float = 7 * 24 * 3600.0
    default_converge_timeout: float = 300.0
    # Open streams one token may hold, per kind (watches; agent sessions). 0: no limit.
    max_streams_per_token: int = 32
    # How often the tokens of open streams are re-read, to end the streams of tokens
    # revoked by another process (the offline `sami-control token revoke`).
    token_recheck_interval: float = 2.0


@dataclass
class _Effects:
    events: list[Event] = field(default_factory=list)
    commands: list[tuple[AgentSession, Command]] = field(default_factory=list)
    wake: bool = False
    # The deployments the events are about, by id: their service, environment and cluster
    # go on the log line of each state change and label the metrics.
    deployments: dict[str, Deployment] = field(default_factory=dict)

    def add(self, d: Deployment, *events: Event) -> None:
        self.events.extend(events)
        self.deployments[d.id] = d


# Called with the events of each committed transaction and their deployments (metrics).
Observer = Callable[[list[Event], dict[str, Deployment]], None]

# Artifacts kept in memory by artifact_of (immutable, so never stale).
ARTIFACT_CACHE = 4096
# Token rows kept by authenticate (for token_recheck_interval at most).
TOKEN_CACHE = 4096
# How often the background loop looks for streams whose token expired.
EXPIRY_CHECK_INTERVAL = 0.5


class ControlPlane:
    def __init__(
        self,
        store: Store,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.clock = clock
        self.hub = Hub()
        self.manifests = ManifestCatalog(store, clock)
        # Artifacts never change once registered: kept by id and by each ref resolved to
        # them, instead of a read per response, per assignment and per CreateDeployment.
        self._artifacts: dict[str, Artifact] = {}
        self.sessions: dict[str, AgentSession] = {}
        self.streams = Streams(lambda: self.settings.max_streams_per_token)
        self._last_token_check = 0.0
        self._last_expiry_check = 0.0
        self._tokens: dict[str, tuple[TokenRecord, float]] = {}
        # No live lease runs out before this (the loop skips the lease scan until then).
        self._lease_deadline = 0.0
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.observers: list[Observer] = []
        store.on_failure(self._lost_commit)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        now = self.clock()
        with self.store.tx() as tx:
            # Agents cannot renew while we were down: give each live lease time to come back.
            for d in tx.deployments_in_states([State.ASSIGNED, State.IN_PROGRESS]):
                self._lease_until(d, max(d.lease_expires, now + self.settings.restart_grace))
                tx.update_deployment(d)
        self._loop_task = asyncio.create_task(self._background(), name="sami-dispatch")
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        for s in list(self.sessions.values()):
            s.send(CloseCommand("the control plane is stopping; reconnect"))
        if self._loop_task:
            # The loop also ends on its own once it sees _stopping: on Python 3.11,
            # asyncio.wait_for could swallow a cancellation that raced with the wake event.
            self._wake.set()
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    async def _background(self) -> None:
        deadline = self.clock()
        while not self._stopping:
            timeout = deadline - self.clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, min(timeout, 1.0))):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.writable()
                self._end_streams_of_invalid_tokens()
                # Most wake-ups are new work, not a lease running out: scan the live
                # leases only once the earliest of them is due (or a second passed).
                if self.clock() >= self._lease_deadline:
                    fx, self._lease_deadline = self._expire_leases()
                    self._apply(fx)
                self._apply(self._dispatch())
                deadline = self._lease_deadline
            except Exception:  # the loop must survive a bad row or a busy database
                log.exception("dispatch_failed")
                deadline = self.clock() + 0.5
                await asyncio.sleep(0.5)

    def _apply(self, fx: _Effects) -> None:
        """Publish what a transaction produced, once it is durable (with group commits, at
        the end of this turn of the loop; if that commit fails, never)."""
        self.store.after_commit(functools.partial(self._publish, fx))

    def _lost_commit(self, exc: Exception) -> None:
        """A commit failed after its agents' reports had been taken (group commits): those
        agents got no error and no Done, and would wait. Every agent reconnects instead,
        and sends again what was not confirmed (docs/agent-protocol.md)."""
        log.error("commit_lost_agents_reconnect", error=str(exc), agents=len(self.sessions))
        for s in list(self.sessions.values()):
            s.send(CloseCommand("the control plane could not store a change; reconnect"))

    async def writable(self) -> None:
        """Wait while the store cannot take a transaction without blocking the loop (a
        commit in flight): callers that can await do so before calling in."""
        await self.store.writable()

    async def durable(self) -> None:
        """Wait until what was written so far is on disk (StorageFailed if it never will
        be): the API answers a call only then."""
        await self.store.durable()

    def _publish(self, fx: _Effects) -> None:
        self.hub.publish(fx.events)
        for session, cmd in fx.commands:
            session.send(cmd)
        for e in fx.events:
            if e.type is EventType.STATE_CHANGED:
                # The one canonical line per state change (docs/observability.md).
                d = fx.deployments.get(e.deployment_id)
                log.info(
                    "deployment_state",
                    deployment_id=e.deployment_id,
                    service=d.service if d else None,
                    environment=d.environment if d else None,
                    cluster=d.cluster if d else None,
                    pull_request=(d.pull_request or None) if d else None,
                    state=e.state.name,
                    attempt=e.attempt,
                    agent_id=e.agent_id or None,
                    message=e.message or None,
                )
        for observe in self.observers:
            try:
                observe(fx.events, fx.deployments)
            except Exception:  # an observer (metrics) must never break the core
                log.exception("observer_failed")
        if fx.wake:
            self._wake.set()

    # ---------------------------------------------------------------- auth

    def authenticate(self, token: str) -> Principal:
        token_id, secret = tokens.parse(token)
        now = self.clock()
        # Every call is authenticated: keep the token rows read in the last
        # token_recheck_interval. The secret and the expiry are still checked on every call;
        # a revocation through this server drops the row at once, one made by the offline
        # command (another process) counts after at most that interval, as for streams.
        cached = self._tokens.get(token_id)
        if cached is not None and now - cached[1] < self.settings.token_recheck_interval:
            record_: TokenRecord | None = cached[0]
        else:
            with self.store.tx() as tx:
                record_ = tx.get_token(token_id)
            if record_ is None:
                self._tokens.pop(token_id, None)
            else:
                if len(self._tokens) >= TOKEN_CACHE:
                    self._tokens.clear()
                self._tokens[token_id] = (record_, now)
        return tokens.verify(record_, secret, now)

    def _audit(
        self,
        tx: Tx,
        who: Principal,
        action: str,
        target: str,
        *,
        detail: str = "",
        service: str = "",
        request_id: str = "",
    ) -> None:
        """A successful change, in the change's own transaction."""
        audit.record(
            tx,
            who,
            action,
            target,
            self.clock(),
            detail=detail,
            service=service,
            request_id=request_id,
        )

    def _refusals(
        self, who: Principal, action: str, target: str, *, service: str = "", request_id: str = ""
    ) -> contextlib.AbstractContextManager[None]:
        """Record a refused change in the audit log (in its own transaction)."""
        return audit.refusals(
            self.store,
            self.clock,
            who,
            action,
            target,
            service=service,
            request_id=request_id,
        )

    # ---------------------------------------------------------------- tokens

    def create_token(self, who: Principal, req: token_admin.TokenInput) -> tokens.IssuedToken:
        return token_admin.create_token(self.store, who, req, self.clock())

    def list_tokens(self, who: Principal, include_revoked: bool) -> list[TokenRecord]:
        return token_admin.list_tokens(self.store, who, include_revoked)

    def revoke_token(self, who: Principal, name: str) -> TokenRecord:
        """Revoke at once: new calls fail authentication, and the token's open streams (agent
        sessions, watches) end now with UNAUTHENTICATED."""
        t = token_admin.revoke_token(self.store, who, name, self.clock())
        self._tokens.pop(t.id, None)
        ended = self.streams.end_token(t.id, f"token {t.id} ({t.name}) was revoked")
        log.info("token_revoked", token_id=t.id, token_name=t.name, streams_ended=ended)
        return t

    def _end_streams_of_invalid_tokens(self) -> None:
        """End the streams of tokens that expired, or were revoked by another process."""
        now = self.clock()
        # Every stream is looked at: not on every wake-up (one per state change under load).
        if now - self._last_expiry_check < EXPIRY_CHECK_INTERVAL:
            return
        self._last_expiry_check = now
        for st in self.streams.all():
            if st.who.expires_at and st.who.expires_at <= now:
                st.end(f"token {st.who.token_id} ({st.who.name}) has expired")
        if now - self._last_token_check < self.settings.token_recheck_interval:
            return
        self._last_token_check = now
        ids = self.streams.token_ids()
        if not ids:
            return
        with self.store.tx() as tx:
            records = {i: tx.get_token(i) for i in ids}
        for i, r in records.items():
            if r is None or r.revoked_at:
                self.streams.end_token(i, f"token {i} was revoked")

    @staticmethod
    def _session_principal(session: AgentSession) -> Principal:
        if session.stream is not None:
            return session.stream.who
        return Principal(
            session.token_id, f"agent {session.agent_id}", Role.AGENT, cluster=session.cluster
        )

    def _check_session(self, session: AgentSession) -> None:
        """Before acting on an agent's report: its token must still be valid."""
        st = session.stream
        if st is None:
            return
        if not st.ended and st.who.expires_at and st.who.expires_at <= self.clock():
            st.end(f"token {st.who.token_id} ({st.who.name}) has expired")
        if st.ended:
            raise Unauthenticated(st.ended)

    # ---------------------------------------------------------------- audit

    def list_audit(
        self, who: Principal, since: float, service: str, page_size: int, page_token: str
    ) -> tuple[list[AuditEntry], str]:
        """Audit entries at or after `since` (about `service`, if given), oldest first."""
        authz.require(who, Action.READ_AUDIT)
        if service:
            validation.name("service", service, "service name")
        if not 0 <= since < 1e11:
            raise InvalidArgument("since", "must be a time after 1970")
        after, limit = paging.parse_page(page_token, page_size, first=0)
        with self.store.tx() as tx:
            rows = tx.list_audit(since, limit + 1, after, service)
        nxt = paging.page_token(rows[limit - 1].seq) if len(rows) > limit else ""
        return rows[:limit], nxt

    # ---------------------------------------------------------------- clusters

    def create_cluster(self, who: Principal, cluster_id: str, environments: list[str]) -> Cluster:
        with self._refusals(who, "cluster.create", cluster_id):
            authz.require(who, Action.MANAGE_CLUSTERS)
        return create_cluster(self.store, cluster_id, environments, self.clock(), who)

    def get_cluster(self, who: Principal, cluster_id: str) -> Cluster:
        authz.require(who, Action.READ)
        with self.store.tx() as tx:
            c = tx.get_cluster(cluster_id.removeprefix("clusters/"))
        if c is None:
            raise NotFound(f"cluster {cluster_id!r} does not exist; `sami cluster list` shows them")
        return c

    def list_clusters(self, who: Principal) -> list[Cluster]:
        authz.require(who, Action.READ)
        with self.store.tx() as tx:
            return tx.list_clusters()

    def list_agents(self, who: Principal, cluster: str) -> list[AgentRecord]:
        authz.require(who, Action.READ)
        with self.store.tx() as tx:
            known = {a.agent_id: a for a in tx.list_agents(cluster)}
        for s in self.sessions.values():
            if cluster and s.cluster != cluster:
                continue
            known[s.agent_id] = AgentRecord(
                agent_id=s.agent_id,
                cluster=s.cluster,
                version=s.version,
                capabilities=sorted(s.capabilities),
                connected_at=s.connected_at,
                last_seen_at=s.last_seen_at,
                connected=True,
                leases=sorted(s.leases),
            )
        return sorted(known.values(), key=lambda a: a.agent_id)

    # ---------------------------------------------------------------- artifacts

    def register_artifact(self, who: Principal, req: ArtifactInput) -> tuple[Artifact, bool]:
        with self._refusals(who, "artifact.register", f"{req.artifact_name} {req.ref}"):
            return self._register_artifact(who, req)

    def _register_artifact(self, who: Principal, req: ArtifactInput) -> tuple[Artifact, bool]:
        authz.require(who, Action.REGISTER_ARTIFACT)
        name = validation.artifact_name("artifact.artifact_name", req.artifact_name)
        try:
            kind = ArtifactKind(req.kind)
        except ValueError:
            raise InvalidArgument(
                "artifact.kind", "must be one of image, static_file, module"
            ) from None
        if kind is ArtifactKind.IMAGE:
            _, ref_digest = validation.image_ref("artifact.ref", req.ref)
            digest = validation.digest("artifact.digest", req.digest or ref_digest)
            if digest != ref_digest:
                raise InvalidArgument("artifact.digest", "does not match the digest in ref")
        else:
            digest = validation.digest("artifact.digest", req.digest)
            if req.ref.startswith(("http://", "https://")):
                validation.url("artifact.ref", req.ref)
            else:
                _, ref_digest = validation.image_ref("artifact.ref", req.ref)
        art = Artifact(
            id=new_id("art"),
            artifact_name=name,
            kind=kind,
            ref=req.ref,
            digest=digest,
            tags=validation.tags("artifact.tags", req.tags),
            git_repo=validation.text("artifact.provenance.git_repo", req.git_repo, 500),
            git_commit=validation.commit("artifact.provenance.git_commit", req.git_commit),
            ci_run_url=validation.url("artifact.provenance.ci_run_url", req.ci_run_url)
            if req.ci_run_url
            else "",
            labels=validation.labels("artifact.labels", req.labels),
            created_at=self.clock(),
            created_by=who.name,
        )
        with self.store.tx() as tx:
            existing = tx.find_artifact(name, digest)
            if existing is not None:
                if existing.ref != art.ref or existing.kind != art.kind:
                    raise AlreadyExists(
                        f"artifact {name}@{digest} is already registered with ref "
                        f"{existing.ref}; an artifact is immutable"
                    )
                return existing, False
            tx.insert_artifact(art)
            self._audit(tx, who, "artifact.register", f"{name}@{digest}", detail=art.id)
        return art, True

    def get_artifact(self, who: Principal, name: str) -> Artifact:
        authz.require(who, Action.READ)
        with self.store.tx() as tx:
            art = self._resolve_artifact(tx, name, "name")
        return art

    def _resolve_artifact(self, tx: Tx, ref: str, field_: str) -> Artifact:
        """An artifact by id, `artifacts/{id}`, digest-pinned ref, or `name@sha256:…`."""
        if not ref:
            raise InvalidArgument(field_, "artifact is required (an id, or a ref pinned by digest)")
        validation.text(field_, ref, limit=validation.MAX_REF)
        art = self._artifacts.get(ref)
        if art is not None:
            return art
        ident = ref.removeprefix("artifacts/")
        if ident.startswith("art_"):
            art = tx.get_artifact(ident)
        elif "@" in ref:
            name, _, digest = ref.rpartition("@")
            validation.digest(field_, digest)
            art = tx.find_artifact(name, digest)
            if art is None:
                matches = [a for a in tx.find_artifacts_by_digest(digest) if a.ref == ref]
                art = matches[0] if matches else None
        else:
            raise InvalidArgument(
                field_, f"{ref!r} is neither an artifact id nor a reference pinned by digest"
            )
        if art is None:
            raise NotFound(
                f"artifact {ref!r} is not registered; register it first with "
                "`sami artifact register NAME --ref REPO@sha256:...`"
            )
        self._remember_artifact(ref, art)
        return art

    def _remember_artifact(self, key: str, art: Artifact) -> None:
        """Keep `art` under `key` (its id, or a ref resolved to it) once the transaction
        that read it committed: one rolled back may have read an artifact it registered."""

        def keep() -> None:
            if len(self._artifacts) >= ARTIFACT_CACHE:
                self._artifacts.clear()
            self._artifacts[key] = art

        self.store.after_commit(keep)

    def _artifact(self, tx: Tx, artifact_id: str) -> Artifact | None:
        art = self._artifacts.get(artifact_id)
        if art is None:
            art = tx.get_artifact(artifact_id)
            if art is not None:
                self._remember_artifact(artifact_id, art)
        return art

    def list_artifacts(
        self, who: Principal, artifact_name: str, page_size: int, page_token: str
    ) -> tuple[list[Artifact], str]:
        authz.require(who, Action.READ)
        if artifact_name:
            validation.artifact_name("artifact_name", artifact_name)
        before, limit = paging.parse_page(page_token, page_size)
        with self.store.tx() as tx:
            rows = tx.list_artifacts(artifact_name, before, limit + 1)
        nxt = paging.page_token(rows[limit - 1][0]) if len(rows) > limit else ""
        return [a for _, a in rows[:limit]], nxt

    # ---------------------------------------------------------------- deployments

    def create_deployment(self, who: Principal, req: DeploymentInput) -> Deployment:
        with self._refusals(
            who,
            "deployment.create",
            f"{req.service}/{req.environment}"
            + (f"#{req.pull_request}" if req.pull_request else ""),
            service=req.service,
            request_id=req.request_id,
        ):
            return self._create_deployment(who, req)

    def _create_deployment(self, who: Principal, req: DeploymentInput) -> Deployment:
        service = validation.name("service", req.service, "service name")
        env = validation.environment("environment", req.environment)
        pr = validation.pull_request("pull_request", env, req.pull_request)
        validation.text("reason", req.reason)
        validation.text("deployment_type", req.deployment_type, limit=32)
        request_id = validation.request_id("request_id", req.request_id)
        authz.require_deploy_scope(who, service, env)
        fingerprint = req.fingerprint()
        now = self.clock()
        fx = _Effects(wake=True)
        with self.store.tx() as tx:
            prior = self._prior_request(tx, request_id, fingerprint)
            if prior is not None:
                return prior
            art = self._resolve_artifact(tx, req.artifact, "artifact")
            cluster = tx.cluster_for_environment(env)
            if cluster is None:
                raise FailedPrecondition(
                    f"no cluster serves environment {env!r}: create one with "
                    f"`sami cluster create NAME --env {env}` (or, offline, "
                    f"`sami-control cluster create NAME --env {env} --data DIR`)"
                )
            resolved = self.manifests.resolve(tx, service, req.deployment_type, env)
            m = resolved.manifest
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
                created_at=now,
                converge_timeout=float(m.converge_timeout),
                stack_files=list(m.stack_files),
                image_services=list(m.image_services),
                manifest_revision=resolved.revision.id,
                manifest_folder=m.folder,
                manifest_settings={
                    k: v
                    for k, v in entry_of(m).items()
                    if k in ("static_target_dir", "keep_releases", "cron_schedule", "pr_deploy")
                },
            )
            self._enqueue(tx, fx, d, f"requested by {who.name}", req.reason)
            self._audit(
                tx,
                who,
                "deployment.create",
                d.id,
                detail=f"{service}/{env}"
                + (f"#{pr}" if pr else "")
                + f" {art.artifact_name}@{art.digest}",
                service=service,
                request_id=request_id,
            )
        self._apply(fx)
        return d

    def _prior_request(self, tx: Tx, request_id: str, fingerprint: str) -> Deployment | None:
        """The deployment an earlier request with this idempotency key created, if any."""
        if not request_id:
            return None
        prior = tx.get_deployment_by_request_id(request_id)
        if prior is not None and prior.request_hash != fingerprint:
            raise AlreadyExists(
                f"request_id {request_id!r} was already used for deployment {prior.id} with "
                "a different request; use a new request_id"
            )
        return prior

    def _enqueue(self, tx: Tx, fx: _Effects, d: Deployment, who: str, reason: str) -> None:
        """Store a new deployment as QUEUED and supersede older queued ones of its key."""
        now = d.created_at
        first = record(
            d, EventType.STATE_CHANGED, now, message=who + (f": {reason}" if reason else "")
        )
        tx.insert_deployment(d)
        tx.append_event(first)
        fx.add(d, first)
        for old in tx.queued_of_key(d.service, d.environment, d.pull_request):
            if old.id != d.id:
                ev = move(old, State.SUPERSEDED, now, f"superseded by {d.id}")
                tx.update_deployment(old)
                tx.append_event(ev)
                fx.add(old, ev)

    def teardown_preview(
        self, who: Principal, service: str, pull_request: int, reason: str, request_id: str
    ) -> Deployment:
        with self._refusals(
            who,
            "preview.teardown",
            f"{service}/pull_request#{pull_request}",
            service=service,
            request_id=request_id,
        ):
            return self._teardown_preview(who, service, pull_request, reason, request_id)

    def _teardown_preview(
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
        fx = _Effects(wake=True)
        with self.store.tx() as tx:
            prior = self._prior_request(tx, request_id, fingerprint)
            if prior is not None:
                return prior
            latest = tx.latest_for_key(service, "pull_request", pr)
            if latest is None:
                raise NotFound(f"there is no preview of {service} for pull request {pr}")
            if latest.action is DeploymentAction.TEARDOWN and latest.state is not State.FAILED:
                raise FailedPrecondition(
                    f"the preview of {service} for pull request {pr} is already torn down "
                    f"(or being torn down) by {latest.id}"
                )
            d = self._teardown_of(latest, who.name, reason, request_id, fingerprint)
            self._enqueue(tx, fx, d, f"teardown requested by {who.name}", reason)
            self._audit(
                tx,
                who,
                "preview.teardown",
                d.id,
                detail=f"{service} PR {pr}",
                service=service,
                request_id=request_id,
            )
        self._apply(fx)
        return d

    def _teardown_of(
        self, latest: Deployment, who: str, reason: str, request_id: str = "", fingerprint: str = ""
    ) -> Deployment:
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
            created_at=self.clock(),
            converge_timeout=latest.converge_timeout,
            manifest_revision=latest.manifest_revision,
            manifest_folder=latest.manifest_folder,
            stack_files=list(latest.stack_files),
            image_services=list(latest.image_services),
            manifest_settings=dict(latest.manifest_settings),
        )

    def get_deployment(self, who: Principal, name: str) -> Deployment:
        authz.require(who, Action.READ)
        with self.store.tx() as tx:
            return self._must_get(tx, name)

    def _must_get(self, tx: Tx, name: str) -> Deployment:
        ident = name.removeprefix("deployments/")
        if not ident:
            raise InvalidArgument("name", "deployment id is required")
        validation.text("name", ident, limit=100)
        d = tx.get_deployment(ident)
        if d is None:
            raise NotFound(f"deployment {ident!r} does not exist; `sami list` shows deployments")
        return d

    def artifact_of(self, d: Deployment) -> Artifact | None:
        """None only for the teardown of an orphan preview Sami had no record of."""
        if not d.artifact_id:
            return None
        art = self._artifacts.get(d.artifact_id)
        if art is None:
            with self.store.tx() as tx:
                art = self._artifact(tx, d.artifact_id)
        return art

    def list_deployments(
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
        with self.store.tx() as tx:
            rows = tx.list_deployments(service, environment, state, before, limit + 1)
        nxt = paging.page_token(rows[limit - 1].seq) if len(rows) > limit else ""
        return rows[:limit], nxt

    def cancel_deployment(self, who: Principal, name: str, reason: str) -> Deployment:
        with self._refusals(who, "deployment.cancel", name):
            return self._cancel_deployment(who, name, reason)

    def _cancel_deployment(self, who: Principal, name: str, reason: str) -> Deployment:
        validation.text("reason", reason)
        now = self.clock()
        fx = _Effects()
        with self.store.tx() as tx:
            d = self._must_get(tx, name)
            authz.require_deploy_scope(who, d.service, d.environment)
            if d.state.terminal:
                raise FailedPrecondition(
                    f"deployment {d.id} already ended ({d.state.name}); to undo a deployment, "
                    "deploy the previous artifact"
                )
            msg = f"cancelled by {who.name}" + (f": {reason}" if reason else "")
            if d.state is State.QUEUED:
                ev = move(d, State.CANCELLED, now, msg)
            elif d.cancel_requested:
                return d
            else:
                # The agent may already be applying: it must roll back, then report.
                d.cancel_requested = True
                ev = record(
                    d, EventType.NOTICE, now, f"cancel requested by {who.name}", phase="cancel"
                )
                session = self.sessions.get(d.agent_id)
                if session is not None:
                    fx.commands.append((session, CancelCommand(d.id, d.lease_id, msg)))
            tx.update_deployment(d)
            tx.append_event(ev)
            fx.add(d, ev)
            fx.wake = True
            self._audit(tx, who, "deployment.cancel", d.id, detail=reason, service=d.service)
        self._apply(fx)
        return d

    async def watch(
        self, who: Principal, name: str, after: int
    ) -> AsyncGenerator[Deployment | Event, None]:
        """The deployment now, then every event after `after`, ending after the terminal one."""
        authz.require(who, Action.READ)
        if after < 0:
            raise InvalidArgument("after_sequence", "must not be negative")
        with self.store.tx() as tx:
            d = self._must_get(tx, name)
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
            await self.durable()
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
                    await self.writable()
                    caught = list(self.store.iter_events(d.id, last))
                    await self.durable()
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

    # ---------------------------------------------------------------- agents

    def agent_connect(
        self,
        who: Principal,
        agent_id: str,
        version: str,
        capabilities: Iterable[str],
        held: list[HeldLease],
    ) -> tuple[AgentSession, list[HeldLease]]:
        with self._refusals(who, "agent.connect", agent_id):
            return self._agent_connect(who, agent_id, version, capabilities, held)

    def _agent_connect(
        self,
        who: Principal,
        agent_id: str,
        version: str,
        capabilities: Iterable[str],
        held: list[HeldLease],
    ) -> tuple[AgentSession, list[HeldLease]]:
        authz.require(who, Action.AGENT_CONNECT)
        validation.agent_id("hello.agent_id", agent_id)
        validation.text("hello.version", version, limit=100)
        caps = frozenset(capabilities)
        for c in caps:
            validation.text("hello.capabilities", c, limit=50)
        now = self.clock()
        session = AgentSession(
            agent_id=agent_id,
            cluster=who.cluster,
            version=version,
            capabilities=caps,
            token_id=who.token_id,
            connected_at=now,
            last_seen_at=now,
        )
        previous = self.sessions.get(agent_id)
        if previous is not None and previous.stream is not None:
            # It is being replaced: it does not count against the token's limit any more.
            self.streams.close(previous.stream)
        session.stream = self.streams.open(
            "agent", who, lambda why: self._end_session(session, why)
        )
        if previous is not None:
            previous.send(CloseCommand("this agent id connected again on another stream"))
            previous.closed = True
        try:
            resumed, fx = self._resume_leases(who, session, held, now)
        except BaseException:
            self.streams.close(session.stream)
            raise
        self.sessions[agent_id] = session
        log.info(
            "agent_connected",
            agent_id=agent_id,
            cluster=who.cluster,
            resumed=len(resumed),
            capabilities=sorted(caps),
            peer=who.peer or None,
        )
        self._apply(fx)
        return session, resumed

    def _end_session(self, session: AgentSession, why: str) -> None:
        """The session's token was revoked or expired: the stream ends with UNAUTHENTICATED."""
        session.send(CloseCommand(why, fatal=Unauthenticated(why)))
        session.closed = True
        log.warning(
            "agent_stream_ended", agent_id=session.agent_id, cluster=session.cluster, reason=why
        )

    def _resume_leases(
        self, who: Principal, session: AgentSession, held: list[HeldLease], now: float
    ) -> tuple[list[HeldLease], _Effects]:
        agent_id = session.agent_id
        held_by_id = {h.deployment_id: h for h in held}
        resumed: list[HeldLease] = []
        fx = _Effects(wake=True)
        with self.store.tx() as tx:
            for d in tx.deployments_in_states([State.ASSIGNED, State.IN_PROGRESS], who.cluster):
                if d.agent_id != agent_id:
                    continue
                h = held_by_id.get(d.id)
                if h is not None and h.lease_id == d.lease_id and h.epoch == d.epoch:
                    # It holds the lease (an ASSIGNED one: the ack was lost).
                    self._renew(tx, fx, d, session, now)
                    tx.update_deployment(d)
                    session.leases.add(d.id)
                    resumed.append(h)
                else:
                    # The agent restarted and forgot this work: offer it again now rather
                    # than waiting for the lease to run out.
                    self._requeue(tx, fx, d, now, "the agent restarted without it")
            tx.upsert_agent(
                AgentRecord(
                    agent_id=agent_id,
                    cluster=who.cluster,
                    version=session.version,
                    capabilities=sorted(session.capabilities),
                    connected_at=now,
                    last_seen_at=now,
                )
            )
            self._audit(
                tx,
                who,
                "agent.connect",
                agent_id,
                detail=f"cluster={who.cluster} resumed={len(resumed)}",
            )
        return resumed, fx

    def agent_disconnect(self, session: AgentSession) -> None:
        session.closed = True
        if session.stream is not None:
            self.streams.close(session.stream)
        if self.sessions.get(session.agent_id) is session:
            del self.sessions[session.agent_id]
            log.info(
                "agent_disconnected",
                agent_id=session.agent_id,
                cluster=session.cluster,
                leases=len(session.leases),
            )
        # Leases stay until they expire: the agent may be back in a moment, still working.

    def _leased(
        self, tx: Tx, session: AgentSession, deployment_id: str, lease_id: str, epoch: int
    ) -> Deployment | None:
        """The deployment if `session` holds this lease on it; otherwise None (after telling
        the agent to let go). Another cluster's deployment is a permission error."""
        return self._held(session, tx.get_deployment(deployment_id), deployment_id, lease_id, epoch)

    @staticmethod
    def _held(
        session: AgentSession, d: Deployment | None, deployment_id: str, lease_id: str, epoch: int
    ) -> Deployment | None:
        """_leased, on a deployment already read."""
        if d is not None and d.cluster != session.cluster:
            raise PermissionDenied(
                f"deployment {deployment_id} belongs to another cluster than {session.cluster!r}"
            )
        if (
            d is None
            or d.state.terminal
            or not d.state.active
            or d.agent_id != session.agent_id
            or d.lease_id != lease_id
            or d.epoch != epoch
        ):
            return None
        return d

    @staticmethod
    def _finished_by(session: AgentSession, d: Deployment | None, lease_id: str) -> bool:
        """Whether this agent's own lease on `d` ended with a result already stored."""
        return (
            d is not None
            and d.state.terminal
            and d.lease_id == lease_id
            and d.agent_id == session.agent_id
        )

    def _reject_report(
        self, session: AgentSession, deployment_id: str, lease_id: str, why: str
    ) -> None:
        session.leases.discard(deployment_id)
        cmd = RevokeCommand(deployment_id, lease_id, why)
        self.store.after_commit(lambda: session.send(cmd))
        log.warning(
            "report_rejected",
            agent_id=session.agent_id,
            deployment_id=deployment_id,
            lease_id=lease_id,
            reason=why,
        )

    @_agent_report
    def agent_ack(
        self, session: AgentSession, deployment_id: str, lease_id: str, epoch: int
    ) -> None:
        now = self.clock()
        session.last_seen_at = now
        fx = _Effects()
        with self.store.tx() as tx:
            d = self._leased(tx, session, deployment_id, lease_id, epoch)
            if d is None:
                return self._reject_report(
                    session, deployment_id, lease_id, "stale lease: not yours or no longer live"
                )
            self._renew(tx, fx, d, session, now)
            tx.update_deployment(d)
        self._apply(fx)

    def _renew(
        self, tx: Tx, fx: _Effects, d: Deployment, session: AgentSession, now: float
    ) -> None:
        """An ack or a report from the lease holder: renew the lease, and an ASSIGNED
        deployment is now IN_PROGRESS (the agent has it)."""
        self._lease_until(d, now + self.settings.lease_ttl)
        if d.state is State.ASSIGNED:
            ev = move(d, State.IN_PROGRESS, now, f"accepted by agent {session.agent_id}")
            tx.append_event(ev)
            fx.add(d, ev)

    @_agent_report
    def agent_progress(
        self,
        session: AgentSession,
        deployment_id: str,
        lease_id: str,
        epoch: int,
        sequence: int,
        phase: str,
        message: str,
    ) -> None:
        now = self.clock()
        session.last_seen_at = now
        phase = validation.text("progress.phase", phase, limit=64)
        message = validation.text("progress.message", message, limit=4000)
        fx = _Effects()
        with self.store.tx() as tx:
            d = self._leased(tx, session, deployment_id, lease_id, epoch)
            if d is None:
                return self._reject_report(
                    session, deployment_id, lease_id, "stale lease: not yours or no longer live"
                )
            self._renew(tx, fx, d, session, now)  # progress implies a lost ack, too
            if sequence > d.agent_sequence:
                d.agent_sequence = sequence
                ev = record(d, EventType.PROGRESS, now, message=message, phase=phase)
                tx.append_event(ev)
                fx.add(d, ev)
            tx.update_deployment(d)
        self._apply(fx)

    @_agent_report
    def agent_result(
        self,
        session: AgentSession,
        deployment_id: str,
        lease_id: str,
        epoch: int,
        outcome: int,
        reason: str,
    ) -> None:
        now = self.clock()
        session.last_seen_at = now
        reason = validation.text("result.reason", reason, limit=4000)
        try:
            state = OUTCOME_STATE[Outcome(outcome)]
        except ValueError:
            raise InvalidArgument("result.outcome", "must be set") from None
        fx = _Effects(wake=True)
        with self.store.tx() as tx:
            current = tx.get_deployment(deployment_id)
            if self._finished_by(session, current, lease_id):
                # A result we already stored, sent again after a reconnect.
                fx.commands.append((session, DoneCommand(deployment_id, lease_id)))
                session.leases.discard(deployment_id)
                self._apply(fx)
                return None
            d = self._held(session, current, deployment_id, lease_id, epoch)
            if d is None:
                return self._reject_report(
                    session, deployment_id, lease_id, "stale lease: not yours or no longer live"
                )
            ev = move(d, state, now, reason or state.name.lower().replace("_", " "))
            tx.update_deployment(d)
            tx.append_event(ev)
            fx.add(d, ev)
        session.leases.discard(deployment_id)
        fx.commands.append((session, DoneCommand(deployment_id, lease_id)))
        self._apply(fx)

    @_agent_report
    def agent_heartbeat(self, session: AgentSession, held: list[HeldLease]) -> None:
        now = self.clock()
        session.last_seen_at = now
        session.send(HeartbeatAckCommand())
        if not held:
            return
        with self.store.tx() as tx:
            for h in held:
                current = tx.get_deployment(h.deployment_id)
                d = self._held(session, current, h.deployment_id, h.lease_id, h.epoch)
                if d is None:
                    if self._finished_by(session, current, h.lease_id):
                        # Its result crossed this heartbeat: Done is on its way.
                        continue
                    self._reject_report(
                        session,
                        h.deployment_id,
                        h.lease_id,
                        "stale lease: not yours or no longer live",
                    )
                    continue
                acked = d.state is State.IN_PROGRESS
                ttl = self.settings.lease_ttl if acked else self.settings.ack_timeout
                self._lease_until(d, now + ttl)
                tx.update_deployment(d)

    @_agent_report
    def agent_inventory(self, session: AgentSession, stacks: list[PreviewStack]) -> list[str]:
        """Tear down the reported preview stacks whose pull request is not open any more.
        Returns the ids of the teardown deployments created."""
        now = self.clock()
        session.last_seen_at = now
        who = Principal(
            session.token_id, f"agent {session.agent_id}", Role.AGENT, cluster=session.cluster
        )
        fx = _Effects(wake=True)
        created: list[str] = []
        with self.store.tx() as tx:
            for st in stacks:
                if not self._valid_preview(st):
                    log.warning(
                        "preview_inventory_ignored",
                        agent_id=session.agent_id,
                        stack=st.stack_name[:100],
                    )
                    continue
                latest = tx.latest_for_key(
                    st.service, "pull_request", st.pull_request, session.cluster
                )
                if latest is not None and self._preview_open(latest, now):
                    continue
                why = (
                    f"preview stack {st.stack_name} has no open pull request "
                    f"(last deployment {latest.id if latest else 'unknown to Sami'})"
                )
                template = latest or Deployment(
                    id="",
                    service=st.service,
                    environment="pull_request",
                    pull_request=st.pull_request,
                    artifact_id="",
                    cluster=session.cluster,
                    deployment_type="swarm",
                    stack_name=st.stack_name,
                )
                d = self._teardown_of(template, "sami (orphan reconciliation)", why)
                self._enqueue(tx, fx, d, "orphan preview found by " + who.name, why)
                self._audit(
                    tx,
                    self._session_principal(session),
                    "preview.teardown",
                    d.id,
                    detail=f"by agent {session.agent_id}: {why}",
                    service=st.service,
                )
                created.append(d.id)
        self._apply(fx)
        return created

    def agent_cron_run(self, session: AgentSession, report: cron_runs.CronRunInput) -> CronRun:
        """Store a cron job's run (once per run_id) and acknowledge it to the agent. A run of
        another cluster's deployment is PERMISSION_DENIED (docs/cron.md); a refusal is
        audited, like every refused agent report."""
        with self._refusals(
            self._session_principal(session), "agent.report", report.deployment_id[:100]
        ):
            self._check_session(session)
            return self._agent_cron_run(session, report)

    def _agent_cron_run(self, session: AgentSession, report: cron_runs.CronRunInput) -> CronRun:
        session.last_seen_at = self.clock()
        run, created = cron_runs.record(
            self.store, session.cluster, session.agent_id, report, self.clock()
        )
        if created:
            log.info(
                "cron_run",
                run_id=run.run_id,
                deployment_id=run.deployment_id,
                service=run.service,
                environment=run.environment,
                cluster=run.cluster,
                job=run.job,
                outcome=run.outcome.name,
                exit_code=run.exit_code,
                agent_id=session.agent_id,
            )
        ack = CronRunAckCommand(run.run_id)
        # The agent forgets a run once acknowledged: only once it is stored.
        self.store.after_commit(lambda: session.send(ack))
        return run

    def list_cron_runs(
        self, who: Principal, service: str, environment: str, page_size: int, page_token: str
    ) -> tuple[list[CronRun], str]:
        return cron_runs.list_runs(self.store, who, service, environment, page_size, page_token)

    @staticmethod
    def _valid_preview(st: PreviewStack) -> bool:
        try:
            validation.name("stack.service", st.service, "service name")
            validation.pull_request("stack.pull_request", "pull_request", st.pull_request)
        except InvalidArgument:
            return False
        return st.stack_name == f"pr-{st.pull_request}_{st.service}"

    def _preview_open(self, latest: Deployment, now: float) -> bool:
        if not latest.state.terminal:
            return True  # being deployed or torn down right now
        if latest.action is DeploymentAction.TEARDOWN:
            return False  # torn down (or the teardown failed): the stack should not exist
        return now - latest.created_at < self.settings.preview_ttl

    # ---------------------------------------------------------------- dispatch

    def _requeue(self, tx: Tx, fx: _Effects, d: Deployment, now: float, why: str) -> None:
        old_session = self.sessions.get(d.agent_id)
        if old_session is not None:
            old_session.leases.discard(d.id)
            # Sent once the requeue is stored, like every command: if its commit fails the
            # lease still stands, and the agent must keep the work.
            fx.commands.append((old_session, RevokeCommand(d.id, d.lease_id, why)))
        if d.cancel_requested:
            ev = move(d, State.CANCELLED, now, f"cancelled ({why} while cancelling)")
        elif d.attempt >= self.settings.max_attempts:
            ev = move(d, State.FAILED, now, f"gave up after {d.attempt} attempts; last: {why}")
        else:
            ev = move(
                d,
                State.QUEUED,
                now,
                f"attempt {d.attempt} on agent {d.agent_id} lost: {why}; offering again",
            )
        tx.update_deployment(d)
        tx.append_event(ev)
        fx.add(d, ev)

    def _lease_until(self, d: Deployment, expires: float) -> None:
        """Every lease deadline is set here, so the loop knows the earliest one."""
        d.lease_expires = expires
        self._lease_deadline = min(self._lease_deadline, expires)

    def _expire_leases(self) -> tuple[_Effects, float]:
        """Requeue the deployments whose lease ran out; also return when the next live
        lease runs out, so the loop sleeps until then (it never sleeps more than 1 s, so
        leases granted or renewed after this scan are covered too)."""
        now = self.clock()
        fx = _Effects()
        deadline = now + 1.0
        with self.store.tx() as tx:
            for d in tx.deployments_in_states([State.ASSIGNED, State.IN_PROGRESS]):
                if d.lease_expires and d.lease_expires <= now:
                    what = "not acknowledged" if d.state is State.ASSIGNED else "lease expired"
                    self._requeue(tx, fx, d, now, what)
                    fx.wake = True
                elif d.lease_expires:
                    deadline = min(deadline, d.lease_expires)
        return fx, deadline

    def _dispatch(self) -> _Effects:
        """Offer queued work to connected agents: oldest first, one active per key."""
        fx = _Effects()
        if not self.sessions or self._stopping:
            return fx
        now = self.clock()
        with self.store.tx() as tx:
            queued = tx.deployments_in_states([State.QUEUED])
            if not queued:
                return fx  # most wake-ups under load: nothing waits
            busy = tx.active_keys()
            by_cluster: dict[str, list[AgentSession]] = {}
            for s in self.sessions.values():
                if not s.closed:
                    by_cluster.setdefault(s.cluster, []).append(s)
            for d in queued:
                if d.key in busy:
                    continue
                candidates = [
                    s for s in by_cluster.get(d.cluster, ()) if d.deployment_type in s.capabilities
                ]
                if not candidates:
                    continue
                s = min(candidates, key=lambda s: (len(s.leases), s.agent_id))
                d.attempt += 1
                d.epoch += 1
                d.lease_id = new_id("lease")
                d.agent_id = s.agent_id
                d.agent_sequence = 0
                self._lease_until(d, now + self.settings.ack_timeout)
                ev = move(
                    d, State.ASSIGNED, now, f"assigned to agent {s.agent_id} (attempt {d.attempt})"
                )
                tx.update_deployment(d)
                tx.append_event(ev)
                fx.add(d, ev)
                art = self._artifact(tx, d.artifact_id) if d.artifact_id else None
                s.leases.add(d.id)
                busy.add(d.key)
                files = (
                    self.manifests.folder_files(tx, d.manifest_revision, d.manifest_folder)
                    if d.manifest_revision
                    else {}
                )
                fx.commands.append((s, AssignCommand(d, art, self.settings.lease_ttl, files=files)))
        return fx


def _ends(e: Event) -> bool:
    return e.type is EventType.STATE_CHANGED and e.state.terminal


def create_cluster(
    store: Store, cluster_id: str, environments: list[str], now: float, who: Principal
) -> Cluster:
    """Shared by the RPC and the offline `sami-control cluster create`."""
    with audit.refusals(store, lambda: now, who, "cluster.create", cluster_id):
        return _create_cluster(store, cluster_id, environments, now, who)


def _create_cluster(
    store: Store, cluster_id: str, environments: list[str], now: float, who: Principal
) -> Cluster:
    validation.name("cluster_id", cluster_id, "cluster name")
    if not environments:
        raise InvalidArgument(
            "environments",
            f"name at least one environment the cluster serves ({', '.join(ENVIRONMENTS)})",
        )
    envs = sorted({validation.environment("environments", e) for e in environments})
    with store.tx() as tx:
        if tx.get_cluster(cluster_id) is not None:
            raise AlreadyExists(f"cluster {cluster_id!r} already exists")
        for e in envs:
            other = tx.cluster_for_environment(e)
            if other is not None:
                raise FailedPrecondition(
                    f"environment {e!r} is already served by cluster {other!r}; an "
                    "environment is served by one cluster"
                )
        c = Cluster(id=cluster_id, environments=envs, created_at=now)
        tx.insert_cluster(c)
        audit.record(tx, who, "cluster.create", cluster_id, now, detail=",".join(envs))
    return c
