"""Agents: a session per open stream (core/sessions.py), connected with the leases the
agent says it still holds, listed with what the store remembers of agents not connected."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

import structlog

from sami_common import limits
from sami_control.core import authz, paging, recipients, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.bus import Notice
from sami_control.core.commands import CloseCommand, HeldLease
from sami_control.core.context import Context
from sami_control.core.dispatch import LIVE, Leases
from sami_control.core.effects import Effects
from sami_control.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from sami_control.core.locks import hold
from sami_control.core.model import AgentRecord, Principal, Role
from sami_control.core.sessions import AgentSession, Sessions
from sami_control.core.streams import Streams

log = structlog.get_logger("sami.control")


def principal_of(session: AgentSession) -> Principal:
    """Who an agent's session acts as (its token, and the peer its stream came from)."""
    if session.stream is not None:
        return session.stream.who
    return Principal(
        session.token_id, f"agent {session.agent_id}", Role.AGENT, cluster=session.cluster
    )


class Agents:
    def __init__(self, ctx: Context, sessions: Sessions, streams: Streams, leases: Leases) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.streams = streams
        self.leases = leases

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("agent.connect", lambda self, who, agent_id, *_: Subject(who, agent_id))
    async def connect(
        self,
        who: Principal,
        agent_id: str,
        version: str,
        capabilities: Iterable[str],
        held: list[HeldLease],
        recipient: str = "",
    ) -> tuple[AgentSession, list[HeldLease]]:
        """A new session for the agent's stream, and the held leases still honoured (the
        others are offered again at once). `recipient`, the agent's age public key, is
        registered as one of its cluster's recipients (core/recipients.py)."""
        authz.require(who, Action.AGENT_CONNECT)
        validation.agent_id("hello.agent_id", agent_id)
        if recipient:
            recipients.check_recipient("hello.recipient", recipient)
        validation.text("hello.version", version, limit=limits.MAX_VERSION)
        caps_sent = list(capabilities)
        if len(caps_sent) > limits.MAX_CAPABILITIES:
            raise InvalidArgument(
                "hello.capabilities",
                f"{len(caps_sent)} capabilities, more than {limits.MAX_CAPABILITIES}",
            )
        if len(held) > limits.MAX_LEASES_PER_MESSAGE:
            raise InvalidArgument(
                "hello.held_leases",
                f"{len(held)} leases, more than {limits.MAX_LEASES_PER_MESSAGE}",
            )
        caps = frozenset(caps_sent)
        for c in caps:
            validation.text("hello.capabilities", c, limit=limits.MAX_CAPABILITY)
        elsewhere = self.sessions.live_elsewhere(who.cluster, agent_id)
        if elsewhere is not None:
            # The same id in two clusters is either a host-name clash or an impostor: the
            # live one keeps its stream, and this one must pick another id. Which cluster
            # is not said: an agent learns nothing of other clusters.
            raise FailedPrecondition(
                f"agent id {agent_id!r} is connected in another cluster; an agent id must be "
                "unique while connected: start this agent with another --agent-id"
            )
        now = self.ctx.clock()
        session = AgentSession(
            agent_id=agent_id,
            cluster=who.cluster,
            version=version,
            capabilities=caps,
            token_id=who.token_id,
            connected_at=now,
            last_seen_at=now,
        )
        previous = self.sessions.get(who.cluster, agent_id)
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
            resumed, fx = await self._resume_leases(who, session, held, now, recipient)
        except BaseException:
            self.streams.close(session.stream)
            raise
        self.sessions.put(session)
        # A stream of this agent left on another replica (a cut it has not noticed) closes.
        self.ctx.publisher.tell(Notice(connected={(who.cluster, agent_id)}))
        log.info(
            "agent_connected",
            agent_id=agent_id,
            cluster=who.cluster,
            resumed=len(resumed),
            capabilities=sorted(caps),
            peer=who.peer or None,
        )
        self.ctx.publisher.apply(fx)
        return session, resumed

    async def _resume_leases(
        self,
        who: Principal,
        session: AgentSession,
        held: list[HeldLease],
        now: float,
        recipient: str,
    ) -> tuple[list[HeldLease], Effects]:
        agent_id = session.agent_id
        held_by_id = {h.deployment_id: h for h in held}
        resumed: list[HeldLease] = []
        fx = Effects(wake=True)
        async with self.ctx.store.tx() as tx:
            mine = [
                d.id
                for d in await tx.deployments_in_states(list(LIVE), who.cluster)
                if d.agent_id == agent_id
            ]
            for dep_id in sorted(mine):  # read again under the lock (core/locks.py)
                d = await hold(tx, dep_id)
                if d is None or d.state not in LIVE or d.agent_id != agent_id:
                    continue
                h = held_by_id.get(d.id)
                if h is not None and h.lease_id == d.lease_id and h.epoch == d.epoch:
                    # It holds the lease (an ASSIGNED one: the ack was lost).
                    await self.leases.renew(tx, fx, d, session, now)
                    await tx.update_deployment(d)
                    session.leases.add(d.id)
                    resumed.append(h)
                else:
                    # The agent restarted and forgot this work: offer it again now rather
                    # than waiting for the lease to run out.
                    await self.leases.requeue(tx, fx, d, now, "the agent restarted without it")
            await tx.upsert_agent(
                AgentRecord(
                    agent_id=agent_id,
                    cluster=who.cluster,
                    version=session.version,
                    capabilities=sorted(session.capabilities),
                    connected_at=now,
                    last_seen_at=now,
                )
            )
            if recipient:
                await recipients.register_agent(tx, self.audit, who, agent_id, recipient, now)
            await self.audit.ok(
                tx,
                who,
                "agent.connect",
                agent_id,
                detail=f"cluster={who.cluster} resumed={len(resumed)}",
            )
        return resumed, fx

    def _end_session(self, session: AgentSession, why: str) -> None:
        """The session's token was revoked or expired: the stream ends with UNAUTHENTICATED."""
        session.send(CloseCommand(why, fatal=Unauthenticated(why)))
        session.closed = True
        log.warning(
            "agent_stream_ended", agent_id=session.agent_id, cluster=session.cluster, reason=why
        )

    def disconnect(self, session: AgentSession) -> None:
        session.closed = True
        if session.stream is not None:
            self.streams.close(session.stream)
        if self.sessions.remove(session):
            log.info(
                "agent_disconnected",
                agent_id=session.agent_id,
                cluster=session.cluster,
                leases=len(session.leases),
            )
        # Leases stay until they expire: the agent may be back in a moment, still working.

    def check(self, session: AgentSession) -> None:
        """Before acting on an agent's report: its token must still be valid."""
        st = session.stream
        if st is None:
            return
        if not st.ended and st.who.expires_at and st.who.expires_at <= self.ctx.clock():
            st.end(f"token {st.who.token_id} ({st.who.name}) has expired")
        if st.ended:
            raise Unauthenticated(st.ended)

    def close_all(self, reason: str) -> None:
        for s in self.sessions.all():
            s.send(CloseCommand(reason))

    async def list(
        self, who: Principal, cluster: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[AgentRecord], str]:
        """Agents by id then cluster, connected or remembered, a page at a time."""
        authz.require(who, Action.READ)
        if cluster:
            validation.name("cluster", cluster, "cluster name")
        after, limit = _agent_page(page_token, page_size)
        async with self.ctx.store.tx() as tx:
            known = {(a.agent_id, a.cluster): a for a in await tx.list_agents(cluster)}
        for s in self.sessions.all():
            if cluster and s.cluster != cluster:
                continue
            known[(s.agent_id, s.cluster)] = AgentRecord(
                agent_id=s.agent_id,
                cluster=s.cluster,
                version=s.version,
                capabilities=sorted(s.capabilities),
                connected_at=s.connected_at,
                last_seen_at=s.last_seen_at,
                connected=True,
                leases=sorted(s.leases),
            )
        keys = sorted(k for k in known if after is None or k > after)
        page = [known[k] for k in keys[:limit]]
        nxt = _agent_page_token(keys[limit - 1]) if len(keys) > limit else ""
        return page, nxt

    @audited(
        "agent.remove",
        lambda self, who, cluster, agent_id: Subject(who, f"{cluster[:63]}/{agent_id[:128]}"),
    )
    async def remove(self, who: Principal, cluster: str, agent_id: str) -> AgentRecord:
        """Forget the record of an agent that is not connected (a host gone for good)."""
        authz.require(who, Action.MANAGE_CLUSTERS)
        validation.name("cluster", cluster, "cluster name")
        validation.agent_id("agent_id", agent_id)
        live = self.sessions.get(cluster, agent_id)
        if live is not None and not live.closed:
            raise FailedPrecondition(
                f"agent {agent_id} of cluster {cluster} is connected: stop it (or revoke its "
                "token) first; only the record of an agent that is gone can be removed"
            )
        async with self.ctx.store.tx() as tx:
            record = next(
                (a for a in await tx.list_agents(cluster) if a.agent_id == agent_id), None
            )
            if record is None or not await tx.delete_agent(cluster, agent_id):
                raise NotFound(
                    f"cluster {cluster!r} has no agent {agent_id!r}; `sami agents` lists them"
                )
            await self.audit.ok(tx, who, "agent.remove", f"{cluster}/{agent_id}")
        return record


def _agent_page_token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(["a1", *key]).encode()).decode()


def _agent_page(token: str, size: int) -> tuple[tuple[str, str] | None, int]:
    """(the last (agent id, cluster) of the previous page, or None; the page size)."""
    if size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    limit = min(size or paging.DEFAULT_PAGE, paging.MAX_PAGE)
    if not token:
        return None, limit
    try:
        if len(token) > 400:
            raise ValueError("too long")
        version, agent_id, cluster = json.loads(base64.urlsafe_b64decode(token.encode()))
        if version != "a1" or not isinstance(agent_id, str) or not isinstance(cluster, str):
            raise ValueError(version)
    except (ValueError, TypeError):
        raise InvalidArgument("page_token", "is not a token this server issued") from None
    return (agent_id, cluster), limit
