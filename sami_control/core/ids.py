"""Identifiers: random, prefixed by kind so a misplaced id is obvious in a log."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
