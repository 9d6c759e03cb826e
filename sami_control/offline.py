"""Administration straight on the data folder, for bootstrapping before any token exists
(and for recovery). Safe while the server runs: SQLite serialises the writes, and the
server re-reads the tokens of its open streams every few seconds, so a token revoked here
loses its streams there too."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from sami_common.durations import DurationError, parse_seconds
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import InvalidArgument
from sami_control.core.model import Cluster, Principal, Role, TokenRecord
from sami_control.core.token_secrets import IssuedToken
from sami_control.core.tokens import TokenInput
from sami_control.storage import open_store

OFFLINE = Principal(token_id="-", name="offline-admin", role=Role.ADMIN, peer="local")


def parse_duration(text: str, field: str = "--expires-in") -> float:
    """`30d`, `12h`, `1h30m`, `45s` or plain seconds: the grammar of every duration flag
    (sami_common.durations)."""
    try:
        return parse_seconds(text)
    except DurationError as err:
        raise InvalidArgument(field, str(err)) from None


@contextlib.contextmanager
def _core(data: Path, spec: str | None = None) -> Iterator[ControlPlane]:
    """The core over the data folder (or the --store), not serving: its services commit
    each change at once."""
    store = open_store(spec, data)
    try:
        yield ControlPlane(store)
    finally:
        store.close()


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
    with _core(data, store) as core:
        return core.tokens.create(
            OFFLINE, TokenInput(role, name, cluster, services, environments, seconds)
        )


def list_tokens(data: Path, store: str | None = None) -> list[TokenRecord]:
    with _core(data, store) as core:
        return core.tokens.list(OFFLINE)


def revoke_token(data: Path, token_id: str, store: str | None = None) -> None:
    with _core(data, store) as core:
        core.tokens.revoke(OFFLINE, token_id)


def add_cluster(
    data: Path, name: str, environments: Sequence[str], store: str | None = None
) -> Cluster:
    with _core(data, store) as core:
        return core.clusters.create(OFFLINE, name, list(environments))
