"""How problems name things: the choice a misspelt word was meant to be, and a YAML value's
type in words."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any


def closest(word: str, choices: Collection[str]) -> str | None:
    """The choice `word` was most likely meant to be (difflib), or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """ ": did you mean 'x'?" when a choice is close to `word`, else ""."""
    close = closest(word, choices)
    return f": did you mean {close!r}?" if close else ""


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
