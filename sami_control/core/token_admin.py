"""Creating, listing and revoking tokens: shared by the TokenService RPCs and the offline
`sami-control token` commands (which bootstrap the first admin token)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sami_control.core import audit, authz, tokens, validation
from sami_control.core.authz import Action
from sami_control.core.errors import FailedPrecondition, InvalidArgument, NotFound
from sami_control.core.model import Principal, Role, TokenRecord
from sami_control.storage.base import Store

_TOKEN_ID = re.compile(r"[0-9a-f]{12}")
MAX_EXPIRY = 10 * 366 * 86400.0


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


def create_token(store: Store, who: Principal, req: TokenInput, now: float) -> tokens.IssuedToken:
    """Issue a token; its plaintext is in the result, and nowhere else, ever."""
    with audit.refusals(store, lambda: now, who, "token.create", f"role={req.role}"):
        authz.require(who, Action.MANAGE_TOKENS)
        role, name = _validated(req)
        with store.tx() as tx:
            if req.cluster and tx.get_cluster(req.cluster) is None:
                raise NotFound(
                    f"cluster {req.cluster!r} does not exist: create it first "
                    f"(`sami cluster create {req.cluster} --env stage`)"
                )
            issued = tokens.issue(
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
            tx.insert_token(r)
            scope = f" cluster={r.cluster}" if r.cluster else ""
            if r.services or r.environments:
                scope += f" services={','.join(r.services) or '*'}"
                scope += f" environments={','.join(r.environments) or '*'}"
            if r.expires_at:
                scope += f" expires_in={req.expires_in:.0f}s"
            audit.record(
                tx, who, "token.create", r.id, now, detail=f"role={role.value} name={name}{scope}"
            )
    return issued


def list_tokens(store: Store, who: Principal, include_revoked: bool = True) -> list[TokenRecord]:
    authz.require(who, Action.MANAGE_TOKENS)
    with store.tx() as tx:
        rows = tx.list_tokens()
    return [t for t in rows if include_revoked or not t.revoked_at]


def revoke_token(store: Store, who: Principal, name: str, now: float) -> TokenRecord:
    with audit.refusals(store, lambda: now, who, "token.revoke", name):
        authz.require(who, Action.MANAGE_TOKENS)
        ident = token_id("name", name)
        with store.tx() as tx:
            t = tx.get_token(ident)
            if t is None:
                raise NotFound(f"token {ident!r} does not exist; `sami token list` shows them")
            if not tx.revoke_token(ident, now):
                raise FailedPrecondition(f"token {ident!r} ({t.name}) is already revoked")
            t.revoked_at = now
            audit.record(tx, who, "token.revoke", ident, now, detail=f"name={t.name}")
    return t
