"""When a cron schedule fires (sami_common.cron): the grammar lint validates is the one the
agent's scheduler runs, minute by minute, in UTC."""

from __future__ import annotations

import datetime
import random

import pytest

from sami_common import cron
from sami_manifests.values import cron_error


def t(text: str) -> float:
    """An ISO time (UTC) as seconds since the epoch."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def test_fields_lists_ranges_steps_and_names() -> None:
    s = cron.parse("5/15 8-18/5 1,15 jan-mar,dec mon-fri")
    assert sorted(s.minutes) == [5, 20, 35, 50]
    assert sorted(s.hours) == [8, 13, 18]
    assert sorted(s.days) == [1, 15]
    assert sorted(s.months) == [1, 2, 3, 12]
    assert sorted(s.weekdays) == [1, 2, 3, 4, 5]
    assert sorted(cron.parse("* * * * 0,7").weekdays) == [0]  # both are Sunday
    assert sorted(cron.parse("*/20 * * * SUN").minutes) == [0, 20, 40]


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@ANNUALLY", "0 0 1 1 *"),
    ],
)
def test_macros(macro: str, same_as: str) -> None:
    a, b = cron.parse(macro), cron.parse(same_as)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays) == (
        b.minutes,
        b.hours,
        b.days,
        b.months,
        b.weekdays,
    )


def test_matches_in_utc() -> None:
    s = cron.parse("30 2 * * *")
    assert s.matches(t("2026-03-01T02:30:59"))
    assert not s.matches(t("2026-03-01T02:31:00"))
    assert not s.matches(t("2026-03-01T03:30:00"))


@pytest.mark.parametrize(
    ("expression", "at", "after", "latest"),
    [
        ("* * * * *", "2026-01-01T10:07:30", None, "2026-01-01 10:07"),
        ("*/15 * * * *", "2026-01-01T10:07:30", None, "2026-01-01 10:00"),
        ("*/15 * * * *", "2026-01-01T10:15:00", None, "2026-01-01 10:15"),
        # Nothing after `after` (exclusive): the 10:00 run was already started.
        ("*/15 * * * *", "2026-01-01T10:07:30", "2026-01-01T10:00:00", None),
        ("*/15 * * * *", "2026-01-01T10:16:00", "2026-01-01T10:00:00", "2026-01-01 10:15"),
        ("30 2 * * *", "2026-01-01T01:00:00", None, "2025-12-31 02:30"),
        ("0 0 1 * *", "2026-03-15T12:00:00", None, "2026-03-01 00:00"),
        ("0 0 29 2 *", "2027-06-01T00:00:00", None, "2024-02-29 00:00"),
        ("0 9 * * mon", "2026-01-01T00:00:00", None, "2025-12-29 09:00"),  # Jan 1 is a Thursday
        ("0 0 30 2 *", "2026-01-01T00:00:00", None, None),  # never fires
    ],
)
def test_latest(expression: str, at: str, after: str | None, latest: str | None) -> None:
    found = cron.parse(expression).latest(t(at), t(after) if after else float("-inf"))
    assert iso(found) == latest


@pytest.mark.parametrize(
    ("expression", "after", "following"),
    [
        ("* * * * *", "2026-01-01T10:07:30", "2026-01-01 10:08"),
        ("*/15 * * * *", "2026-01-01T10:15:00", "2026-01-01 10:30"),
        ("30 2 * * *", "2026-12-31T03:00:00", "2027-01-01 02:30"),
        ("0 0 1 * *", "2026-01-15T00:00:00", "2026-02-01 00:00"),
        ("0 0 29 2 *", "2026-01-01T00:00:00", "2028-02-29 00:00"),
        ("0 0 30 2 *", "2026-01-01T00:00:00", None),
    ],
)
def test_next_after(expression: str, after: str, following: str | None) -> None:
    assert iso(cron.parse(expression).next_after(t(after))) == following


def test_days_follow_vixie_cron() -> None:
    # Both restricted: either matches (the 1st, and every Monday).
    either = cron.parse("0 0 1 * mon")
    fired = [iso(x) for x in _between(either, "2026-01-01T00:00", "2026-02-03T00:00")]
    assert fired == [
        "2026-01-01 00:00",  # a Thursday, the 1st
        "2026-01-05 00:00",
        "2026-01-12 00:00",
        "2026-01-19 00:00",
        "2026-01-26 00:00",
        "2026-02-01 00:00",  # a Sunday, the 1st
        "2026-02-02 00:00",
    ]
    # A field that starts with `*` is not a restriction: both must match.
    both = cron.parse("0 0 */10 * mon")
    mondays = [iso(x) for x in _between(both, "2026-01-01T00:00", "2026-12-31T00:00")]
    assert mondays == [  # the Mondays that are the 1st, 11th, 21st or 31st
        "2026-05-11 00:00",
        "2026-06-01 00:00",
        "2026-08-31 00:00",
        "2026-09-21 00:00",
        "2026-12-21 00:00",
    ]


def _between(s: cron.Schedule, start: str, end: str) -> list[float]:
    found, x = [], t(start) - 1
    while (x := s.next_after(x)) is not None and x < t(end):  # type: ignore[assignment]
        found.append(x)
    return found


EXPRESSIONS = [
    "* * * * *",
    "*/7 * * * *",
    "5/15 3-20/4 * * *",
    "0 0 * * 0",
    "15,45 */6 1-7 * mon-fri",
    "0 12 1,15 jan,jul *",
    "59 23 31 * *",
    "0 0 */10 * mon",
    "0 0 1 * mon",
    "@hourly",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_latest_and_next_agree_with_a_minute_by_minute_scan(expression: str) -> None:
    s = cron.parse(expression)
    rng = random.Random(expression)
    for _ in range(5):
        start = t("2026-01-01T00:00:00") + rng.randrange(0, 400 * 86400)
        at = start + rng.randrange(0, 3 * 86400) + rng.random() * 60
        scan = [m for m in range(int(start) // 60 * 60, int(at) + 1, 60) if s.matches(m)]
        expected_latest = next((float(m) for m in reversed(scan) if start < m <= at), None)
        assert s.latest(at, start) == expected_latest
        ahead = [m for m in range(int(at) // 60 * 60 + 60, int(at) + 3 * 86400, 60)]
        expected_next = next((float(m) for m in ahead if s.matches(m)), None)
        if expected_next is not None:
            assert s.next_after(at) == expected_next


@pytest.mark.parametrize(
    "expression",
    ["* * * * *", "61 * * * *", "* * * * 8", "@reboot", "*/0 * * * *", "10-5 * * * *", "a b"],
)
def test_lint_and_the_scheduler_share_one_grammar(expression: str) -> None:
    try:
        cron.parse(expression)
    except ValueError as exc:
        assert cron_error(expression) == str(exc)
    else:
        assert cron_error(expression) is None


def test_non_ascii_digits_are_not_numbers() -> None:
    with pytest.raises(ValueError, match="is not a number"):
        cron.parse("\u0661 * * * *")  # ARABIC-INDIC DIGIT ONE
