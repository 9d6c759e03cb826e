"""Store URLs (`--store`, SAMI_STORE): which backend one names, and how messages show it."""

from __future__ import annotations

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class BadStoreURL(ValueError):
    """The --store value cannot be used (says which part is wrong)."""


def is_postgres(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(POSTGRES_SCHEMES)


def redact(spec: str) -> str:
    """A store URL as messages may show it: without a password."""
    if "://" not in spec or "@" not in spec:
        return spec
    scheme, rest = spec.split("://", 1)
    userinfo, at, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in userinfo else ''}{at}{host}"


def check(spec: str | None) -> None:
    """Refuse, naming it, a store that is neither a PostgreSQL URL nor nothing (SQLite): a
    typo must not silently fall back to a local file."""
    if spec and not is_postgres(spec):
        raise BadStoreURL(
            f"unknown store {redact(spec)!r}: give a postgresql://USER@HOST:PORT/DB URL, or "
            "nothing for SQLite in the data folder (--data)"
        )
