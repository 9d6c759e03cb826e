"""Argument types shared by the `sami` commands: each turns text into a value or raises
argparse.ArgumentTypeError with a message that says what was expected."""

from __future__ import annotations

import argparse


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
