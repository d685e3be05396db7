"""Scheduled notebooks' decisions (scheduler/cron.py), fed events with a fake clock.

The first tests check timings (their errors, DST in Europe/Berlin and America/New_York,
intervals); then one path each through the scheduler (overlap, catch-up, retries, manual
runs, pause, removal, restarts); the property test at the end feeds random histories,
restarts included, and checks the invariants after every step and at the end.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remotecell.backend.scheduler.cron import (
    Advanced,
    Instruction,
    Paused,
    Policy,
    Resumed,
    Retrying,
    RunEnded,
    RunNow,
    RunOver,
    RunRestored,
    RunStarted,
    Scheduler,
    ScheduleRemoved,
    ScheduleSet,
    Skipped,
    StartRun,
    Tick,
    Timing,
    backoff,
    check_policy,
    check_timing,
    due_times,
    next_due,
    run_id,
)


def utc(text: str) -> float:
    """A POSIX time from an ISO time in UTC ("2026-03-29T01:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def walls(times: list[float], tz: str) -> list[str]:
    """Due times as the zone's clock shows them, with the UTC offset."""
    zone = ZoneInfo(tz)
    return [datetime.fromtimestamp(t, zone).strftime("%m-%d %H:%M%z") for t in times]


def of(kind: type, out: list) -> list:
    return [i for i in out if isinstance(i, kind)]


# ---------------------------------------------------------------- timings


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        (
            Timing(cron="61 * * * *"),
            "'61' is not a valid minute in cron '61 * * * *': minutes are 0-59",
        ),
        (
            Timing(cron="0 24 * * *"),
            "'24' is not a valid hour in cron '0 24 * * *': hours are 0-23",
        ),
        (
            Timing(cron="0 0 1,32 * *"),
            "'32' is not a valid day of the month in cron '0 0 1,32 * *': days of the month are 1-31",
        ),
        (
            Timing(cron="0 0 * 13 *"),
            "'13' is not a valid month in cron '0 0 * 13 *': months are 1-12 or jan-dec",
        ),
        (Timing(cron="0 0 * * funday"), "'funday' is not a valid day of the week in cron"),
        (Timing(cron="*/0 * * * *"), "'*/0' is not a valid minute in cron '*/0 * * * *'"),
        (Timing(cron="x * * * *"), "'x' is not a valid minute in cron 'x * * * *'"),
        (Timing(cron="0 0 * * * *"), "cron '0 0 * * * *' has 6 fields: it needs 5"),
        (Timing(cron="0 0 31 2 *"), "cron '0 0 31 2 *' never comes due"),
        (
            Timing(cron="0 3 * * *", tz="Mars/Base"),
            "'Mars/Base' is not an IANA time zone, such as 'Europe/Berlin'",
        ),
        (Timing(every=60.0, tz=""), "'' is not an IANA time zone"),
        (Timing(), "a schedule needs exactly one of cron or every: neither was given"),
        (
            Timing(cron="0 3 * * *", every=60.0),
            "a schedule needs exactly one of cron or every: both were given",
        ),
        (Timing(every=0.5), "every=0.5 is not a valid interval: it is at least 1 second"),
        (Timing(every=-60.0), "every=-60 is not a valid interval"),
    ],
)
def test_check_timing_quotes_the_bad_part_in_one_sentence(timing, message):
    with pytest.raises(ValueError) as info:
        check_timing(timing)
    assert str(info.value).startswith(message)
    assert str(info.value).count(". ") == 0


@pytest.mark.parametrize(
    "timing",
    [
        Timing(cron="0 3 * * *", tz="Europe/Berlin"),
        Timing(cron="*/15 9-17 * * mon-fri", tz="America/New_York"),
        Timing(cron="0 0 1 jan,jul *"),
        Timing(cron="@daily"),
        Timing(cron="0 0 L * *"),
        Timing(every=3600.0, start=utc("2026-01-01T00:30")),
    ],
)
def test_check_timing_passes_valid_timings(timing):
    assert check_timing(timing) is timing


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (Policy(overlap="wait"), "overlap 'wait' is not one of skip, queue, allow"),
        (Policy(catch_up="some"), "catch_up 'some' is not one of none, once, all"),
        (Policy(retries=-1), "retries=-1 is not a count"),
        (Policy(retry_delay=-1.0), "retry_delay=-1.0 is not a number of seconds"),
        (Policy(max_catch_up=-2), "max_catch_up=-2 is not a count"),
    ],
)
def test_check_policy_refuses_bad_values(policy, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        check_policy(policy)


# Across each transition of 2026: what each cron's due times are on the zone's clock.
DST_CASES = [
    # Europe/Berlin springs forward on 2026-03-29 at 02:00 CET to 03:00 CEST.
    (
        "0 2 * * *",
        "Europe/Berlin",
        "2026-03-27T12:00",
        "2026-03-31T12:00",
        ["03-28 02:00+0100", "03-29 03:00+0200", "03-30 02:00+0200", "03-31 02:00+0200"],
    ),
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-27T12:00",
        "2026-03-31T12:00",
        ["03-28 02:30+0100", "03-29 03:00+0200", "03-30 02:30+0200", "03-31 02:30+0200"],
    ),
    (
        "0 * * * *",
        "Europe/Berlin",
        "2026-03-28T23:30",
        "2026-03-29T03:00",
        ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200", "03-29 05:00+0200"],
    ),
    (  # the gap's skipped times and 03:00 itself are one due time
        "0,30 2,3 * * *",
        "Europe/Berlin",
        "2026-03-28T23:30",
        "2026-03-29T03:00",
        ["03-29 03:00+0200", "03-29 03:30+0200"],
    ),
    # Europe/Berlin falls back on 2026-10-25 at 03:00 CEST to 02:00 CET.
    (
        "0 2 * * *",
        "Europe/Berlin",
        "2026-10-23T12:00",
        "2026-10-26T12:00",
        ["10-24 02:00+0200", "10-25 02:00+0200", "10-26 02:00+0100"],
    ),
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-23T12:00",
        "2026-10-26T12:00",
        ["10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100"],
    ),
    (  # 02:00 once: the repeated 02:00 CET is not due again
        "0 * * * *",
        "Europe/Berlin",
        "2026-10-24T22:30",
        "2026-10-25T03:00",
        ["10-25 01:00+0200", "10-25 02:00+0200", "10-25 03:00+0100", "10-25 04:00+0100"],
    ),
    # America/New_York springs forward on 2026-03-08 at 02:00 EST to 03:00 EDT.
    (
        "0 2 * * *",
        "America/New_York",
        "2026-03-06T12:00",
        "2026-03-09T12:00",
        ["03-07 02:00-0500", "03-08 03:00-0400", "03-09 02:00-0400"],
    ),
    (
        "30 2 * * *",
        "America/New_York",
        "2026-03-06T12:00",
        "2026-03-09T12:00",
        ["03-07 02:30-0500", "03-08 03:00-0400", "03-09 02:30-0400"],
    ),
    (
        "0 * * * *",
        "America/New_York",
        "2026-03-08T05:30",
        "2026-03-08T09:00",
        ["03-08 01:00-0500", "03-08 03:00-0400", "03-08 04:00-0400", "03-08 05:00-0400"],
    ),
    # America/New_York falls back on 2026-11-01 at 02:00 EDT to 01:00 EST.
    (
        "0 2 * * *",
        "America/New_York",
        "2026-10-30T12:00",
        "2026-11-02T12:00",
        ["10-31 02:00-0400", "11-01 02:00-0500", "11-02 02:00-0500"],
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-30T12:00",
        "2026-11-02T12:00",
        ["10-31 01:30-0400", "11-01 01:30-0400", "11-02 01:30-0500"],
    ),
    (
        "0 * * * *",
        "America/New_York",
        "2026-11-01T03:30",
        "2026-11-01T09:00",
        [
            "11-01 00:00-0400",
            "11-01 01:00-0400",
            "11-01 02:00-0500",
            "11-01 03:00-0500",
            "11-01 04:00-0500",
        ],
    ),
]


@pytest.mark.parametrize(("cron", "tz", "after", "until", "expected"), DST_CASES)
def test_dst_a_skipped_time_runs_once_at_the_gap_end_a_repeated_one_once_at_its_first(
    cron, tz, after, until, expected
):
    t = Timing(cron=cron, tz=tz)
    times = due_times(t, utc(after), utc(until))
    assert walls(times, tz) == expected
    assert times == sorted(set(times))
    # Walking one due time at a time, from any instant, agrees.
    assert [next_due(t, x) for x in [utc(after), *times[:-1]]] == times
    for x in range(int(utc(after)), int(utc(until)), 900):
        expected_next = next(d for d in [*times, next_due(t, utc(until))] if d > x)
        assert next_due(t, x) == expected_next


def test_hourly_cron_over_berlins_fall_back_runs_24_times_in_the_25_hour_day():
    t = Timing(cron="0 * * * *", tz="Europe/Berlin")
    day = due_times(t, utc("2026-10-24T22:00") - 1, utc("2026-10-25T23:00") - 1)
    assert len(day) == 24
    gaps = [b - a for a, b in itertools.pairwise(day)]
    assert gaps.count(7200.0) == 1 and gaps.count(3600.0) == 22


def test_intervals_are_absolute_seconds_from_start_whatever_the_zone():
    start = utc("2026-03-29T00:10")
    t = Timing(every=1800.0, tz="Europe/Berlin", start=start)
    assert due_times(t, start - 1, start + 5400) == [start + k * 1800 for k in range(4)]
    assert due_times(t, start, start + 1800) == [start + 1800]
    assert next_due(t, 0.0) == start
    assert next_due(t, start + 1799.5) == start + 1800
    # A cron is never due before its start either.
    cron = Timing(cron="0 * * * *", start=utc("2026-01-01T05:00"))
    assert next_due(cron, 0.0) == utc("2026-01-01T05:00")


def test_run_ids_are_deterministic_in_utc_and_differ_per_due_time():
    assert run_id("nightly", utc("2026-03-29T01:00")) == "nightly-20260329T010000Z"
    assert run_id("nightly", utc("2026-03-29T01:00") + 0.25) == "nightly-20260329T010000.250Z"
    ids = {run_id("s", d) for d in due_times(Timing(every=1.0, start=0.3), 0, 5000)}
    assert len(ids) == 5000


def test_backoff_doubles_from_retry_delay_up_to_retry_max():
    p = Policy(retry_delay=60.0, retry_max=300.0)
    assert [backoff(p, a) for a in (1, 2, 3, 4, 1000)] == [60.0, 120.0, 240.0, 300.0, 300.0]


# ---------------------------------------------------------------- the scheduler

HOURLY = Timing(cron="0 * * * *")
T0 = utc("2026-05-01T10:30")  # a new schedule is set at T0
H11, H12, H13, H14 = (utc(f"2026-05-01T{h}:00") for h in (11, 12, 13, 14))


def scheduler(policy: Policy | None = None, timing: Timing = HOURLY, name: str = "s") -> Scheduler:
    s = Scheduler()
    assert s.handle(ScheduleSet(name, timing, policy or Policy(), T0)) == [Advanced(name, T0)]
    return s


def start(name: str, due: float, attempt: int = 1) -> StartRun:
    return StartRun(name, run_id(name, due), due, attempt)


def test_a_new_schedule_is_due_only_after_now_and_a_tick_before_the_deadline_does_nothing():
    s = scheduler()
    assert s.schedules() == ["s"]
    assert s.next_deadline() == H11
    assert s.handle(Tick(H11 - 0.001)) == []
    assert s.handle(Tick(H11 + 0.2)) == [start("s", H11), Advanced("s", H11)]
    assert s.runs_active("s") == [run_id("s", H11)]
    assert s.last_due("s") == H11
    assert s.next_deadline() == H12
    assert s.handle(RunStarted(run_id("s", H11), H11 + 1)) == []
    assert s.handle(RunEnded(run_id("s", H11), H11 + 60, ok=True)) == [
        RunOver("s", run_id("s", H11), True, 1)
    ]
    assert s.runs_active("s") == []
    assert s.handle(Tick(H11 + 61)) == []


def test_overlap_skip_skips_a_due_time_while_a_run_is_active():
    s = scheduler(Policy(overlap="skip"))
    s.handle(Tick(H11))
    out = s.handle(Tick(H12))
    assert out == [
        Skipped("s", H12, "a run of the schedule is still active (overlap 'skip')"),
        Advanced("s", H12),
    ]
    s.handle(RunEnded(run_id("s", H11), H12 + 10, ok=True))
    assert s.handle(Tick(H13)) == [start("s", H13), Advanced("s", H13)]


def test_overlap_queue_keeps_one_due_time_and_starts_it_when_the_run_ends():
    s = scheduler(Policy(overlap="queue"))
    s.handle(Tick(H11))
    assert s.handle(Tick(H12)) == []  # queued: last_due stays before it
    assert s.queued("s") == H12
    assert s.last_due("s") == H11
    out = s.handle(Tick(H13))
    assert out == [
        Skipped(
            "s",
            H13,
            "a run of the schedule is active and another due time is queued (overlap 'queue')",
        )
    ]
    assert s.last_due("s") == H11
    out = s.handle(RunEnded(run_id("s", H11), H13 + 5, ok=True))
    assert out == [RunOver("s", run_id("s", H11), True, 1), start("s", H12), Advanced("s", H13)]
    assert s.queued("s") is None


def test_overlap_allow_starts_each_due_time_at_once():
    s = scheduler(Policy(overlap="allow"))
    s.handle(Tick(H11))
    assert s.handle(Tick(H12)) == [start("s", H12), Advanced("s", H12)]
    assert s.runs_active("s") == [run_id("s", H11), run_id("s", H12)]


def test_catch_up_none_skips_the_missed_due_times_and_runs_an_on_time_one():
    s = scheduler(Policy(catch_up="none"))
    out = s.handle(Tick(H13 + 600))  # down from before 11:00 until 13:10
    assert out == [
        Skipped(
            "s",
            H11,
            "it was missed (the control plane was down or late), and catch_up is 'none'",
            H13,
        ),
        Advanced("s", H13),
    ]
    # A due time handled within grace (60 s) is on time.
    assert s.handle(Tick(H14 + 30)) == [start("s", H14), Advanced("s", H14)]


def test_catch_up_once_runs_only_the_latest_missed_due_time():
    s = scheduler()  # once is the default
    out = s.handle(Tick(H13 + 600))
    assert out == [
        Skipped(
            "s", H11, "it was missed, and catch_up 'once' runs only the latest missed due time", H12
        ),
        start("s", H13),
        Advanced("s", H13),
    ]


def test_catch_up_all_runs_each_missed_due_time_in_order_within_max_catch_up():
    s = scheduler(Policy(catch_up="all", overlap="allow"))
    out = s.handle(Tick(H14 + 600))
    assert of(StartRun, out) == [start("s", d) for d in (H11, H12, H13, H14)]
    assert out[-1] == Advanced("s", H14)

    s = scheduler(Policy(catch_up="all", overlap="allow", max_catch_up=2))
    out = s.handle(Tick(H14 + 600))
    assert out[0] == Skipped(
        "s", H11, "it was missed, and catch_up 'all' runs at most the 2 latest (max_catch_up)", H12
    )
    assert of(StartRun, out) == [start("s", H13), start("s", H14)]

    # On time, the latest runs besides max_catch_up missed ones.
    s = scheduler(Policy(catch_up="all", overlap="allow", max_catch_up=1))
    out = s.handle(Tick(H13 + 5))
    assert of(StartRun, out) == [start("s", H12), start("s", H13)]


def test_catch_up_all_still_obeys_overlap():
    s = scheduler(Policy(catch_up="all", overlap="skip"))
    out = s.handle(Tick(H13 + 600))
    assert of(StartRun, out) == [start("s", H11)]
    assert [i.due for i in of(Skipped, out)] == [H12, H13]
    s = scheduler(Policy(catch_up="all", overlap="queue"))
    out = s.handle(Tick(H13 + 600))
    assert of(StartRun, out) == [start("s", H11)]
    assert [i.due for i in of(Skipped, out)] == [H13]
    assert s.queued("s") == H12 and s.last_due("s") == H11


def test_a_failed_run_is_retried_with_the_same_id_after_a_doubling_backoff_then_gives_up():
    s = scheduler(Policy(retries=3, retry_delay=60.0, retry_max=200.0))
    s.handle(Tick(H11))
    rid = run_id("s", H11)
    t = H11 + 10
    assert s.handle(RunEnded(rid, t, ok=False)) == [Retrying("s", rid, 2, t + 60)]
    assert s.next_deadline() == t + 60
    assert s.runs_active("s") == [rid]  # waiting for its retry, it is still active
    assert s.handle(Tick(t + 59)) == []
    assert s.handle(Tick(t + 60)) == [StartRun("s", rid, H11, 2)]
    assert s.handle(RunEnded(rid, t + 70, ok=False, attempt=1)) == []  # a stale attempt
    assert s.handle(RunEnded(rid, t + 70, ok=False)) == [Retrying("s", rid, 3, t + 190)]
    assert s.handle(Tick(t + 190)) == [StartRun("s", rid, H11, 3)]
    # The third backoff would be 240 s: retry_max caps it at 200.
    assert s.handle(RunEnded(rid, t + 200, ok=False)) == [Retrying("s", rid, 4, t + 400)]
    assert s.handle(Tick(t + 400)) == [StartRun("s", rid, H11, 4)]
    assert s.handle(RunEnded(rid, t + 410, ok=False)) == [RunOver("s", rid, False, 4)]
    assert s.runs_active("s") == []
    assert s.next_deadline() == H12


def test_a_run_waiting_for_its_retry_is_active_for_overlap():
    s = scheduler(Policy(retries=1, retry_delay=3600.0))
    s.handle(Tick(H11))
    rid = run_id("s", H11)
    s.handle(RunEnded(rid, H11 + 10, ok=False))
    assert of(Skipped, s.handle(Tick(H12))) == [
        Skipped("s", H12, "a run of the schedule is still active (overlap 'skip')")
    ]
    assert s.handle(Tick(H12 + 10)) == [StartRun("s", rid, H11, 2)]


def test_run_now_always_starts_even_over_an_active_run_or_while_paused():
    s = scheduler(Policy(overlap="skip"))
    s.handle(Tick(H11))
    manual = run_id("s", H11 + 100) + "-manual"
    assert s.handle(RunNow("s", H11 + 100)) == [StartRun("s", manual, H11 + 100, 1)]
    assert s.handle(RunNow("s", H11 + 100)) == [
        Skipped("s", H11 + 100, "a manual run already started at this time")
    ]
    s.handle(Paused("s", H11 + 200))
    assert of(StartRun, s.handle(RunNow("s", H11 + 300))) != []
    assert s.last_due("s") == H11  # a manual run does not move last_due
    assert s.handle(RunNow("nobody", H11 + 300)) == []


def test_resuming_skips_the_due_times_while_paused_and_does_not_catch_up():
    s = scheduler()
    assert s.handle(Paused("s", T0 + 10)) == []
    assert s.next_deadline() is None
    assert s.handle(Tick(H13 + 10)) == []
    out = s.handle(Resumed("s", H13 + 10))
    assert out == [Skipped("s", H11, "the schedule was paused", H13), Advanced("s", H13)]
    assert s.handle(Tick(H14)) == [start("s", H14), Advanced("s", H14)]


def test_pausing_drops_a_queued_due_time_and_keeps_the_active_run_and_its_retries():
    s = scheduler(Policy(overlap="queue", retries=1, retry_delay=5.0))
    s.handle(Tick(H11))
    s.handle(Tick(H12))
    assert s.handle(Paused("s", H12 + 1)) == [
        Skipped("s", H12, "the schedule was paused"),
        Advanced("s", H12),
    ]
    rid = run_id("s", H11)
    assert s.handle(RunEnded(rid, H12 + 2, ok=False)) == [Retrying("s", rid, 2, H12 + 7)]
    assert s.handle(Tick(H12 + 7)) == [StartRun("s", rid, H11, 2)]


def test_removing_a_schedule_with_an_active_run_forgets_it_and_its_retries():
    s = scheduler(Policy(overlap="queue", retries=2))
    s.handle(Tick(H11))
    s.handle(Tick(H12))
    assert s.handle(ScheduleRemoved("s", H12 + 1)) == [
        Skipped("s", H12, "the schedule was removed")
    ]
    assert s.schedules() == [] and s.runs_active("s") == []
    assert s.handle(RunEnded(run_id("s", H11), H12 + 2, ok=False)) == []
    assert s.next_deadline() is None
    assert s.handle(Tick(H14)) == []


def test_changing_the_timing_counts_from_now():
    s = scheduler()
    s.handle(Tick(H11))
    out = s.handle(ScheduleSet("s", Timing(cron="30 * * * *"), Policy(), H12 + 60))
    assert out == [Advanced("s", H12 + 60)]
    assert s.next_deadline() == H12 + 1800


def test_a_dst_day_through_the_scheduler_runs_each_due_time_once():
    # Hourly in New York, ticked at each deadline through the fall-back night.
    s = Scheduler()
    t0 = utc("2026-11-01T03:30")
    s.handle(ScheduleSet("ny", Timing(cron="0 * * * *", tz="America/New_York"), Policy(), t0))
    started = []
    while (deadline := s.next_deadline()) is not None and deadline < utc("2026-11-01T10:00"):
        for i in s.handle(Tick(deadline)):
            if isinstance(i, StartRun):
                started.append(i.due)
                s.handle(RunEnded(i.run_id, deadline + 1, ok=True))
    assert walls(started, "America/New_York") == [
        "11-01 00:00-0400",
        "11-01 01:00-0400",
        "11-01 02:00-0500",
        "11-01 03:00-0500",
        "11-01 04:00-0500",
    ]


# ---------------------------------------------------------------- restarts


@dataclass
class Store:
    """The control plane's SQLite, as the contract says: one answer is one transaction;
    a run row per (run_id, attempt), refused when it is there already."""

    last_due: dict[str, float] = field(default_factory=dict)
    rows: dict[tuple[str, int], StartRun] = field(default_factory=dict)
    over: set[str] = field(default_factory=set)
    refused: list[StartRun] = field(default_factory=list)

    def commit(self, out: list[Instruction]) -> None:
        for i in out:
            self.record(i)

    def record(self, i: Instruction) -> None:
        if isinstance(i, StartRun):
            if (i.run_id, i.attempt) in self.rows:
                self.refused.append(i)
            else:
                self.rows[(i.run_id, i.attempt)] = i
        elif isinstance(i, Advanced):
            self.last_due[i.name] = i.last_due
        elif isinstance(i, RunOver):
            self.over.add(i.run_id)

    def restart(
        self, policy: Policy, now: float, timing: Timing = HOURLY
    ) -> tuple[Scheduler, list]:
        s, out = Scheduler(), []
        for name, last in self.last_due.items():
            out += s.handle(ScheduleSet(name, timing, policy, now, last_due=last))
        for (rid, attempt), row in self.rows.items():
            if rid not in self.over and (rid, attempt + 1) not in self.rows:
                out += s.handle(RunRestored(row.name, rid, row.due, now, attempt))
        out += s.handle(Tick(now))
        return s, out


def test_a_restart_after_the_start_was_recorded_does_not_start_it_again():
    store = Store()
    s = Scheduler()
    store.commit(s.handle(ScheduleSet("s", HOURLY, Policy(), T0)))
    store.commit(s.handle(Tick(H11)))  # StartRun and Advanced, one transaction
    s2, out = store.restart(Policy(), H11 + 30)
    assert out == []
    assert s2.runs_active("s") == [run_id("s", H11)]
    assert s2.next_deadline() == H12


def test_a_restart_before_the_start_was_recorded_starts_the_same_run_once():
    store = Store()
    s = Scheduler()
    store.commit(s.handle(ScheduleSet("s", HOURLY, Policy(), T0)))
    lost = s.handle(Tick(H11))  # the control plane dies before committing this answer
    assert lost == [start("s", H11), Advanced("s", H11)]
    for now in (H11 + 30, H11 + 3000):  # on time, or long after (catch_up once)
        _, out = Store(dict(store.last_due)).restart(Policy(), now)
        assert out == lost


def test_a_restart_with_only_the_run_row_recorded_neither_loses_nor_duplicates():
    # A shell that records one instruction at a time died between StartRun and Advanced.
    store = Store()
    s = Scheduler()
    store.commit(s.handle(ScheduleSet("s", HOURLY, Policy(overlap="allow"), T0)))
    out = s.handle(Tick(H11))
    store.record(out[0])
    assert store.last_due["s"] == T0
    # The run is restored: the rebuilt scheduler does not start it again and moves last_due.
    s2, out2 = store.restart(Policy(overlap="allow"), H11 + 30)
    assert out2 == [Advanced("s", H11)]
    assert s2.runs_active("s") == [run_id("s", H11)]
    # Had the run ended meanwhile (over, not restored), its repeat is refused by its id.
    store2 = Store(dict(store.last_due), dict(store.rows), {run_id("s", H11)})
    _, out3 = store2.restart(Policy(overlap="allow"), H11 + 30)
    store2.commit(out3)
    assert store2.refused == [start("s", H11)]
    assert len(store2.rows) == 1


def test_a_restart_with_a_due_time_queued_runs_it_after_the_restored_run():
    store = Store()
    s = Scheduler()
    policy = Policy(overlap="queue")
    store.commit(s.handle(ScheduleSet("s", HOURLY, policy, T0)))
    store.commit(s.handle(Tick(H11)))
    store.commit(s.handle(Tick(H12)))  # queued, not recorded: last_due stays at H11
    assert store.last_due["s"] == H11
    s2, out = store.restart(policy, H12 + 30)
    store.commit(out)
    assert out == [] and s2.queued("s") == H12
    out = s2.handle(RunEnded(run_id("s", H11), H12 + 40, ok=True))
    assert of(StartRun, out) == [start("s", H12)]


# ---------------------------------------------------------------- random histories

ZONES = ["UTC", "Europe/Berlin", "America/New_York"]
CRONS = ["0 * * * *", "0 2 * * *", "30 2 * * *", "*/20 * * * *", "15 1,2,3 * * *"]
# Times just before a transition of 2026: Berlin spring, Berlin fall, New York spring, fall.
EPOCHS = [
    utc(t) for t in ("2026-03-28T20:00", "2026-10-24T20:00", "2026-03-08T00:00", "2026-10-31T23:00")
]


@st.composite
def timings(draw: st.DrawFn) -> Timing:
    if draw(st.booleans()):
        return Timing(cron=draw(st.sampled_from(CRONS)), tz=draw(st.sampled_from(ZONES)))
    return Timing(
        every=draw(st.sampled_from([600.0, 3600.0, 5400.0])),
        start=draw(st.sampled_from([0.0, 17.5])),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    return Policy(
        overlap=draw(st.sampled_from(["skip", "queue", "allow"])),
        catch_up=draw(st.sampled_from(["none", "once", "all"])),
        retries=draw(st.integers(0, 2)),
        retry_delay=draw(st.sampled_from([0.0, 60.0, 900.0])),
        retry_max=1800.0,
        max_catch_up=draw(st.integers(0, 3)),
        grace=draw(st.sampled_from([0.0, 60.0])),
    )


ACTIONS = st.one_of(
    st.tuples(st.just("deadline")),
    st.tuples(st.just("deadline")),
    st.tuples(st.just("tick"), st.floats(0.0, 4000.0)),
    st.tuples(st.just("tick"), st.floats(0.0, 86400.0)),  # downtime
    st.tuples(st.just("end"), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("started"), st.integers(0, 9)),
    st.tuples(st.just("now"), st.integers(0, 2)),
    st.tuples(st.just("pause"), st.integers(0, 2)),
    st.tuples(st.just("resume"), st.integers(0, 2)),
    st.tuples(st.just("restart"), st.floats(1.0, 20000.0)),
)


@dataclass
class WorldRun:
    name: str
    due: float
    attempt: int
    manual: bool
    state: str = "running"  # running | waiting | over
    retry_at: float | None = None


class World:
    """The control plane around the scheduler: it stores what the contract says, runs
    what it is told, and checks each answer."""

    def __init__(self, specs: list[tuple[Timing, Policy]], now: float) -> None:
        self.now = now
        self.specs = {f"s{i}": spec for i, spec in enumerate(specs)}
        self.created = dict.fromkeys(self.specs, now)
        self.paused = dict.fromkeys(self.specs, False)
        self.last_due: dict[str, float] = {}
        self.rows: set[tuple[str, int]] = set()
        self.runs: dict[str, WorldRun] = {}
        self.skipped: dict[str, list[tuple[float, float]]] = {n: [] for n in self.specs}
        self.started: dict[str, list[float]] = {n: [] for n in self.specs}
        self.s = Scheduler()
        for name, (timing, policy) in self.specs.items():
            self.feed(ScheduleSet(name, timing, policy, now))

    def active(self, name: str) -> list[WorldRun]:
        return [r for r in self.runs.values() if r.name == name and r.state != "over"]

    def feed(self, event) -> list[Instruction]:
        out = self.s.handle(event)
        scheduled_firsts: dict[str, int] = {}
        for i in out:
            if isinstance(i, StartRun):
                timing, policy = self.specs[i.name]
                key = (i.run_id, i.attempt)
                assert key not in self.rows, f"StartRun twice: {key}"
                self.rows.add(key)
                assert 1 <= i.attempt <= policy.retries + 1
                manual = i.run_id.endswith("-manual")
                if i.attempt == 1:
                    assert i.run_id not in self.runs
                    if manual:
                        assert i.run_id == run_id(i.name, self.now) + "-manual"
                    else:
                        assert i.run_id == run_id(i.name, i.due)
                        assert due_times(timing, i.due - 1, i.due) == [i.due], "not a due time"
                        if policy.overlap == "skip":
                            others = [r for r in self.active(i.name) if not r.manual]
                            assert not others, "two runs at once with overlap skip"
                        self.started[i.name].append(i.due)
                        scheduled_firsts[i.name] = scheduled_firsts.get(i.name, 0) + 1
                    self.runs[i.run_id] = WorldRun(i.name, i.due, 1, manual)
                else:
                    run = self.runs[i.run_id]
                    assert run.state == "waiting" and run.attempt == i.attempt - 1
                    assert run.retry_at is not None and run.retry_at <= self.now
                    run.attempt, run.state, run.retry_at = i.attempt, "running", None
            elif isinstance(i, Advanced):
                assert i.last_due >= self.last_due.get(i.name, float("-inf")), "went back"
                self.last_due[i.name] = i.last_due
            elif isinstance(i, Skipped):
                self.skipped[i.name].append((i.due, i.due if i.until is None else i.until))
            elif isinstance(i, Retrying):
                run = self.runs[i.run_id]
                assert run.state == "running" and i.attempt == run.attempt + 1
                run.state, run.retry_at = "waiting", i.at
            elif isinstance(i, RunOver):
                run = self.runs[i.run_id]
                assert run.state == "running" and i.attempts == run.attempt
                run.state = "over"
        for name, count in scheduled_firsts.items():
            if self.specs[name][1].catch_up in ("none", "once"):
                assert count == 1, f"{count} runs of {name} at one event with catch_up once"
        return out

    def end(self, rid: str, ok: bool) -> None:
        out = self.feed(RunEnded(rid, self.now, ok))
        assert [i for i in out if isinstance(i, (Retrying, RunOver)) and i.run_id == rid]

    def restart(self) -> None:
        self.s = Scheduler()
        for name, (timing, policy) in self.specs.items():
            self.feed(
                ScheduleSet(name, timing, policy, self.now, self.last_due[name], self.paused[name])
            )
        for rid, run in self.runs.items():
            if run.state != "over":
                self.feed(RunRestored(run.name, rid, run.due, self.now, run.attempt, run.retry_at))
        self.feed(Tick(self.now))

    def covered(self, name: str, due: float) -> bool:
        return due in self.started[name] or any(a <= due <= b for a, b in self.skipped[name])


def step(world: World, action: tuple) -> None:
    kind = action[0]
    names = sorted(world.specs)
    running = sorted(rid for rid, r in world.runs.items() if r.state == "running")
    if kind == "deadline":
        deadline = world.s.next_deadline()
        if deadline is not None and deadline > world.now:
            world.now = deadline
        world.feed(Tick(world.now))
    elif kind == "tick":
        world.now += action[1]
        deadline = world.s.next_deadline()
        out = world.feed(Tick(world.now))
        if deadline is None or deadline > world.now:
            assert out == [], f"a tick before next_deadline() ({deadline}) did {out}"
    elif kind == "end" and running:
        world.end(running[action[1] % len(running)], action[2])
    elif kind == "started" and running:
        assert world.feed(RunStarted(running[action[1] % len(running)], world.now)) == []
    elif kind in ("now", "pause", "resume"):
        name = names[action[1] % len(names)]
        event = {"now": RunNow, "pause": Paused, "resume": Resumed}[kind](name, world.now)
        world.feed(event)
        if kind != "now":
            world.paused[name] = kind == "pause"
    elif kind == "restart":
        world.now += action[1]
        world.restart()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(timings(), policies()), min_size=1, max_size=3),
    st.sampled_from(EPOCHS),
    st.floats(0.0, 6 * 3600.0),
    st.lists(ACTIONS, max_size=40),
)
def test_random_histories_start_each_due_time_at_most_once_and_lose_none(
    specs, epoch, offset, actions
):
    world = World(specs, epoch + offset)
    for action in actions:
        step(world, action)

    # Then everything settles: resume, runs succeed (queued ones start), tick once more.
    for name in sorted(world.specs):
        world.feed(Resumed(name, world.now))
    for _ in range(10):
        running = sorted(rid for rid, r in world.runs.items() if r.state != "over")
        if not running:
            break
        for rid in running:
            if world.runs[rid].state == "waiting":
                world.now = max(world.now, world.runs[rid].retry_at or world.now)
                world.feed(Tick(world.now))
            if world.runs[rid].state == "running":
                world.end(rid, True)
    assert all(r.state == "over" for r in world.runs.values())
    for name, (timing, _) in world.specs.items():
        assert world.s.queued(name) is None
        assert world.s.last_due(name) == world.last_due[name]
        dues = due_times(timing, world.created[name], world.last_due[name])
        lost = [d for d in dues if not world.covered(name, d)]
        assert not lost, f"due times of {name} neither started nor skipped: {lost}"
        assert len(world.started[name]) == len(set(world.started[name]))
