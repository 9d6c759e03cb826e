"""Argument types shared by the `sami` commands: each turns text into a value or raises
argparse.ArgumentTypeError with a message that says what was expected. Also how a list
command applies its `--limit` (`page_size`, `take`)."""

from __future__ import annotations

import argparse
import datetime
import itertools
from collections.abc import Iterable
from typing import TypeVar

from sami_common import durations

T = TypeVar("T")


def limit(text: str) -> int:
    """`--limit N`: a whole number; 0 means all."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (all) or more")
    return value


def duration(text: str) -> float:
    """`--timeout 15m`, `--expires-in 90d`: a duration in seconds (sami_common.durations:
    `90`, `90s`, `15m`, `1h30m`, `1d2h`); 0 means no limit."""
    try:
        return durations.parse_seconds(text)
    except durations.DurationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def since(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """`--since 1d2h` (that long ago) or an ISO 8601 time (UTC unless it says otherwise)."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        return now - datetime.timedelta(seconds=durations.parse_seconds(text))
    except durations.DurationError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration ago ({durations.EXAMPLES}) nor an ISO time "
            "(2026-01-31T12:00)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def page_size(limit: int) -> int:
    """The page size to ask for with `--limit N`: no more than N, at most 100."""
    return min(limit, 100) if limit else 100


def take(items: Iterable[T], limit: int) -> list[T]:
    """The first `limit` items (0: all)."""
    return list(itertools.islice(items, limit) if limit else items)
