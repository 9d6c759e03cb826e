"""Administration straight on the data folder, for bootstrapping before any token exists
(and for recovery). Safe while the server runs: SQLite serialises the writes, and the
server re-reads the tokens of its open streams every few seconds, so a token revoked here
loses its streams there too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from sami_common.durations import DurationError, parse_seconds
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import InvalidArgument
from sami_control.core.model import Cluster, Principal, Role, TokenRecord
from sami_control.core.token_secrets import IssuedToken
from sami_control.core.tokens import TokenInput
from sami_control.storage import open_store

T = TypeVar("T")

OFFLINE = Principal(token_id="-", name="offline-admin", role=Role.ADMIN, peer="local")


def parse_duration(text: str, field: str = "--expires-in") -> float:
    """`30d`, `12h`, `1h30m`, `45s` or plain seconds: the grammar of every duration flag
    (sami_common.durations)."""
    try:
        return parse_seconds(text)
    except DurationError as err:
        raise InvalidArgument(field, str(err)) from None


def _run(data: Path, action: Callable[[ControlPlane], Awaitable[T]], spec: str | None = None) -> T:
    """Run `action` on the core over the data folder, not serving (its services commit
    each change at once), on an event loop of its own: the commands stay plain functions
    for the CLI."""

    async def main() -> T:
        store = open_store(spec, data)
        try:
            await store.open()
            return await action(ControlPlane(store))
        finally:
            await store.close()

    return asyncio.run(main())


def add_token(
    data: Path,
    role: str,
    name: str,
    cluster: str = "",
    services: Sequence[str] = (),
    environments: Sequence[str] = (),
    expires_in: str = "",
    store: str | None = None,
) -> IssuedToken:
    seconds = parse_duration(expires_in) if expires_in else 0.0
    request = TokenInput(role, name, cluster, services, environments, seconds)
    return _run(data, lambda core: core.tokens.create(OFFLINE, request), store)


def list_tokens(data: Path, store: str | None = None) -> list[TokenRecord]:
    return _run(data, lambda core: core.tokens.list(OFFLINE), store)


def revoke_token(data: Path, token_id: str, store: str | None = None) -> None:
    _run(data, lambda core: core.tokens.revoke(OFFLINE, token_id), store)


def add_cluster(
    data: Path, name: str, environments: Sequence[str], store: str | None = None
) -> Cluster:
    return _run(data, lambda core: core.clusters.create(OFFLINE, name, list(environments)), store)
