"""RFC 3339 timestamps with nanosecond precision that keep the UTC offset they were given.

nerdctl stores `started_at` as a Go `time.Time`. Python's `datetime` drops the last
three digits of the nanoseconds and cannot hold Go's zero time's neighbours in year 0,
so this module carries its own small type: an instant in nanoseconds since the Unix
epoch plus the offset it is shown in. Parsing follows what Go's `time.Parse(RFC3339)`
accepts (which is what nerdctl's reader accepts); formatting writes exactly the bytes of
Go's `RFC3339Nano` layout.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar, Final

_NS_PER_SECOND: Final = 1_000_000_000
_SECONDS_PER_DAY: Final = 86_400
#: Go's zero time, 0001-01-01T00:00:00Z, in seconds since the Unix epoch.
_ZERO_UNIX_SECONDS: Final = -62_135_596_800

# Go's time.Parse(time.RFC3339, s): a one- or two-digit hour, "." or "," before any
# number of fraction digits (only the first nine count), "Z" or a +hh:mm offset whose
# hour may be 24 and minute 60. re.ASCII keeps \d to 0-9 as Go's parser does.
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{1,2}):(\d{2}):(\d{2})"
    r"(?:[.,](\d+))?"
    r"(?:Z|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_PARSE_CACHE_SIZE: Final = 4096
_parse_cache: dict[str, Timestamp] = {}
_format_cache: dict[tuple[int, int], str] = {}


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if _is_leap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """The proleptic Gregorian (year, month, day) of a day count since 1970-01-01."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


@dataclass(frozen=True, slots=True, repr=False)
class Timestamp:
    """An instant with nanosecond precision and the UTC offset it is shown in.

    Two timestamps are equal when both the instant and the offset are equal, as with
    Go's `==` on `time.Time`; compare `unix_ns` to compare instants. The unset value,
    `Timestamp.UNSET`, is Go's zero time (0001-01-01T00:00:00Z), which is how nerdctl
    writes "not started"; `is_unset` is true for that instant in any offset.
    """

    unix_ns: int
    """Nanoseconds since 1970-01-01T00:00:00Z."""
    offset: int = 0
    """Seconds east of UTC that the timestamp is shown in (0 is written `Z`)."""

    UNSET: ClassVar[Timestamp]

    @property
    def is_unset(self) -> bool:
        """Whether this is Go's zero time, nerdctl's "never started"."""
        return self.unix_ns == _ZERO_UNIX_SECONDS * _NS_PER_SECOND

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse RFC 3339 as nerdctl's reader does; raise ValueError naming the problem.

        Accepted beyond strict RFC 3339, because Go's parser accepts them and nerdctl
        may have stored them: a one-digit hour, a comma before the fraction, more than
        nine fraction digits (cut to nine) and offsets up to +24:60. `-00:00` means
        UTC. Rejected: lowercase `t`/`z`, a space separator, a missing or colon-less
        offset, a leap second and dates that do not exist.
        """
        cached = _parse_cache.get(text)
        if cached is not None:
            return cached
        parsed = cls._parse_uncached(text)
        if len(_parse_cache) >= _PARSE_CACHE_SIZE:
            _parse_cache.clear()
        _parse_cache[text] = parsed
        return parsed

    @classmethod
    def _parse_uncached(cls, text: str) -> Timestamp:
        match = _RFC3339.fullmatch(text)
        if match is None:
            raise ValueError(f"not an RFC 3339 time: {text!r}")
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        fraction, sign, offset_hours, offset_minutes = match.groups()[6:]
        if not 1 <= month <= 12:
            raise ValueError(f"month out of range in {text!r}")
        if not 1 <= day <= _days_in_month(year, month):
            raise ValueError(f"day out of range in {text!r}")
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"time of day out of range in {text!r}")
        nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
        offset = 0
        if sign is not None:
            hours, minutes = int(offset_hours), int(offset_minutes)
            if hours > 24 or minutes > 60:
                raise ValueError(f"UTC offset out of range in {text!r}")
            offset = (hours * 3600 + minutes * 60) * (-1 if sign == "-" else 1)
        local_seconds = (
            _days_from_civil(year, month, day) * _SECONDS_PER_DAY
            + hour * 3600
            + minute * 60
            + second
        )
        return cls((local_seconds - offset) * _NS_PER_SECOND + nanos, offset)

    def format(self) -> str:
        """RFC 3339 with nanoseconds, byte for byte as Go's `time.RFC3339Nano`.

        Trailing zeros of the fraction are trimmed, a zero fraction is left out and a
        zero offset is written `Z`. Raise ValueError for a year outside 0..9999, which
        RFC 3339 cannot express.
        """
        key = (self.unix_ns, self.offset)
        cached = _format_cache.get(key)
        if cached is not None:
            return cached
        text = self._format_uncached()
        if len(_format_cache) >= _PARSE_CACHE_SIZE:
            _format_cache.clear()
        _format_cache[key] = text
        return text

    def _format_uncached(self) -> str:
        seconds, nanos = divmod(self.unix_ns, _NS_PER_SECOND)
        days, second_of_day = divmod(seconds + self.offset, _SECONDS_PER_DAY)
        year, month, day = _civil_from_days(days)
        if not 0 <= year <= 9999:
            raise ValueError(f"year {year} is outside RFC 3339's range 0000-9999")
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        if nanos:
            text += "." + f"{nanos:09d}".rstrip("0")
        if self.offset == 0:
            return text + "Z"
        # Go truncates a sub-minute offset towards zero before printing it.
        zone_minutes = abs(self.offset) // 60
        sign = "-" if self.offset < 0 else "+"
        return f"{text}{sign}{zone_minutes // 60:02d}:{zone_minutes % 60:02d}"

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        if self == Timestamp.UNSET:
            return "Timestamp.UNSET"
        try:
            return f"Timestamp.parse({self.format()!r})"
        except ValueError:
            return f"Timestamp(unix_ns={self.unix_ns}, offset={self.offset})"

    @classmethod
    def now(cls) -> Timestamp:
        """The current time in the system's local offset, as Go's `time.Now()` shows it."""
        now_ns = time.time_ns()
        return cls(now_ns, time.localtime(now_ns // _NS_PER_SECOND).tm_gmtoff)

    def shifted(self, *, seconds: int = 0, nanoseconds: int = 0) -> Timestamp:
        """This timestamp moved by a whole number of seconds and nanoseconds, same offset."""
        return Timestamp(self.unix_ns + seconds * _NS_PER_SECOND + nanoseconds, self.offset)

    @classmethod
    def from_datetime(cls, moment: datetime) -> Timestamp:
        """The timestamp of an aware datetime, keeping its UTC offset."""
        utcoffset = moment.utcoffset()
        if utcoffset is None:
            raise ValueError("a naive datetime has no UTC offset; attach a tzinfo")
        offset = int(utcoffset.total_seconds())
        delta = moment.replace(tzinfo=None) - datetime(1970, 1, 1)
        local_ns = (
            delta.days * _SECONDS_PER_DAY + delta.seconds
        ) * _NS_PER_SECOND + delta.microseconds * 1000
        return cls(local_ns - offset * _NS_PER_SECOND, offset)

    def to_datetime(self) -> datetime:
        """An aware datetime in this offset; nanoseconds are cut to microseconds."""
        zone = timezone(timedelta(seconds=self.offset))
        return datetime(1970, 1, 1, tzinfo=UTC).astimezone(zone) + timedelta(
            microseconds=self.unix_ns // 1000
        )


Timestamp.UNSET = Timestamp(_ZERO_UNIX_SECONDS * _NS_PER_SECOND)
