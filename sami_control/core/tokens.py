"""Tokens: creating, listing and revoking them (the TokenService RPCs, and the offline
`sami-control token` commands that bootstrap the first admin token), authenticating every
call, and ending the open streams of a token that was revoked or expired."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from sami_control.core import authz, token_secrets, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.bus import Notice
from sami_control.core.context import Context
from sami_control.core.errors import FailedPrecondition, InvalidArgument, NotFound
from sami_control.core.model import Principal, Role, TokenRecord
from sami_control.core.streams import Streams

log = structlog.get_logger("sami.control")

_TOKEN_ID = re.compile(r"[0-9a-f]{12}")
MAX_EXPIRY = 10 * 366 * 86400.0
# Token rows kept by authenticate (for token_recheck_interval at most).
TOKEN_CACHE = 4096
# How often the background loop looks for streams whose token expired.
EXPIRY_CHECK_INTERVAL = 0.5


@dataclass(frozen=True)
class TokenInput:
    role: str  # admin, agent, deployer or reader
    name: str = ""
    cluster: str = ""
    services: Sequence[str] = ()
    environments: Sequence[str] = ()
    expires_in: float = 0.0  # seconds; 0: until revoked


def _validated(req: TokenInput) -> tuple[Role, str]:
    try:
        role = Role(req.role)
    except ValueError:
        raise InvalidArgument(
            "role", f"{req.role!r} is not one of admin, agent, deployer, reader"
        ) from None
    name = validation.text("display_name", req.name, limit=100).strip()
    if role is Role.AGENT:
        if not req.cluster:
            raise InvalidArgument("cluster", "an agent token is bound to one cluster: name it")
        validation.name("cluster", req.cluster, "cluster name")
    elif req.cluster:
        raise InvalidArgument("cluster", "only agent tokens are bound to a cluster")
    if role is not Role.DEPLOYER:
        if req.services:
            raise InvalidArgument("services", "only deployer tokens are scoped to services")
        if req.environments:
            raise InvalidArgument("environments", "only deployer tokens are scoped to environments")
    if len(req.services) > 100:
        raise InvalidArgument("services", "more than 100 services")
    for i, s in enumerate(req.services):
        validation.name(f"services[{i}]", s, "service name")
    for i, e in enumerate(req.environments):
        validation.environment(f"environments[{i}]", e)
    if req.expires_in < 0:
        raise InvalidArgument("expires_in", "must not be negative")
    if req.expires_in > MAX_EXPIRY:
        raise InvalidArgument("expires_in", "at most 10 years: rotate tokens instead")
    return role, name or f"{role.value}-token"


def token_id(field: str, name: str) -> str:
    ident = name.removeprefix("tokens/")
    if not _TOKEN_ID.fullmatch(ident):
        raise InvalidArgument(field, "a token id is 12 hex characters (`sami token list`)")
    return ident


class Tokens:
    def __init__(self, ctx: Context, streams: Streams) -> None:
        self.ctx = ctx
        self.streams = streams
        self._cache: dict[str, tuple[TokenRecord, float]] = {}
        self._last_token_check = 0.0
        self._last_expiry_check = 0.0

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("token.create", lambda self, who, req: Subject(who, f"role={req.role}"))
    async def create(self, who: Principal, req: TokenInput) -> token_secrets.IssuedToken:
        """Issue a token; its plaintext is in the result, and nowhere else, ever."""
        authz.require(who, Action.MANAGE_TOKENS)
        role, name = _validated(req)
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            if req.cluster and await tx.get_cluster(req.cluster) is None:
                raise NotFound(
                    f"cluster {req.cluster!r} does not exist: create it first "
                    f"(`sami cluster create {req.cluster} --env stage`)"
                )
            issued = token_secrets.issue(
                TokenRecord(
                    id="",
                    name=name,
                    role=role,
                    secret_hash="",
                    cluster=req.cluster,
                    services=sorted(set(req.services)),
                    environments=sorted(set(req.environments)),
                    created_at=now,
                    expires_at=now + req.expires_in if req.expires_in else 0.0,
                    created_by=who.name,
                )
            )
            r = issued.record
            await tx.insert_token(r)
            scope = f" cluster={r.cluster}" if r.cluster else ""
            if r.services or r.environments:
                scope += f" services={','.join(r.services) or '*'}"
                scope += f" environments={','.join(r.environments) or '*'}"
            if r.expires_at:
                scope += f" expires_in={req.expires_in:.0f}s"
            await self.audit.ok(
                tx, who, "token.create", r.id, detail=f"role={role.value} name={name}{scope}"
            )
        return issued

    async def list(self, who: Principal, include_revoked: bool = True) -> list[TokenRecord]:
        authz.require(who, Action.MANAGE_TOKENS)
        async with self.ctx.store.tx() as tx:
            rows = await tx.list_tokens()
        return [t for t in rows if include_revoked or not t.revoked_at]

    @audited("token.revoke", lambda self, who, name: Subject(who, name))
    async def revoke(self, who: Principal, name: str) -> TokenRecord:
        """Revoke at once: new calls fail authentication, and the token's open streams (agent
        sessions, watches) end now with UNAUTHENTICATED."""
        authz.require(who, Action.MANAGE_TOKENS)
        ident = token_id("name", name)
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            t = await tx.get_token(ident)
            if t is None:
                raise NotFound(f"token {ident!r} does not exist; `sami token list` shows them")
            if not await tx.revoke_token(ident, now):
                raise FailedPrecondition(f"token {ident!r} ({t.name}) is already revoked")
            t.revoked_at = now
            await self.audit.ok(tx, who, "token.revoke", ident, detail=f"name={t.name}")
        self._cache.pop(t.id, None)
        ended = self.streams.end_token(t.id, f"token {t.id} ({t.name}) was revoked")
        # The other replicas end its streams and forget it too.
        self.ctx.publisher.tell(Notice(revoked_tokens={t.id}))
        log.info("token_revoked", token_id=t.id, token_name=t.name, streams_ended=ended)
        return t

    def forget(self, token_id: str) -> None:
        """Drop a token from the cache (revoked by another replica): the next call reads
        it again."""
        self._cache.pop(token_id, None)

    async def authenticate(self, token: str) -> Principal:
        token_id_, secret = token_secrets.parse(token)
        now = self.ctx.clock()
        # Every call is authenticated: keep the token rows read in the last
        # token_recheck_interval. The secret and the expiry are still checked on every call;
        # a revocation through this server drops the row at once, one made by the offline
        # command (another process) counts after at most that interval, as for streams.
        cached = self._cache.get(token_id_)
        if cached is not None and now - cached[1] < self.ctx.settings.token_recheck_interval:
            record_: TokenRecord | None = cached[0]
        else:
            async with self.ctx.store.tx() as tx:
                record_ = await tx.get_token(token_id_)
            if record_ is None:
                self._cache.pop(token_id_, None)
            else:
                if len(self._cache) >= TOKEN_CACHE:
                    self._cache.clear()
                self._cache[token_id_] = (record_, now)
        return token_secrets.verify(record_, secret, now)

    async def end_streams_of_invalid_tokens(self) -> None:
        """End the streams of tokens that expired, or were revoked by another process
        (called by the control plane's background loop)."""
        now = self.ctx.clock()
        # Every stream is looked at: not on every wake-up (one per state change under load).
        if now - self._last_expiry_check < EXPIRY_CHECK_INTERVAL:
            return
        self._last_expiry_check = now
        for st in self.streams.all():
            if st.who.expires_at and st.who.expires_at <= now:
                st.end(f"token {st.who.token_id} ({st.who.name}) has expired")
        if now - self._last_token_check < self.ctx.settings.token_recheck_interval:
            return
        self._last_token_check = now
        ids = self.streams.token_ids()
        if not ids:
            return
        async with self.ctx.store.tx() as tx:
            records = {i: await tx.get_token(i) for i in ids}
        for i, r in records.items():
            if r is None or r.revoked_at:
                self.streams.end_token(i, f"token {i} was revoked")
