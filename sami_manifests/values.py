"""Small value grammars: names, durations, cron schedules, paths inside a folder."""

from __future__ import annotations

import re

from sami_common import cron, durations

# A service, cluster or folder name: a DNS label (what Swarm accepts in service names).
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# A stack name: Swarm prefixes every service, network and volume of the stack with
# `<stack>_`, so it stays a lowercase DNS-label-like word; `_` is allowed (the defaults use it).
STACK_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
SWARM_NAME_MAX = 63


def is_valid_name(name: str) -> bool:
    return bool(NAME_RE.fullmatch(name))


def is_valid_stack_name(name: str) -> bool:
    return bool(STACK_NAME_RE.fullmatch(name))


# --- durations -----------------------------------------------------------------------------


def parse_sami_duration(value: object) -> int:
    """A manifest duration: whole seconds (an int), or text in Sami's one duration grammar
    (sami_common.durations: "300", "90s", "5m", "1h30m"), as the CLI's flags read it.

    Raises ValueError with a message meant for the user.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected seconds or a duration like '90s' or '5m', got {value!r}")
    if isinstance(value, int):
        return value
    seconds = durations.parse_seconds(value)  # a DurationError is a ValueError
    if seconds != int(seconds):
        raise ValueError(f"duration {value!r} is not a whole number of seconds")
    return int(seconds)


def format_seconds(seconds: float) -> str:
    """90 -> "1m30s", 7200 -> "2h", 1.5 -> "1.5s" (readable by compose and by Sami)."""
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(value: str) -> float:
    """A compose-file duration (Go syntax: "30s", "1m30s", "1.5s", "500ms"), in seconds."""
    text = value.strip()
    if text == "0":
        return 0.0
    if not text:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    while pos < len(text):
        match = _GO_PART_RE.match(text, pos)
        if match is None:
            raise ValueError(f"cannot read duration {value!r}")
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return total


# --- cron ----------------------------------------------------------------------------------

# The grammar lives in sami_common.cron, shared with the agent's scheduler: what lint accepts
# is exactly what the agent runs.


def cron_error(expression: str) -> str | None:
    """Why `expression` is not a 5-field cron schedule, or None when it is one.

    Fields: minute hour day-of-month month day-of-week, each `*`, `n`, `a-b`, with an
    optional `/step`, comma-separated; months and weekdays also by name (jan, mon); the
    macros @hourly, @daily, @weekly, @monthly, @yearly are accepted.
    """
    try:
        cron.parse(expression)
    except ValueError as exc:
        return str(exc)
    return None


# --- paths ---------------------------------------------------------------------------------

# Line and paragraph separators and bidirectional controls: a path holding one can display
# as another path (or as two lines) in a terminal, a log or a code review.
_INVISIBLE_RE = re.compile("[\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def invisible_char_error(path: str) -> str | None:
    """Why `path` holds a character that changes how it displays, or None."""
    found = _INVISIBLE_RE.search(path)
    if found is None:
        return None
    return (
        f"the path contains U+{ord(found.group()):04X} (a line separator or bidirectional "
        "control, which can make a path display as another): rename the file"
    )


def relative_path_error(path: str) -> str | None:
    """Why `path` is not a plain relative path that stays inside its folder, or None."""
    if not path:
        return "the path is empty"
    if "\x00" in path:
        return "the path contains a NUL character"
    if invisible := invisible_char_error(path):
        return invisible
    if "\\" in path:
        return f"{path!r} uses backslashes"
    if path.startswith("/"):
        return f"{path!r} is absolute"
    if re.match(r"^[A-Za-z]:", path):
        return f"{path!r} is absolute"
    if ".." in path.split("/"):
        return f"{path!r} goes up with '..'"
    return None


def normalize_relative(path: str) -> str:
    """Drop `.` and empty segments: "./a//b.yml" -> "a/b.yml"."""
    return "/".join(seg for seg in path.split("/") if seg not in ("", "."))
