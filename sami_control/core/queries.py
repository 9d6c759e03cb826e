"""Queries: questions the control plane asks one connected agent on its stream, answered
while a caller waits (docs/agent-protocol.md, "Queries"): a service's logs, the plan of a
deployment. Nothing is stored: a query lives as long as the caller's call.

`Relay` is the channel: it picks an agent of the cluster, sends it a `QueryCommand` with an
id, hands the agent's chunks to the caller and ends with the agent's end marker. It keeps
the bounds (lines, bytes and lines per second per query; queries open at once per agent)
and the cancellations both ways: the caller leaving sends the agent a
`QueryCancelCommand`; the agent's stream ending ends its callers' streams with UNAVAILABLE.

`Queries` is the resource service: validation, authorization and what to ask.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import structlog

from sami_control.core import authz, secrets, validation
from sami_control.core.artifacts import Artifacts
from sami_control.core.commands import (
    LogsAsk,
    PlanAsk,
    QueryCancelCommand,
    QueryCommand,
    QueryLimits,
)
from sami_control.core.context import Context
from sami_control.core.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from sami_control.core.ids import new_id
from sami_control.core.manifest_catalog import ManifestCatalog
from sami_control.core.model import Artifact, Deployment, ManifestSettings, Principal
from sami_control.core.sessions import AgentSession, Sessions
from sami_control.core.settings import Settings

log = structlog.get_logger("sami.control")

# Chunks waiting for a caller that reads slower than the agent sends: past this the
# query ends (RESOURCE_EXHAUSTED) rather than the control plane holding them.
MAX_PENDING_CHUNKS = 256
# The agent's rate is checked over this many seconds' worth of lines (chunks bunch up on
# the way: the agent paces, the network does not).
RATE_BURST_SECONDS = 5.0
# Most log lines a caller may ask of each task at once (`--tail`).
MAX_TAIL = 10_000
# What the agent must be able to do to answer (queries read the swarm).
QUERY_CAPABILITY = "swarm"
# The error codes an agent may end a query with; anything else is reported as UNAVAILABLE.
_AGENT_CODES: dict[str, type[DomainError]] = {
    "INVALID_ARGUMENT": FailedPrecondition,  # the agent cannot use what the manifest says
    "NOT_FOUND": NotFound,
    "FAILED_PRECONDITION": FailedPrecondition,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "UNAVAILABLE": Unavailable,
}


@dataclass(frozen=True)
class Chunk:
    """Part of an answer, as the API layer received it: what the bounds count (lines and
    bytes) and the message itself, which the core passes through without reading."""

    lines: int
    size: int
    payload: object


@dataclass(eq=False)
class OpenQuery:
    id: str
    session: AgentSession
    limits: QueryLimits
    started_at: float
    queue: asyncio.Queue[Chunk | DomainError | None] = field(default_factory=asyncio.Queue)
    lines: int = 0
    size: int = 0
    answered: bool = False
    ended: bool = False

    def finish(self, outcome: DomainError | None) -> None:
        """End the caller's stream: with `outcome` (an error) or cleanly (None)."""
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(outcome)


class Relay:
    """The open queries of this process, by id and by agent session."""

    def __init__(
        self,
        sessions: Sessions,
        settings: Settings,
        clock: Callable[[], float],
        replica: Callable[[], str] = lambda: "",
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self._replica = replica
        self._open: dict[str, OpenQuery] = {}
        self._by_session: dict[AgentSession, set[str]] = {}

    def limits(self) -> QueryLimits:
        s = self.settings
        return QueryLimits(s.query_max_lines, s.query_max_bytes, s.query_lines_per_second)

    def open_count(self, session: AgentSession) -> int:
        return len(self._by_session.get(session, ()))

    def _pick(self, cluster: str) -> AgentSession:
        """The least busy agent of the cluster connected here that can answer."""
        candidates = [
            s
            for s in self.sessions.open_by_cluster().get(cluster, [])
            if QUERY_CAPABILITY in s.capabilities
        ]
        if not candidates:
            replica = self._replica()
            where = f" to this control-plane replica ({replica})" if replica else ""
            more = (
                "; with several replicas an agent holds its stream on one of them: retry "
                "(the sami CLI moves to the next address)"
                if replica
                else "; start one (sami-agent) or wait for it to reconnect"
            )
            raise Unavailable(
                f"no agent of cluster {cluster!r} that runs swarm is connected{where}{more}"
            )
        best = min(candidates, key=self.open_count)
        limit = self.settings.max_queries_per_agent
        if limit > 0 and self.open_count(best) >= limit:
            raise ResourceExhausted(
                f"agent {best.agent_id} of cluster {cluster!r} already answers {limit} "
                "queries (logs, plans), the limit per agent (sami-control serve "
                "--max-queries-per-agent); retry once one ends"
            )
        return best

    def open(self, cluster: str, ask: LogsAsk | PlanAsk) -> OpenQuery:
        session = self._pick(cluster)
        q = OpenQuery(new_id("qry"), session, self.limits(), self.clock())
        self._open[q.id] = q
        self._by_session.setdefault(session, set()).add(q.id)
        session.send(QueryCommand(q.id, ask, q.limits))
        return q

    async def answers(self, q: OpenQuery) -> AsyncGenerator[Chunk, None]:
        """The agent's chunks, until its end marker; raises the error it ended with. The
        caller leaving (this generator closed or cancelled) tells the agent to stop."""
        timeout = self.settings.query_answer_timeout
        try:
            while True:
                try:
                    if q.answered:
                        item = await q.queue.get()
                    else:
                        item = await asyncio.wait_for(q.queue.get(), timeout)
                except TimeoutError:
                    if q.answered:
                        continue  # accepted (an empty chunk), just quiet: a follow waits
                    raise Unavailable(
                        f"agent {q.session.agent_id} did not answer within {timeout:g} s "
                        "(an agent older than this control plane does not know queries)"
                    ) from None
                if item is None:
                    return
                if isinstance(item, DomainError):
                    raise item
                yield item
        finally:
            self._close(q, "the caller left")

    def _close(self, q: OpenQuery, why: str) -> None:
        if self._open.pop(q.id, None) is None:
            return
        mine = self._by_session.get(q.session)
        if mine is not None:
            mine.discard(q.id)
            if not mine:
                del self._by_session[q.session]
        if not q.ended:
            q.ended = True
            q.session.send(QueryCancelCommand(q.id, why))

    def _stop(self, q: OpenQuery, error: DomainError) -> None:
        """End the query early: the caller gets `error`, the agent is told to stop."""
        q.finish(error)
        self._open.pop(q.id, None)
        mine = self._by_session.get(q.session)
        if mine is not None:
            mine.discard(q.id)
            if not mine:
                del self._by_session[q.session]
        q.session.send(QueryCancelCommand(q.id, error.message))

    def _mine(self, session: AgentSession, query_id: str) -> OpenQuery | None:
        q = self._open.get(query_id)
        if q is None or q.session is not session or q.ended:
            return None  # ended already (the caller left), or another agent's
        return q

    def chunk(self, session: AgentSession, query_id: str, chunk: Chunk) -> None:
        q = self._mine(session, query_id)
        if q is None:
            return
        q.answered = True
        q.lines += chunk.lines
        q.size += chunk.size
        limits = q.limits
        if q.lines > limits.max_lines:
            self._stop(q, ResourceExhausted(_over(f"{limits.max_lines} lines")))
            return
        if q.size > limits.max_bytes:
            self._stop(q, ResourceExhausted(_over(f"{limits.max_bytes} bytes")))
            return
        if limits.lines_per_second > 0:
            elapsed = max(0.0, self.clock() - q.started_at)
            allowed = limits.lines_per_second * (elapsed + RATE_BURST_SECONDS)
            if q.lines > allowed:
                self._stop(
                    q,
                    ResourceExhausted(
                        f"agent {session.agent_id} sent more than "
                        f"{limits.lines_per_second:g} lines per second, the limit per stream"
                    ),
                )
                return
        if q.queue.qsize() >= MAX_PENDING_CHUNKS:
            self._stop(
                q,
                ResourceExhausted(
                    f"the caller reads slower than the agent sends ({MAX_PENDING_CHUNKS} "
                    "chunks waiting); narrow the stream (--since, --tail)"
                ),
            )
            return
        if chunk.lines or chunk.payload is not None:
            q.queue.put_nowait(chunk)

    def end(self, session: AgentSession, query_id: str, code: str, error: str) -> None:
        q = self._mine(session, query_id)
        if q is None:
            return
        q.answered = True
        if not error:
            q.finish(None)
            return
        kind = _AGENT_CODES.get(code, Unavailable)
        q.finish(kind(f"agent {session.agent_id}: {error}"))

    def session_gone(self, session: AgentSession) -> None:
        """The agent's stream ended: its callers' streams end, saying so."""
        for query_id in self._by_session.pop(session, set()):
            q = self._open.pop(query_id, None)
            if q is not None:
                q.finish(
                    Unavailable(
                        f"agent {session.agent_id} of cluster {session.cluster!r} "
                        "disconnected before the answer ended; run the command again"
                    )
                )


def _over(limit: str) -> str:
    return (
        f"the stream reached its limit of {limit}; narrow it with --since or --tail "
        "(or raise the server's query limits)"
    )


@dataclass(frozen=True)
class Target:
    service: str
    environment: str
    pull_request: int


class Queries:
    """Logs and plans, asked of the agents of a target's cluster."""

    def __init__(self, ctx: Context, relay: Relay, plans: PlanBuilder) -> None:
        self.ctx = ctx
        self.relay = relay
        self._plan_builder = plans

    def _target(self, service: str, environment: str, pull_request: int) -> Target:
        service = validation.name("service", service, "service name")
        env = validation.environment("environment", environment)
        pr = validation.pull_request("pull_request", env, pull_request)
        return Target(service, env, pr)

    async def logs(
        self,
        who: Principal,
        service: str,
        environment: str,
        pull_request: int,
        since: float | None,
        tail: int,
        follow: bool,
    ) -> AsyncGenerator[Chunk, None]:
        """The service's log lines, as the agent sends them (chunks of LogLine messages)."""
        t = self._target(service, environment, pull_request)
        if since is not None and since < 0:
            raise InvalidArgument("since", "must not be negative")
        if tail < 0 or tail > MAX_TAIL:
            raise InvalidArgument("tail", f"must be between 0 and {MAX_TAIL}")
        authz.require_logs_scope(who, t.service, t.environment)
        d = await self._plan_builder.draft(t.service, t.environment, t.pull_request, None)
        if d.deployment_type not in ("swarm", "compose"):
            raise FailedPrecondition(
                f"{t.service} in {t.environment} is a {d.deployment_type} service: only "
                "swarm services have Docker logs"
            )
        # The Sami service is the whole stack: the logs of each of its swarm services.
        ask = LogsAsk(d.stack_name, "", since, tail or MAX_TAIL, follow)
        q = self.relay.open(d.cluster, ask)
        log.info(
            "logs_query",
            query_id=q.id,
            agent_id=q.session.agent_id,
            service=t.service,
            environment=t.environment,
            follow=follow,
            by=who.name,
        )
        # Closed with this generator: the caller leaving cancels the agent's side at once.
        async with contextlib.aclosing(self.relay.answers(q)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def plan(
        self, who: Principal, service: str, environment: str, pull_request: int, artifact: str
    ) -> tuple[str, str, object]:
        """(cluster, agent id, the agent's plan) for deploying `artifact` to the target."""
        t = self._target(service, environment, pull_request)
        authz.require_deploy_scope(who, t.service, t.environment)
        ask = await self._plan_builder.plan_ask(t.service, t.environment, t.pull_request, artifact)
        if ask.deployment.deployment_type not in ("swarm", "compose"):
            raise FailedPrecondition(
                f"{t.service} in {t.environment} is a {ask.deployment.deployment_type} "
                "service: plans are computed for swarm stacks only"
            )
        q = self.relay.open(ask.deployment.cluster, ask)
        answer: object = None
        async with contextlib.aclosing(self.relay.answers(q)) as chunks:
            async for chunk in chunks:
                if chunk.payload is not None:
                    answer = chunk.payload
        if answer is None:
            raise Unavailable(f"agent {q.session.agent_id} ended the plan without one")
        return ask.deployment.cluster, q.session.agent_id, answer


class PlanBuilder:
    """What a deployment of the target would be, resolved as `Deployments.create` resolves
    it (cluster, manifest, artifact), without storing anything."""

    def __init__(self, ctx: Context, artifacts: Artifacts, manifests: ManifestCatalog) -> None:
        self.ctx = ctx
        self.artifacts = artifacts
        self.manifests = manifests

    async def draft(
        self, service: str, environment: str, pull_request: int, artifact: str | None
    ) -> Deployment:
        return (await self._resolve(service, environment, pull_request, artifact))[0]

    async def plan_ask(
        self, service: str, environment: str, pull_request: int, artifact: str
    ) -> PlanAsk:
        d, art, files = await self._resolve(service, environment, pull_request, artifact)
        assert art is not None
        return PlanAsk(d, art, files)

    async def _resolve(
        self, service: str, env: str, pr: int, artifact: str | None
    ) -> tuple[Deployment, Artifact | None, dict[str, bytes]]:
        async with self.ctx.store.tx() as tx:
            art = (
                await self.artifacts.resolve(tx, artifact, "artifact")
                if artifact is not None
                else None
            )
            cluster = await tx.cluster_for_environment(env)
            if cluster is None:
                raise FailedPrecondition(f"no cluster serves environment {env!r}")
            resolved = await self.manifests.resolve(tx, service, "", env)
            m = resolved.manifest
            if art is not None:
                self.artifacts.check_fits(art, m.deployment_type, f"{service} in {env}")
            if pr and not m.pr_deploy:
                raise FailedPrecondition(f"service {service} does not deploy previews")
            files = (
                await self.manifests.folder_files(tx, resolved.revision.id, m.folder)
                if art is not None
                else {}
            )
        d = Deployment(
            id=new_id("plan"),
            service=service,
            environment=env,
            pull_request=pr,
            artifact_id=art.id if art is not None else "",
            cluster=cluster,
            deployment_type=m.deployment_type,
            stack_name=m.stack_name_for(pr),
            reason="plan",
            request_id="",
            request_hash="",
            created_by="",
            created_by_token="",
            created_at=self.ctx.clock(),
            converge_timeout=float(m.converge_timeout),
            stack_files=list(m.stack_files),
            image_services=list(m.image_services),
            manifest_revision=resolved.revision.id,
            manifest_folder=m.folder,
            manifest_settings=ManifestSettings(pr_deploy=m.pr_deploy),
        )
        async with self.ctx.store.tx() as tx:
            # What a deployment made now would use (names and versions; no ciphertext).
            await secrets.record(tx, d)
        return d, art, files
