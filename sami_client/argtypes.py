"""Argument types shared by the `sami` commands: each turns text into a value or raises
argparse.ArgumentTypeError with a message that says what was expected. Also how a list
command applies its `--limit` (`page_size`, `take`)."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterable
from typing import TypeVar

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


def seconds(text: str) -> float:
    """`--timeout S`: seconds; 0 means no limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return value


def page_size(limit: int) -> int:
    """The page size to ask for with `--limit N`: no more than N, at most 100."""
    return min(limit, 100) if limit else 100


def take(items: Iterable[T], limit: int) -> list[T]:
    """The first `limit` items (0: all)."""
    return list(itertools.islice(items, limit) if limit else items)
