"""When a schedule is due: a cron string in an IANA time zone, or a fixed interval; and
the run id of each due time. Pure functions (``scheduler/cron.py`` decides what runs).

Due times, and daylight saving time (the rule):

* A cron's due times are the distinct *wall-clock* times the cron names in its zone, each
  due once, at the first instant the zone shows it.
* A wall-clock time skipped by a spring-forward gap is due once, at the instant the gap
  ends (02:30 on a day Berlin jumps from 02:00 to 03:00 runs at 03:00 CEST); every
  skipped time of one gap, and a time at the gap's end itself, make one due time.
* A wall-clock time repeated by a fall-back is due once, at its first occurrence. So a
  daily ``0 2 * * *`` runs once on the day Berlin repeats 02:00-03:00, and an hourly
  ``0 * * * *`` runs 24 times in that 25-hour day: the second 02:00 is not due again.
* An interval's due times are ``start + k * every`` (k = 0, 1, ...), absolute seconds:
  time zones and DST do not touch them (``tz`` is for crons only).
* Cron due times are never before ``start``. Day of month and day of week combine as
  croniter (and Vixie cron) combine them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]

#: Every interval is at least this long, so that run ids (to the millisecond) differ.
MIN_EVERY = 1.0


@dataclass(frozen=True)
class Timing:
    """When a schedule is due: ``cron`` (5 fields, in ``tz``) or ``every`` seconds from
    ``start``; never before ``start``."""

    cron: str = ""
    every: float = 0.0
    tz: str = "UTC"
    start: float = 0.0


_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (unit, plural, low, high, names, note) per field
_FIELDS: tuple[tuple[str, str, int, int, tuple[str, ...], str], ...] = (
    ("minute", "minutes", 0, 59, (), ""),
    ("hour", "hours", 0, 23, (), ""),
    ("day of the month", "days of the month", 1, 31, (), ""),
    (
        "month",
        "months",
        1,
        12,
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        " or jan-dec",
    ),
    (
        "day of the week",
        "days of the week",
        0,
        7,
        ("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
        " or sun-sat (0 and 7 are Sunday)",
    ),
)
_NAIVE_PROBE = datetime(2026, 1, 1)


def _expand(cron: str) -> str:
    text = " ".join(cron.split())
    return _MACROS.get(text.lower(), text)


def _bad_token(item: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    """The part of one list item of a field that is out of range, if plainly so."""
    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) < 1):
        return item
    for end in base.split("-"):
        if end.isdigit() and not low <= int(end) <= high:
            return end
        if end.isalpha() and len(end) == 3 and names and end.lower() not in names:
            return end
    return None


def _check_cron(cron: str) -> str:
    expr = _expand(cron)
    fields = expr.split(" ")
    count = len(fields) if expr else 0
    if count != 5:
        raise ValueError(
            f"cron '{cron}' has {count} field{'s' if count != 1 else ''}: it needs 5 "
            "(minute, hour, day of the month, month, day of the week)"
        )
    for i, (value, (unit, plural, low, high, names, note)) in enumerate(
        zip(fields, _FIELDS, strict=True)
    ):
        bad = next(
            (b for item in value.split(",") if (b := _bad_token(item, low, high, names))), None
        )
        alone = " ".join(value if j == i else "*" for j in range(5))
        if bad is None and not _croniter_accepts(alone):
            bad = value
        if bad is not None:
            raise ValueError(
                f"'{bad}' is not a valid {unit} in cron '{cron}': {plural} are {low}-{high}{note}"
            )
    if not _croniter_accepts(expr):
        raise ValueError(f"cron '{cron}' is not a valid cron expression")
    try:
        croniter(expr, _NAIVE_PROBE).get_next(datetime)
    except Exception:
        raise ValueError(f"cron '{cron}' never comes due") from None
    return expr


def _croniter_accepts(expr: str) -> bool:
    try:
        croniter(expr, _NAIVE_PROBE)
    except Exception:
        return False
    return True


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"'{tz}' is not an IANA time zone, such as 'Europe/Berlin'") from None


def check_timing(t: Timing) -> Timing:
    """``t`` if it is a valid timing, else ``ValueError`` with one sentence that quotes
    the bad part."""
    if bool(t.cron.strip()) == bool(t.every):
        which = "both were given" if t.every else "neither was given"
        raise ValueError(f"a schedule needs exactly one of cron or every: {which}")
    _zone(t.tz)
    if not math.isfinite(t.start):
        raise ValueError(f"start={t.start} is not a time")
    if t.every:
        if not (math.isfinite(t.every) and t.every >= MIN_EVERY):
            raise ValueError(
                f"every={t.every:g} is not a valid interval: it is at least {MIN_EVERY:g} second"
            )
    else:
        _check_cron(t.cron)
    return t


class DueTimes:
    """A checked timing's due instants."""

    def after(self, x: float) -> float | None:
        """The first due time after ``x``, or None if there is none."""
        raise NotImplementedError

    def last(self, x: float) -> float | None:
        """The last due time at or before ``x``, or None."""
        raise NotImplementedError

    def before(self, x: float) -> float | None:
        """The last due time before ``x``, or None."""
        raise NotImplementedError


class _Interval(DueTimes):
    def __init__(self, t: Timing) -> None:
        self.start, self.every = t.start, t.every

    def _at(self, k: int) -> float:
        return self.start + k * self.every

    def _k_le(self, x: float) -> int:
        """The largest k with ``_at(k) <= x`` (-1 if none)."""
        if x < self.start:
            return -1
        k = math.floor((x - self.start) / self.every)
        while k >= 0 and self._at(k) > x:
            k -= 1
        while self._at(k + 1) <= x:
            k += 1
        return k

    def after(self, x: float) -> float | None:
        return self._at(self._k_le(x) + 1)

    def last(self, x: float) -> float | None:
        k = self._k_le(x)
        return self._at(k) if k >= 0 else None

    def before(self, x: float) -> float | None:
        k = self._k_le(x)
        if k >= 0 and self._at(k) == x:
            k -= 1
        return self._at(k) if k >= 0 else None


_STEPS = 10_000  # croniter steps one search takes at most (a DST fold costs at most 60)


class _Cron(DueTimes):
    """Cron due times: croniter walks naive wall-clock times; ``_instant`` places each in
    the zone by the DST rule. Due times are whole seconds."""

    def __init__(self, t: Timing) -> None:
        self.expr = _expand(t.cron)
        self.zone = _zone(t.tz)
        self.start = t.start

    def _instant(self, wall: datetime) -> int:
        first = wall.replace(tzinfo=self.zone).timestamp()
        second = wall.replace(tzinfo=self.zone, fold=1).timestamp()
        if first <= second:  # an ordinary time, or the first of a repeated one
            return int(first)
        # In a spring-forward gap: the instant the gap ends is in (second, first].
        after = wall.replace(tzinfo=self.zone, fold=1).utcoffset()
        lo, hi = int(second), int(first)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.zone).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return hi

    def after(self, x: float) -> float | None:
        lo = max(math.floor(x), math.ceil(self.start) - 1)  # due > lo <=> due > x, >= start
        it = croniter(self.expr, datetime.fromtimestamp(lo, self.zone).replace(tzinfo=None))
        try:
            for _ in range(_STEPS):
                due = self._instant(it.get_next(datetime))
                if due > lo:  # in a repeated hour's second pass, earlier ones are not
                    return float(due)
        except Exception:  # croniter found no next date within its bound
            return None
        return None

    def last(self, x: float) -> float | None:
        return self.before(math.floor(x) + 1)

    def before(self, x: float) -> float | None:
        hi = math.ceil(x)  # due < hi <=> due < x
        at = datetime.fromtimestamp(hi, self.zone)
        wall = at.replace(tzinfo=None)
        if at.fold:  # a repeated time's second pass: the first passes of later times are earlier
            shift = at.replace(fold=0).utcoffset() - at.utcoffset()  # type: ignore[operator]
            wall += shift
        it = croniter(self.expr, wall)
        try:
            for _ in range(_STEPS):
                due = self._instant(it.get_prev(datetime))
                if due < self.start:
                    return None
                if due < hi:
                    return float(due)
        except Exception:
            return None
        return None


def times_of(t: Timing) -> DueTimes:
    return _Interval(t) if t.every else _Cron(t)


def due_times(t: Timing, after: float, until: float) -> list[float]:
    """The due times of ``t`` in ``(after, until]``, in order, by the DST rule."""
    check_timing(t)
    times, out = times_of(t), []
    due = times.after(after)
    while due is not None and due <= until:
        out.append(due)
        due = times.after(due)
    return out


def next_due(t: Timing, after: float) -> float:
    """The first due time of ``t`` after ``after`` (``ValueError`` if it never comes)."""
    due = times_of(check_timing(t)).after(after)
    if due is None:
        raise ValueError(f"the schedule has no due time after {after}")
    return due


def run_id(schedule: str, due: float) -> str:
    """The id of a schedule's run for a due time: the schedule's name and the due time in
    UTC (``NAME-20260329T010000Z``; with milliseconds where the due time has a fraction
    of a second: ``NAME-20260329T010000.250Z``). Deterministic, and unique per
    ``(schedule, due)`` for due times at least a millisecond apart."""
    ms = math.floor(due * 1000)
    moment = datetime.fromtimestamp(ms // 1000, timezone.utc)
    text = moment.strftime("%Y%m%dT%H%M%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return f"{schedule}-{text}Z"
