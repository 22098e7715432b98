"""Timestamp: RFC 3339 with nanoseconds and the offset it was given, as Go prints it."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import Timestamp
from tests.outcomes import outcome

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda minutes: minutes * 60)
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(None)
)


@given(moment=moments, nanos=st.integers(0, 999), offset=offsets)
def test_format_matches_datetime_to_the_nanosecond(
    moment: datetime, nanos: int, offset: int
) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(seconds=offset)))
    stamp = Timestamp.from_datetime(aware).shifted(nanoseconds=nanos)
    fraction = f"{aware.microsecond * 1000 + nanos:09d}".rstrip("0")
    hours, minutes = divmod(abs(offset) // 60, 60)
    zone = "Z" if offset == 0 else f"{'-' if offset < 0 else '+'}{hours:02d}:{minutes:02d}"
    expected = (
        f"{aware.year:04d}-{aware.month:02d}-{aware.day:02d}"
        f"T{aware.hour:02d}:{aware.minute:02d}:{aware.second:02d}"
        + ("." + fraction if fraction else "")
        + zone
    )
    assert stamp.format() == expected
    assert Timestamp.parse(expected) == stamp
    assert stamp.to_datetime() == aware


def test_nanoseconds_are_kept_where_datetime_drops_them() -> None:
    stamp = Timestamp.parse("2024-01-02T03:04:05.123456789Z")
    assert stamp.unix_ns % 1000 == 789
    assert stamp.format() == "2024-01-02T03:04:05.123456789Z"


def test_offset_is_kept_not_converted() -> None:
    stamp = Timestamp.parse("2024-01-02T04:04:05.5+01:00")
    assert stamp.offset == 3600
    assert stamp.format() == "2024-01-02T04:04:05.5+01:00"
    assert stamp != Timestamp.parse("2024-01-02T03:04:05.5Z")
    assert stamp.unix_ns == Timestamp.parse("2024-01-02T03:04:05.5Z").unix_ns
    assert Timestamp.parse("2024-01-01T22:34:05-05:30").format() == "2024-01-01T22:34:05-05:30"


def test_unset_is_gos_zero_time() -> None:
    assert Timestamp.UNSET.format() == "0001-01-01T00:00:00Z"
    assert Timestamp.parse("0001-01-01T00:00:00Z") == Timestamp.UNSET
    assert Timestamp.UNSET.is_unset
    assert Timestamp.parse("0001-01-01T01:00:00+01:00").is_unset
    assert not Timestamp(0).is_unset
    assert repr(Timestamp.UNSET) == "Timestamp.UNSET"


def test_year_zero_and_9999_are_representable() -> None:
    for text in ("0000-02-29T12:00:00Z", "9999-12-31T23:59:59.999999999Z"):
        assert Timestamp.parse(text).format() == text


def test_years_rfc3339_cannot_express_are_refused_when_formatting() -> None:
    late = Timestamp.parse("9999-12-31T23:59:59Z").shifted(seconds=1)
    with pytest.raises(ValueError, match="10000"):
        late.format()
    assert "10000" not in repr(late)
    assert late.format_go().startswith("10000-01-01T")  # printed, never kept for format()
    with pytest.raises(ValueError, match="10000"):
        Timestamp(late.unix_ns).format()


def test_formatting_caches_stay_bounded() -> None:
    from store import timestamp  # noqa: PLC0415 - its caches

    day = 86_400 * 1_000_000_000
    for index in range(3 * 4096):
        Timestamp(index * day).format()
    assert 0 < len(timestamp._date_texts) <= 4096
    assert Timestamp(5 * day).format() == "1970-01-06T00:00:00Z"


def test_a_sub_minute_offset_is_cut_as_go_cuts_it() -> None:
    assert Timestamp(0, offset=-(3600 + 59)).format() == "1969-12-31T22:59:01-01:00"
    assert Timestamp(0, offset=30).format() == "1970-01-01T00:00:30+00:00"


def test_now_is_now_in_the_local_offset() -> None:
    before = time.time_ns()
    stamp = Timestamp.now()
    after = time.time_ns()
    assert before <= stamp.unix_ns <= after
    assert stamp.offset == time.localtime(stamp.unix_ns // 10**9).tm_gmtoff


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Timestamp.from_datetime(datetime(2024, 1, 2))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-01-02",
        "2024-1-02T03:04:05Z",
        "2024-01-02T03:04Z",
        "2024-01-02T03:04:05.Z",
        "2024-13-02T03:04:05Z",
        "2024-01-32T03:04:05Z",
        "2024-01-02T24:00:00Z",
        "2024-01-02T03:60:00Z",
        "2024-01-02T03:04:05+01:61",
        "2024-01-02T03:04:05Z ",
        " 2024-01-02T03:04:05Z",
        "\uff12\uff10\uff12\uff14-01-02T03:04:05Z",
    ],
)
def test_malformed_times_are_refused_with_the_text_named(text: str) -> None:
    with pytest.raises(ValueError, match=r"out of range|not an RFC 3339 time"):
        Timestamp.parse(text)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (-1, "1969-12-31T23:59:59+00:00"),
        (-30, "1969-12-31T23:59:30+00:00"),
        (-59, "1969-12-31T23:59:01+00:00"),
        (-60, "1969-12-31T23:59:00-00:01"),
        (-61, "1969-12-31T23:58:59-00:01"),
        (59, "1970-01-01T00:00:59+00:00"),
    ],
)
def test_a_sub_minute_offset_takes_the_sign_go_gives_it(offset: int, expected: str) -> None:
    # Go cuts the offset to whole minutes first, then picks the sign of what is left.
    assert Timestamp(0, offset=offset).format() == expected


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("0000-01-01T00:30:00+01:00", "-0001-12-31T23:30:00Z"),
        ("0000-01-01T00:00:00.5+00:01", "-0001-12-31T23:59:00.5Z"),
        ("9999-12-31T23:30:00-01:00", "10000-01-01T00:30:00Z"),
    ],
)
def test_years_outside_rfc3339_print_as_go_prints_them(text: str, utc: str) -> None:
    in_utc = Timestamp(Timestamp.parse(text).unix_ns)
    assert in_utc.format_go() == utc
    with pytest.raises(ValueError, match="outside RFC 3339's range"):
        in_utc.format()
    assert str(in_utc) == utc


def test_go_format_of_far_years() -> None:
    year_zero_and_minus_one = (366 + 365) * 86400
    assert Timestamp.UNSET.shifted(seconds=-year_zero_and_minus_one).format_go() == (
        "-0001-01-01T00:00:00Z"
    )
    last = Timestamp.parse("9999-12-31T23:59:59.5+02:00")
    assert last.shifted(seconds=2 * 3600).format_go() == "10000-01-01T01:59:59.5+02:00"


@pytest.mark.parametrize(
    ("text", "exists"),
    [
        ("1900-02-29T00:00:00Z", False),
        ("2100-02-29T00:00:00Z", False),
        ("2000-02-29T00:00:00Z", True),
        ("2400-02-29T00:00:00Z", True),
        ("2024-02-29T00:00:00Z", True),
        ("2023-02-29T00:00:00Z", False),
        ("0000-02-29T00:00:00Z", True),
    ],
)
def test_february_29_follows_the_gregorian_century_rule(text: str, exists: bool) -> None:
    if exists:
        assert Timestamp.parse(text).format() == text
    else:
        with pytest.raises(ValueError, match="day out of range"):
            Timestamp.parse(text)


def test_timestamps_are_immutable_and_hashable() -> None:
    stamp = Timestamp.parse("2024-01-02T03:04:05+01:00")
    with pytest.raises(AttributeError):
        stamp.unix_ns = 0
    with pytest.raises(AttributeError):
        del stamp.offset
    assert {stamp: 1}[Timestamp(stamp.unix_ns, 3600)] == 1
    assert stamp != Timestamp(stamp.unix_ns)


def test_a_huge_fraction_is_cut_and_not_kept_anywhere() -> None:
    from store import timestamp  # noqa: PLC0415 - its caches

    text = "2024-01-02T03:04:05." + "1" * 1_000_000 + "Z"
    assert Timestamp.parse(text) == Timestamp.parse("2024-01-02T03:04:05.111111111Z")
    assert all(len(key) <= 64 for key in timestamp._days_cache)


@given(text=st.text(max_size=40))
def test_any_text_parses_or_is_refused_with_value_error(text: str) -> None:
    stamp = outcome(partial(Timestamp.parse, text), ValueError)
    if isinstance(stamp, ValueError):
        assert str(stamp)
        return
    assert isinstance(stamp, Timestamp)
    if abs(stamp.offset) < 86_400:
        assert Timestamp.parse(stamp.format()) == stamp


timestamp_texts = st.builds(
    lambda date, hour, rest, fraction, zone: f"{date}T{hour}{rest}{fraction}{zone}",
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z"),
    st.from_regex(r"\A[0-9]{1,2}\Z"),
    st.from_regex(r"\A:[0-9]{2}:[0-9]{2}\Z"),
    st.one_of(st.just(""), st.from_regex(r"\A[.,][0-9]{1,12}\Z")),
    st.one_of(st.just("Z"), st.from_regex(r"\A[+-][0-9]{2}:[0-9]{2}\Z")),
)


@given(text=timestamp_texts)
def test_rfc3339_shaped_text_follows_gos_ranges(text: str) -> None:
    date, clock = text.split("T")
    year, month, day = (int(part) for part in date.split("-"))
    hour, minute, second = (int(part[:2]) for part in clock.split(":")[:3])
    zone = clock[-6:] if clock[-1] != "Z" else ""
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    valid = (
        1 <= month <= 12
        and 1 <= day <= days[month - 1]
        and hour <= 23
        and minute <= 59
        and second <= 59
        and (not zone or (int(zone[1:3]) <= 24 and int(zone[4:6]) <= 60))
    )
    if not valid:
        with pytest.raises(ValueError, match="out of range"):
            Timestamp.parse(text)
        return
    stamp = Timestamp.parse(text)
    offset = 0 if not zone else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    assert stamp.offset == (-offset if zone.startswith("-") else offset)
