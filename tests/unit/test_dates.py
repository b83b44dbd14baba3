"""Due-date arithmetic and Swedish date text, checked as properties across time zones."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.mapping.dates import Offset, apply_offset, format_swedish, parse_offset

ZONES = ["Europe/Stockholm", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
FIRST_YEAR, LAST_YEAR = 2015, 2040


@functools.cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """Every UTC instant in the test years at which ``zone_name``'s UTC offset changes."""
    zone = ZoneInfo(zone_name)
    found: list[datetime] = []
    day = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
    while day.year <= LAST_YEAR:
        following = day + timedelta(days=1)
        before = day.astimezone(zone).utcoffset()
        if following.astimezone(zone).utcoffset() != before:
            low, high = 0, 24 * 60  # minutes into the day: offset unchanged at low, changed at high
            while high - low > 1:
                middle = (low + high) // 2
                moment = day + timedelta(minutes=middle)
                if moment.astimezone(zone).utcoffset() == before:
                    low = middle
                else:
                    high = middle
            found.append(day + timedelta(minutes=high))
        day = following
    return tuple(found)


def wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock time of ``moment`` in ``zone``."""
    return moment.astimezone(zone).replace(tzinfo=None)


def in_gap(local: datetime, zone: ZoneInfo) -> bool:
    """Whether the naive wall time ``local`` does not exist in ``zone`` (spring forward)."""
    # Through UTC: astimezone() to a datetime's own tzinfo changes nothing.
    return wall(local.replace(tzinfo=zone).astimezone(UTC), zone) != local


def gap_length(local: datetime, zone: ZoneInfo) -> timedelta:
    """How far clocks jump forward at the gap containing ``local``."""
    after = local.replace(tzinfo=zone, fold=1).utcoffset()
    before = local.replace(tzinfo=zone, fold=0).utcoffset()
    assert after is not None
    assert before is not None
    return after - before


def earliest(local: datetime, zone: ZoneInfo) -> datetime:
    """The first UTC instant showing the (existing) wall time ``local`` in ``zone``."""
    return min(local.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))


@st.composite
def cases(draw: st.DrawFn) -> tuple[ZoneInfo, datetime, int]:
    """A zone, a UTC start and a day count; often aimed at a DST change at either end."""
    name = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(name)
    days = draw(st.integers(-400, 400))
    changes = transitions(name)
    aim = draw(st.sampled_from(["anywhere", "start", "target"])) if changes else "anywhere"
    if aim == "anywhere":
        naive = draw(st.datetimes(datetime(FIRST_YEAR, 1, 1), datetime(LAST_YEAR, 12, 31)))
        return zone, naive.replace(tzinfo=UTC), days
    change = draw(st.sampled_from(changes))
    if aim == "start":
        return zone, change + timedelta(minutes=draw(st.integers(-180, 180))), days
    # The start's wall time lands, ``days`` later, in or beside the gap or fold.
    change_wall = wall(change - timedelta(minutes=1), zone) + timedelta(minutes=1)
    target = change_wall + timedelta(minutes=draw(st.integers(-90, 90)))
    start_wall = target - timedelta(days=days)
    fold = draw(st.sampled_from([0, 1]))
    return zone, start_wall.replace(tzinfo=zone, fold=fold).astimezone(UTC), days


@settings(max_examples=500, deadline=None)
@given(cases())
def test_day_offsets_keep_wall_clock_time_and_move_date_by_n_days(
    case: tuple[ZoneInfo, datetime, int],
) -> None:
    """+Nd keeps local time, moves the local date by N; gaps push forward, folds take the first."""
    zone, start, days = case
    local = wall(start, zone)
    target = local + timedelta(days=days)

    result = apply_offset(start, Offset(days=days), zone)

    got = wall(result, zone)
    if days == 0:
        assert result == start
    elif in_gap(target, zone):
        assert got == target + gap_length(target, zone)
    else:
        assert got == target
        assert (got.date() - local.date()).days == days
        assert result == earliest(target, zone)


@settings(max_examples=300, deadline=None)
@given(cases(), st.integers(-200_000, 200_000))
def test_hour_and_minute_offsets_are_elapsed_time(
    case: tuple[ZoneInfo, datetime, int], minutes: int
) -> None:
    """+Nh / +Nm add exactly that many seconds, whatever the zone's DST does meanwhile."""
    zone, start, _ = case
    result = apply_offset(start, Offset(minutes=minutes), zone)
    assert (result - start).total_seconds() == minutes * 60


@settings(max_examples=300, deadline=None)
@given(cases(), st.integers(0, 200_000))
def test_results_are_always_utc_aware(case: tuple[ZoneInfo, datetime, int], minutes: int) -> None:
    """Whatever the zone and offset, the result's tzinfo is UTC itself."""
    zone, start, days = case
    sign = -1 if days < 0 else 1
    for tz in (zone, None):
        result = apply_offset(start.astimezone(zone), Offset(days, sign * minutes), tz)
        assert result.tzinfo is UTC


@settings(max_examples=500, deadline=None)
@given(cases())
def test_plus_then_minus_n_days_returns_the_start(case: tuple[ZoneInfo, datetime, int]) -> None:
    """+Nd then -Nd gives back the start unless a gap or a fold's 2nd occurrence is involved."""
    zone, start, days = case
    local = wall(start, zone)
    if in_gap(local + timedelta(days=days), zone) or start != earliest(local, zone):
        return
    there = apply_offset(start, Offset(days=days), zone)
    assert apply_offset(there, Offset(days=-days), zone) == start


@settings(max_examples=200, deadline=None)
@given(cases())
def test_without_a_zone_days_are_24_hours(case: tuple[ZoneInfo, datetime, int]) -> None:
    """With no timezone a day offset is exactly N x 24 h, the same as in UTC."""
    _, start, days = case
    result = apply_offset(start, Offset(days=days), None)
    assert result - start == timedelta(days=days)
    assert result == apply_offset(start, Offset(days=days), ZoneInfo("UTC"))


@settings(max_examples=300, deadline=None)
@given(cases())
def test_format_swedish_round_trips_with_the_local_time(
    case: tuple[ZoneInfo, datetime, int],
) -> None:
    """The text is YYYY-MM-DD HH:MM of the local time, and parses back to it."""
    zone, start, _ = case
    text = format_swedish(start, zone)
    assert len(text) == len("2027-02-15 11:00")
    parsed = datetime.strptime(text, "%Y-%m-%d %H:%M")
    assert parsed == wall(start, zone).replace(second=0, microsecond=0)


def test_format_swedish_examples() -> None:
    """The seed's start reads 11:00 in Stockholm, 10:00 in UTC when no zone is given."""
    start = datetime(2027, 2, 15, 10, 0, tzinfo=UTC)
    assert format_swedish(start, ZoneInfo("Europe/Stockholm")) == "2027-02-15 11:00"
    assert format_swedish(start, None) == "2027-02-15 10:00"


def test_spring_forward_gap_is_pushed_forward() -> None:
    """10:00 and 02:30 a week before Stockholm's DST night: 02:30 becomes 03:30 CEST."""
    zone = ZoneInfo("Europe/Stockholm")
    start = datetime(2027, 4, 4, 2, 30, tzinfo=zone)
    assert apply_offset(start, Offset(days=-7), zone) == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)


def test_fall_back_fold_takes_the_first_occurrence() -> None:
    """02:30 on Stockholm's fall-back night exists twice; the earlier (CEST) one is used."""
    zone = ZoneInfo("Europe/Stockholm")
    start = datetime(2027, 10, 24, 2, 30, tzinfo=zone)
    assert apply_offset(start, Offset(days=7), zone) == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)


def test_day_offset_across_dst_is_not_24_hours() -> None:
    """A week before a CEST 10:00 start is 10:00 CET, i.e. 7 x 24 h + 1 h earlier."""
    zone = ZoneInfo("Europe/Stockholm")
    start = datetime(2027, 4, 1, 8, 0, tzinfo=UTC)
    assert apply_offset(start, Offset(days=-7), zone) == datetime(2027, 3, 25, 9, 0, tzinfo=UTC)


def test_naive_start_is_refused() -> None:
    """A naive start is a programming error, not something to guess a zone for."""
    with pytest.raises(ValueError, match="timezone-aware"):
        apply_offset(datetime(2027, 1, 1), Offset(days=1), None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-7d", Offset(days=-7)),
        ("+1d", Offset(days=1)),
        ("1d", Offset(days=1)),
        ("+2h", Offset(minutes=120)),
        ("-30m", Offset(minutes=-30)),
        ("1d2h", Offset(days=1, minutes=120)),
        ("-1d2h30m", Offset(days=-1, minutes=-150)),
        ("0m", Offset()),
    ],
)
def test_parse_offset_reads_days_hours_minutes(text: str, expected: Offset) -> None:
    """Each documented offset form parses to calendar days plus elapsed minutes."""
    assert parse_offset(text) == expected


@pytest.mark.parametrize("text", ["", "-", "7", "-7x", "d", "2h1d", "+-1d", " 1d", "1.5h", "1 d"])
def test_parse_offset_refuses_malformed_text(text: str) -> None:
    """Anything but [+|-][Nd][Nh][Nm] is refused with a hint at the right form."""
    with pytest.raises(ValueError, match=r"use e\.g\. -7d, \+2h, 30m"):
        parse_offset(text)


def test_parse_offset_refuses_huge_offsets() -> None:
    """An offset beyond ten years is a typo, and would overflow datetime near its limits."""
    with pytest.raises(ValueError, match="too large"):
        parse_offset("100000d")


@given(st.integers(-3600, 3600), st.integers(0, 10_000))
def test_offset_text_round_trips(days: int, minutes: int) -> None:
    """str(Offset) is canonical text that parse_offset reads back to the same offset."""
    offset = Offset(days, minutes if days >= 0 else -minutes)
    assert parse_offset(str(offset)) == offset


def test_offset_parts_must_share_a_sign() -> None:
    """+1d-30m cannot be written in a mapping, so it cannot be built either."""
    with pytest.raises(ValueError, match="same sign"):
        Offset(days=1, minutes=-30)
