"""Page tokens: opaque to clients, a position in storage order to us."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import TypeVar

from sami_control.core.errors import InvalidArgument

MAX_PAGE = 500
DEFAULT_PAGE = 50
# The largest position a token may hold: SQLite's integers are 64-bit signed.
MAX_POSITION = 2**63 - 1

T = TypeVar("T")


def page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode()


def cut(rows: Sequence[T], limit: int, position: Callable[[T], int]) -> tuple[list[T], str]:
    """A page of `rows` (read with one more than `limit`, to know whether there is more):
    its first `limit` rows, and the token of the next page ("" when this is the last)."""
    nxt = page_token(position(rows[limit - 1])) if len(rows) > limit else ""
    return list(rows[:limit]), nxt


def parse_page(token: str, size: int, first: int = 2**62) -> tuple[int, int]:
    """(position to read before, page size) from a request's page_token and page_size.
    For lists read oldest first, pass `first=0`: the position is then the one to read after."""
    if size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    limit = min(size or DEFAULT_PAGE, MAX_PAGE)
    if not token:
        return first, limit
    bad = InvalidArgument("page_token", "is not a token this server issued")
    if len(token) > 100 or not token.isascii():
        raise bad
    try:
        prefix, seq = base64.urlsafe_b64decode(token.encode()).decode().split(":")
    except ValueError:  # not base64, not UTF-8, not one colon
        raise bad from None
    # Only what page_token() makes: digits (no sign, space or underscore, which int()
    # accepts) of a position storage can hold; a 70-digit number reached SQLite and came
    # back as INTERNAL.
    if prefix != "v1" or not (seq.isascii() and seq.isdigit()) or int(seq) > MAX_POSITION:
        raise bad
    return int(seq), limit
