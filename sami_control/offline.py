"""Administration straight on the data folder, for bootstrapping before any token exists
(and for recovery). Safe while the server runs: SQLite serialises the writes, and the
server re-reads the tokens of its open streams every few seconds, so a token revoked here
loses its streams there too."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sami_common.durations import DurationError, parse_seconds
from sami_control.core import token_admin, tokens
from sami_control.core.controlplane import create_cluster
from sami_control.core.errors import InvalidArgument
from sami_control.core.model import Cluster, Principal, Role, TokenRecord
from sami_control.storage.sqlite import SQLiteStore

OFFLINE = Principal(token_id="-", name="offline-admin", role=Role.ADMIN, peer="local")


def parse_duration(text: str, field: str = "--expires-in") -> float:
    """`30d`, `12h`, `1h30m`, `45s` or plain seconds: the grammar of every duration flag
    (sami_common.durations)."""
    try:
        return parse_seconds(text)
    except DurationError as err:
        raise InvalidArgument(field, str(err)) from None


def add_token(
    data: Path,
    role: str,
    name: str,
    cluster: str = "",
    services: Sequence[str] = (),
    environments: Sequence[str] = (),
    expires_in: str = "",
) -> tokens.IssuedToken:
    seconds = parse_duration(expires_in) if expires_in else 0.0
    store = SQLiteStore(data)
    try:
        return token_admin.create_token(
            store,
            OFFLINE,
            token_admin.TokenInput(role, name, cluster, services, environments, seconds),
            time.time(),
        )
    finally:
        store.close()


def list_tokens(data: Path) -> list[TokenRecord]:
    store = SQLiteStore(data)
    try:
        return token_admin.list_tokens(store, OFFLINE)
    finally:
        store.close()


def revoke_token(data: Path, token_id: str) -> None:
    store = SQLiteStore(data)
    try:
        token_admin.revoke_token(store, OFFLINE, token_id, time.time())
    finally:
        store.close()


def add_cluster(data: Path, name: str, environments: Sequence[str]) -> Cluster:
    store = SQLiteStore(data)
    try:
        return create_cluster(store, name, list(environments), time.time(), OFFLINE)
    finally:
        store.close()
