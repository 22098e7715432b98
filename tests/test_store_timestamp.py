"""Timestamp: RFC 3339 with nanoseconds and the offset it was given, as Go prints it."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import Timestamp

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
