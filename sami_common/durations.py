"""The one duration grammar of Sami: `90` or `90s`, `15m`, `1h30m`, `1d2h`, `2w`.

A duration is either a plain number of seconds (`90`, `0.5`) or one or more `NUMBER UNIT`
parts with units from largest to smallest, each at most once: `w` (weeks), `d` (days), `h`,
`m`, `s`. Parts may be fractional (`1.5h`). Pure, with no dependency: the CLI's flags
(`--timeout`, `--expires-in`, `--since`) and the manifests' `converge_timeout` read it alike.
"""

from __future__ import annotations

import re

EXAMPLES = "90, 90s, 15m, 1h30m, 1d2h"

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}

_NUMBER = r"\d+(?:\.\d+)?"
_PLAIN = re.compile(_NUMBER)
# Lower case only: `M` would read as months to some.
_WITH_UNITS = re.compile("".join(f"(?:(?P<{unit}>{_NUMBER}){unit})?" for unit in UNITS))


class DurationError(ValueError):
    """The text is not a duration; the message names it and shows the grammar."""

    def __init__(self, text: str) -> None:
        super().__init__(
            f"{text!r} is not a duration: give seconds (90) or amounts with units "
            f"w, d, h, m, s from largest to smallest, e.g. {EXAMPLES}"
        )
        self.text = text


def parse_seconds(text: str) -> float:
    """The number of seconds `text` stands for (0 or more); raises DurationError."""
    stripped = text.strip()
    if _PLAIN.fullmatch(stripped):
        return float(stripped)
    match = _WITH_UNITS.fullmatch(stripped)
    if not stripped or match is None:
        raise DurationError(text)
    parts = {unit: amount for unit, amount in match.groupdict().items() if amount}
    return sum(float(amount) * UNITS[unit] for unit, amount in parts.items())


def format_seconds(seconds: float) -> str:
    """`5400` -> `1h30m`: the shortest way to write a whole number of seconds in the grammar
    (fractions stay plain seconds, `0.5s`)."""
    if seconds != int(seconds) or seconds <= 0:
        return f"{seconds:g}s"
    rest = int(seconds)
    parts = []
    for unit, size in UNITS.items():
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
