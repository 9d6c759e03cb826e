"""Cron schedules: the 5-field grammar of sami.yaml's `cron.schedule`, and when one fires.

One grammar for both sides: `sami manifests lint` and sami-control validate a schedule with
`parse()` (through `sami_manifests.values.cron_error`), and the agent's scheduler
asks the parsed `Schedule` when the job is due.

    minute hour day-of-month month day-of-week

Each field is `*`, a number, a range `a-b`, a list `a,b`, a step `*/n`, `a-b/n` or `a/n`
(from a to the field's maximum, every n); months and weekdays also by name (`jan`, `mon-fri`,
case-insensitive); weekday 0 and 7 are both Sunday. The macros `@hourly`, `@daily` (or
`@midnight`), `@weekly`, `@monthly` and `@yearly` (or `@annually`) stand for the usual
expressions.

Days follow Vixie cron: when both day-of-month and day-of-week are restricted (neither
starts with `*`), a day matches when *either* matches (`0 0 1 * mon`: the 1st of the month
and every Monday); otherwise both must.

Times are seconds since the epoch and schedules are evaluated in **UTC**: every manager of
a swarm agrees on it, whatever its local time zone. Granularity is the minute.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

__all__ = ["CRON_MACROS", "Schedule", "parse"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names) of each field, in order.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(_WEEKDAYS)}),
)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_MACROS = tuple(_MACROS)
# How far `latest` and `next_after` look: a schedule that never fires (`0 0 30 2 *`, the
# 30th of February) is valid syntax, and must not make them search forever.
HORIZON = 5 * 366 * 86400.0
_DAY = 86400
_HOUR = 3600


@dataclass(frozen=True)
class Schedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    day_star: bool  # the day-of-month field starts with `*`
    weekday_star: bool

    def day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        if self.day_star or self.weekday_star:
            return by_date and by_weekday
        return by_date or by_weekday

    def matches(self, when: float) -> bool:
        """Whether the schedule fires in the minute holding `when`."""
        t = _utc(when)
        return self.day_matches(t.date()) and t.hour in self.hours and t.minute in self.minutes

    def latest(self, at: float, after: float = -math.inf) -> float | None:
        """The latest time the schedule fires that is `<= at` and `> after` (the start of
        that minute), or None when there is none (within HORIZON)."""
        t = math.floor(at / 60) * 60
        limit = max(after, at - HORIZON)
        while t > limit:
            dt = _utc(t)
            day_start = t - (dt.hour * _HOUR + dt.minute * 60)
            hour_start = t - dt.minute * 60
            if not self.day_matches(dt.date()):
                t = day_start - 60  # the last minute of the day before
                continue
            if dt.hour not in self.hours:
                t = hour_start - 60
                continue
            minute = max((m for m in self.minutes if m <= dt.minute), default=None)
            if minute is None:
                t = hour_start - 60
                continue
            found = hour_start + minute * 60
            return float(found) if found > limit else None
        return None

    def next_after(self, after: float) -> float | None:
        """The first time the schedule fires that is `> after` (the start of that minute),
        or None when there is none (within HORIZON)."""
        t = math.floor(after / 60) * 60 + 60
        end = after + HORIZON
        while t <= end:
            dt = _utc(t)
            day_start = t - (dt.hour * _HOUR + dt.minute * 60)
            hour_start = t - dt.minute * 60
            if not self.day_matches(dt.date()):
                t = day_start + _DAY
                continue
            if dt.hour not in self.hours:
                t = hour_start + _HOUR
                continue
            minute = min((m for m in self.minutes if m >= dt.minute), default=None)
            if minute is None:
                t = hour_start + _HOUR
                continue
            return float(hour_start + minute * 60)
        return None


def _utc(t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t, datetime.UTC)


def parse(expression: str) -> Schedule:
    """The schedule `expression` stands for. Raises ValueError with a message meant for the
    person who wrote it (`minute: 61 is outside 0-59`)."""
    text = expression.strip()
    if text.startswith("@"):
        macro = _MACROS.get(text.lower())
        if macro is None:
            raise ValueError(f"unknown cron macro {text!r}")
        fields = macro.split()
    else:
        fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron schedule has 5 fields (minute hour day month weekday), got {len(fields)}"
        )
    values = [
        _field(raw, name, low, high, names)
        for raw, (name, low, high, names) in zip(fields, _FIELDS, strict=True)
    ]
    weekdays = frozenset(d % 7 for d in values[4])
    return Schedule(
        expression=text,
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        day_star=fields[2].startswith("*"),
        weekday_star=fields[4].startswith("*"),
    )


def _value(token: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(token.lower())
    if value is None:
        if not (token.isascii() and token.isdigit()):
            raise ValueError(f"{name}: {token!r} is not a number")
        value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is outside {low}-{high}")
    return value


def _field(raw: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    found: set[int] = set()
    for part in raw.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise ValueError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
            if step > high:
                raise ValueError(f"{name}: step {step} is larger than {high}")
        if base == "*":
            first, last = low, high
        else:
            start, dash, end = base.partition("-")
            first = _value(start, name, low, high, names)
            if dash:
                last = _value(end, name, low, high, names)
                if last < first:
                    raise ValueError(f"{name}: range {base!r} runs backwards")
            elif slash:
                last = high  # `5/15`: from 5, every 15
            else:
                last = first
        found.update(range(first, last + 1, step))
    return frozenset(found)
