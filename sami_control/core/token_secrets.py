"""Bearer token secrets: `sami_<id>_<secret>`. Only sha256(secret) is stored.

The secret is 32 random bytes, so a fast hash is enough (no password stretching needed:
there is nothing to brute-force); the id lets us look a token up without scanning, and the
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sami_control.core.errors import Unauthenticated
from sami_control.core.model import Principal, TokenRecord

_TOKEN = re.compile(r"sami_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class IssuedToken:
    record: TokenRecord
    plaintext: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(record_without_secret: TokenRecord) -> IssuedToken:
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    rec = record_without_secret
    rec.id = token_id
    rec.secret_hash = hash_secret(secret)
    return IssuedToken(rec, f"sami_{token_id}_{secret}")


def parse(plaintext: str) -> tuple[str, str]:
    m = _TOKEN.fullmatch(plaintext)
    if not m:
        raise Unauthenticated("malformed token: expected sami_<id>_<secret>")
    return m.group(1), m.group(2)


def verify(record: TokenRecord | None, secret: str, now: float) -> Principal:
    # Same message for unknown, wrong, revoked and expired tokens would hide useful
    # information from the operator; the token id is not secret, so we say which.
    if record is None or not hmac.compare_digest(record.secret_hash, hash_secret(secret)):
        raise Unauthenticated(
            "unknown or invalid token: create one with `sami-control token create`"
        )
    if record.revoked_at:
        raise Unauthenticated(f"token {record.id} ({record.name}) was revoked")
    if record.expires_at and record.expires_at <= now:
        raise Unauthenticated(f"token {record.id} ({record.name}) has expired")
    return Principal(
        token_id=record.id,
        name=record.name,
        role=record.role,
        cluster=record.cluster,
        services=tuple(record.services),
        environments=tuple(record.environments),
        expires_at=record.expires_at,
    )
