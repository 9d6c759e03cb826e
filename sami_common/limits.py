"""The limits the control plane enforces on free text an agent sends, and how an agent
cleans its text to fit them.

Both sides import these: the control plane refuses a cron run that breaks them (and a
refused report is lost: a refused Result once left its deployment IN_PROGRESS for good), so
the agent cleans every text field it sends with `clean_text` to something the control plane
accepts; the control plane cleans progress and results with it too, rather than refusing.
Lengths count characters (code points), as the control plane's checks do.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "MAX_CAPABILITIES",
    "MAX_CAPABILITY",
    "MAX_CRON_MESSAGE",
    "MAX_CRON_SCHEDULE",
    "MAX_LEASES_PER_MESSAGE",
    "MAX_LIVE_TEXT",
    "MAX_PHASE",
    "MAX_PROGRESS_MESSAGE",
    "MAX_REASON",
    "MAX_VERSION",
    "clean_text",
    "first_refused",
]

# Progress.phase (`pull`, `apply`, `converge`…) and Progress.message (one CI log line).
MAX_PHASE = 64
MAX_PROGRESS_MESSAGE = 4000
# Result.reason: why a deployment ended as it did.
MAX_REASON = 4000
# CronRun.message (what a cron job's run did) and CronRun.schedule (its label).
MAX_CRON_MESSAGE = 4000
MAX_CRON_SCHEDULE = 200
# Hello.version and each of Hello.capabilities.
MAX_VERSION = 100
MAX_CAPABILITY = 50
# Each text field of a LiveStatus service (Swarm's update message, what changed by hand;
# the control plane cuts every field of it to this).
MAX_LIVE_TEXT = 512
# Capabilities in a Hello, and leases in a Hello or a Heartbeat: a message with more is
# refused whole (never cut: the control plane would act on part of what the agent holds).
MAX_CAPABILITIES = 32
MAX_LEASES_PER_MESSAGE = 1000

# Unicode categories refused in free text: control (Cc), format (Cf: zero-width and bidi
# controls, which can make a log line or a listing say something else than it shows),
# surrogate (Cs), private use (Co), unassigned (Cn), and the line and paragraph separators
# (Zl, Zp: U+2028, U+2029), which split a line for some readers and not for others.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Allowed although it is a control character: a tab is harmless in a log line.
ALLOWED_CONTROLS = frozenset("\t")
ELLIPSIS = "…"
_ESCAPES = {"\n": "\\n", "\r": "\\r"}


def refused(ch: str) -> bool:
    """Whether the control plane refuses the character `ch` in free text."""
    return ch not in ALLOWED_CONTROLS and unicodedata.category(ch) in REFUSED_CATEGORIES


def first_refused(value: str) -> str | None:
    """The first character of `value` that free text may not hold, or None."""
    if value.isprintable():  # the common case: no character of the refused categories
        return None
    return next((ch for ch in value if refused(ch)), None)


def _escaped(ch: str) -> str:
    """A refused character spelled out as Python would (`\\n`, `\\x1b`, `\\u202e`)."""
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def clean_text(value: str, limit: int) -> str:
    """`value` as free text the control plane accepts: each refused character escaped
    (a line break becomes `\\n`), and the whole cut to at most `limit` characters, ending
    with an ellipsis when something was cut. Cleaning cleaned text changes nothing."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if len(value) <= limit and value.isprintable():
        return value
    # Escaping only lengthens: no character past limit + 1 can make it into the result,
    # so a huge value costs no more than a short one.
    pieces = [_escaped(ch) if refused(ch) else ch for ch in value[: limit + 1]]
    if len(value) <= limit and sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    size = 0
    for piece in pieces:  # whole pieces only: an escape is never cut in half
        if size + len(piece) > limit - len(ELLIPSIS):
            break
        kept.append(piece)
        size += len(piece)
    return "".join(kept) + ELLIPSIS
