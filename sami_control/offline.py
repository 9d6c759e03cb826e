"""Administration straight on the data folder, for bootstrapping before any token exists
(and for recovery). Safe while the server runs: SQLite serialises the writes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sami_control.core import tokens, validation
from sami_control.core.controlplane import create_cluster
from sami_control.core.errors import FailedPrecondition, InvalidArgument, NotFound
from sami_control.core.model import AuditEntry, Cluster, Principal, Role, TokenRecord
from sami_control.storage.sqlite import SQLiteStore

OFFLINE = Principal(token_id="-", name="offline-admin", role=Role.ADMIN)


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    if text.isdigit():
        return float(text)
    raise InvalidArgument("--expires-in", f"{text!r} is not a duration like 30d, 12h, 90m")


def add_token(
    data: Path,
    role: str,
    name: str,
    cluster: str = "",
    services: Sequence[str] = (),
    environments: Sequence[str] = (),
    expires_in: str = "",
) -> tokens.IssuedToken:
    try:
        r = Role(role)
    except ValueError:
        raise InvalidArgument(
            "--role", f"{role!r} is not one of admin, agent, deployer, reader"
        ) from None
    validation.text("--name", name, limit=100)
    if r is Role.AGENT and not cluster:
        raise InvalidArgument("--cluster", "an agent token is bound to one cluster: pass --cluster")
    if r is not Role.AGENT and cluster:
        raise InvalidArgument("--cluster", "only agent tokens are bound to a cluster")
    if r is not Role.DEPLOYER and (services or environments):
        raise InvalidArgument(
            "--service", "only deployer tokens are scoped to services/environments"
        )
    for s in services:
        validation.name("--service", s, "service name")
    for e in environments:
        validation.environment("--environment", e)
    now = time.time()
    expires_at = now + parse_duration(expires_in) if expires_in else 0.0
    store = SQLiteStore(data)
    try:
        with store.tx() as tx:
            if cluster and tx.get_cluster(cluster) is None:
                raise NotFound(
                    f"cluster {cluster!r} does not exist: create it first with "
                    f"`sami-control cluster create {cluster} --env stage --data {data}`"
                )
            issued = tokens.issue(
                TokenRecord(
                    id="",
                    name=name or f"{r.value}-token",
                    role=r,
                    secret_hash="",
                    cluster=cluster,
                    services=sorted(set(services)),
                    environments=sorted(set(environments)),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            tx.insert_token(issued.record)
            tx.append_audit(
                AuditEntry(
                    time=now,
                    token_id="-",
                    token_name=OFFLINE.name,
                    action="token.create",
                    target=issued.record.id,
                    outcome="ok",
                    detail=f"role={r.value} name={name}",
                )
            )
        return issued
    finally:
        store.close()


def list_tokens(data: Path) -> list[TokenRecord]:
    store = SQLiteStore(data)
    try:
        with store.tx() as tx:
            return tx.list_tokens()
    finally:
        store.close()


def revoke_token(data: Path, token_id: str) -> None:
    store = SQLiteStore(data)
    try:
        with store.tx() as tx:
            if tx.get_token(token_id) is None:
                raise NotFound(f"token {token_id!r} does not exist; `sami-control token list`")
            if not tx.revoke_token(token_id, time.time()):
                raise FailedPrecondition(f"token {token_id!r} is already revoked")
            tx.append_audit(
                AuditEntry(
                    time=time.time(),
                    token_id="-",
                    token_name=OFFLINE.name,
                    action="token.revoke",
                    target=token_id,
                    outcome="ok",
                )
            )
    finally:
        store.close()


def add_cluster(data: Path, name: str, environments: Sequence[str]) -> Cluster:
    store = SQLiteStore(data)
    try:
        return create_cluster(store, name, list(environments), time.time(), OFFLINE)
    finally:
        store.close()
