"""Page tokens: opaque to clients, a position in storage order to us."""

from __future__ import annotations

import base64

from sami_control.core.errors import InvalidArgument

MAX_PAGE = 500
DEFAULT_PAGE = 50


def page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode()


def parse_page(token: str, size: int, first: int = 2**62) -> tuple[int, int]:
    """(position to read before, page size) from a request's page_token and page_size.
    For lists read oldest first, pass `first=0`: the position is then the one to read after."""
    if size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    limit = min(size or DEFAULT_PAGE, MAX_PAGE)
    if not token:
        return first, limit
    if len(token) > 100:
        raise InvalidArgument("page_token", "is not a token this server issued")
    try:
        prefix, seq = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if prefix != "v1":
            raise ValueError(prefix)
        return int(seq), limit
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this server issued") from None
