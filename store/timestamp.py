"""RFC 3339 timestamps with nanosecond precision that keep the UTC offset they were given.

nerdctl stores `started_at` as a Go `time.Time`. Python's `datetime` drops the last
three digits of the nanoseconds and cannot hold Go's zero time's neighbours in year 0,
so this module carries its own small type: an instant in nanoseconds since the Unix
epoch plus the offset it is shown in. Parsing follows what Go's `time.Parse(RFC3339)`
accepts (which is what nerdctl's reader accepts); formatting writes exactly the bytes of
Go's `RFC3339Nano` layout.

Importing this module costs next to nothing: `re` and `datetime` are imported by the
functions that need them, on first use.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from datetime import datetime
    from typing import ClassVar, Final, NoReturn

_NS_PER_SECOND: Final = 1_000_000_000
_SECONDS_PER_DAY: Final = 86_400
#: Go's zero time, 0001-01-01T00:00:00Z, in nanoseconds since the Unix epoch.
_ZERO_UNIX_NS: Final = -62_135_596_800 * _NS_PER_SECOND

# Go's time.Parse(time.RFC3339, s): a one- or two-digit hour, "." or "," before any
# number of fraction digits (only the first nine count), "Z" or a +hh:mm offset whose
# hour may be 24 and minute 60. re.ASCII keeps \d to 0-9 as Go's parser does.
RFC3339_PATTERN: Final = (
    r"(\d{4}-\d{2}-\d{2})T(\d{1,2}):(\d{2}):(\d{2})"
    r"(?:[.,](\d+))?"
    r"(?:Z|([+-])(\d{2}):(\d{2}))"
)
# What nerdctl itself writes (Go's RFC3339Nano in UTC), a subset of the above with the
# same groups up to the fraction: tried first, as the simpler pattern matches faster.
NERDCTL_PATTERN: Final = r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z"
_DAYS_CACHED: Final = 4096
_days_cache: dict[str, int] = {}
"""Days since 1970-01-01 of an RFC 3339 date text (`2024-01-02`, ten characters), checked
to exist. Parsed timestamps themselves are not cached: the codec caches whole records."""
_date_texts: dict[int, str] = {}
"""The reverse, for formatting: `2024-01-02T` by days since 1970-01-01 (years 0-9999)."""
_FRACTION_SCALE: Final = (0, 100_000_000, 10_000_000, 1_000_000, 100_000, 10_000, 1000, 100, 10, 1)
_rfc3339: re.Pattern[str] | None = None
_nerdctl: re.Pattern[str] | None = None


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


def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(nerdctl's form, any RFC 3339 Go accepts), compiled once, on first use."""
    global _nerdctl, _rfc3339  # noqa: PLW0603
    if _nerdctl is None or _rfc3339 is None:
        import re  # noqa: PLC0415 - only parsing needs it

        _nerdctl = re.compile(NERDCTL_PATTERN, re.ASCII)
        _rfc3339 = re.compile(RFC3339_PATTERN, re.ASCII)
    return _nerdctl, _rfc3339


def _refuse(text: str, problem: str) -> NoReturn:
    shown = text if len(text) <= 80 else text[:60] + "..." + text[-10:]
    raise ValueError(f"{problem}: {shown!r}")


def _days(date: str, text: str) -> int:
    y, m, d = int(date[:4]), int(date[5:7]), int(date[8:])
    if not 1 <= m <= 12:
        _refuse(text, "month out of range in")
    if not 1 <= d <= _days_in_month(y, m):
        _refuse(text, "day out of range in")
    days = _days_from_civil(y, m, d)
    if len(_days_cache) >= _DAYS_CACHED:
        _days_cache.clear()
    _days_cache[date] = days
    return days


def _date_text(days: int, *, strict: bool) -> str:
    """`2024-01-02T` for a day count since 1970-01-01 (kept for years 0-9999)."""
    year, month, day = _civil_from_days(days)
    if 0 <= year <= 9999:
        text = f"{year:04d}-{month:02d}-{day:02d}T"
        if len(_date_texts) >= _DAYS_CACHED:
            _date_texts.clear()
        _date_texts[days] = text
        return text
    if strict:
        raise ValueError(f"year {year} is outside RFC 3339's range 0000-9999")
    # Go's appendInt(year, 4): a sign, then at least four digits
    year_text = f"-{-year:04d}" if year < 0 else str(year)
    return f"{year_text}-{month:02d}-{day:02d}T"


def _format(unix_ns: int, offset: int, *, strict: bool) -> str:
    seconds, nanos = divmod(unix_ns, _NS_PER_SECOND)
    days, second_of_day = divmod(seconds + offset, _SECONDS_PER_DAY)
    date = _date_texts.get(days)
    if date is None:
        date = _date_text(days, strict=strict)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    text = f"{date}{hour:02d}:{minute:02d}:{second:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    if offset == 0:
        return text + "Z"
    # Go cuts the offset to whole minutes towards zero, then takes the sign of what is
    # left: -30 s is written +00:00.
    zone = -(-offset // 60) if offset < 0 else offset // 60
    sign = "-" if zone < 0 else "+"
    zone = abs(zone)
    return f"{text}{sign}{zone // 60:02d}:{zone % 60:02d}"


class Timestamp:
    """An instant with nanosecond precision and the UTC offset it is shown in.

    Immutable and hashable. Two timestamps are equal when both the instant and the
    offset are equal, as with Go's `==` on `time.Time`; compare `unix_ns` to compare
    instants. The unset value, `Timestamp.UNSET`, is Go's zero time
    (0001-01-01T00:00:00Z), which is how nerdctl writes "not started"; `is_unset` is
    true for that instant in any offset.
    """

    __slots__ = ("_text", "offset", "unix_ns")

    unix_ns: int
    """Nanoseconds since 1970-01-01T00:00:00Z."""
    offset: int
    """Seconds east of UTC that the timestamp is shown in (0 is written `Z`)."""
    _text: str | None

    UNSET: ClassVar[Timestamp]

    def __init__(self, unix_ns: int, offset: int = 0) -> None:
        _set_unix_ns(self, unix_ns)
        _set_offset(self, offset)
        _set_text(self, None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Timestamp is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Timestamp is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self.unix_ns == other.unix_ns and self.offset == other.offset

    def __hash__(self) -> int:
        return hash((self.unix_ns, self.offset))

    def __reduce__(self) -> tuple[type[Timestamp], tuple[int, int]]:
        return Timestamp, (self.unix_ns, self.offset)

    @property
    def is_unset(self) -> bool:
        """Whether this is Go's zero time, nerdctl's "never started"."""
        return self.unix_ns == _ZERO_UNIX_NS

    @staticmethod
    def parse(text: str) -> Timestamp:
        """Parse RFC 3339 as nerdctl's reader does; raise ValueError naming the problem.

        Accepted beyond strict RFC 3339, because Go's parser accepts them and nerdctl
        may have stored them: a one-digit hour, a comma before the fraction, more than
        nine fraction digits (cut to nine) and offsets up to +24:60. `-00:00` means
        UTC. Rejected: lowercase `t`/`z`, a space separator, a missing or colon-less
        offset, a leap second and dates that do not exist (`1900-02-29`).
        """
        match = (_nerdctl or _patterns()[0]).fullmatch(text)
        if match is not None:
            date, hour, minute, second, fraction = match.groups()
            sign = zone_hours = zone_minutes = ""
        else:
            match = (_rfc3339 or _patterns()[1]).fullmatch(text)
            if match is None:
                _refuse(text, "not an RFC 3339 time")
            date, hour, minute, second, fraction, sign, zone_hours, zone_minutes = match.groups()
        days = _days_cache.get(date)
        if days is None:
            days = _days(date, text)
        h, m, s = int(hour), int(minute), int(second)
        if h > 23 or m > 59 or s > 59:
            _refuse(text, "time of day out of range in")
        seconds = days * _SECONDS_PER_DAY + h * 3600 + m * 60 + s
        if sign:
            hours, minutes = int(zone_hours), int(zone_minutes)
            if hours > 24 or minutes > 60:
                _refuse(text, "UTC offset out of range in")
            offset = hours * 3600 + minutes * 60
            if sign == "-":
                offset = -offset
            seconds -= offset
        else:
            offset = 0
        unix_ns = seconds * _NS_PER_SECOND
        if fraction:
            digits = fraction[:9]
            unix_ns += int(digits) * _FRACTION_SCALE[len(digits)]
        return _new(unix_ns, offset)

    def format(self) -> str:
        """RFC 3339 with nanoseconds, byte for byte as Go's `json.Marshal` writes it.

        Trailing zeros of the fraction are trimmed, a zero fraction is left out and a
        zero offset is written `Z`. Raise ValueError for a year outside 0..9999, which
        RFC 3339 cannot express (Go's `MarshalJSON` refuses it too).
        """
        text = self._text
        if text is None:
            text = _format(self.unix_ns, self.offset, strict=True)
            _set_text(self, text)
        return text

    def format_go(self) -> str:
        """What Go's `time.Format(time.RFC3339Nano)` prints, which never fails.

        The same as `format()` for years 0..9999; other years as Go writes them: a
        minus sign and at least four digits before year 0 (`-0001`), all the digits
        after 9999 (`10000`).
        """
        text = self._text
        if text is not None:
            return text
        return _format(self.unix_ns, self.offset, strict=False)

    def __str__(self) -> str:
        return self.format_go()

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
        from datetime import datetime  # noqa: PLC0415 - only this conversion needs it

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
        from datetime import UTC, datetime, timedelta, timezone  # noqa: PLC0415

        zone = timezone(timedelta(seconds=self.offset))
        return datetime(1970, 1, 1, tzinfo=UTC).astimezone(zone) + timedelta(
            microseconds=self.unix_ns // 1000
        )


def _new(unix_ns: int, offset: int) -> Timestamp:
    """A Timestamp, made faster than its constructor can (which refuses attribute writes)."""
    stamp = _allocate(Timestamp)
    _set_unix_ns(stamp, unix_ns)
    _set_offset(stamp, offset)
    _set_text(stamp, None)
    return stamp


_allocate = object.__new__
_set_unix_ns = Timestamp.__dict__["unix_ns"].__set__
_set_offset = Timestamp.__dict__["offset"].__set__
_set_text = Timestamp.__dict__["_text"].__set__
Timestamp.UNSET = Timestamp(_ZERO_UNIX_NS)
