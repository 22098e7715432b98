"""`lifecycle.json` bytes <-> a `Lifecycle` record, exactly as nerdctl v2.0.3 does it.

Writing produces the bytes of Go's `json.Marshal` of nerdctl's struct: compact,
`started_at` then `create_error`, no trailing newline. Reading accepts what Go's
`json.Unmarshal` into that struct accepts and rejects what it rejects, with one
deliberate difference: keys we do not know are kept and written back.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from store.timestamp import Timestamp

# The layout nerdctl itself writes. The character class admits no escapes or quotes,
# so a match means the general decoder would read the very same record.
_CANONICAL: Final = re.compile(rb'\{"started_at":"([0-9T:.,+\-Z]*)","create_error":(true|false)\}')
_CACHED_RECORDS: Final = 4096
# Records in nerdctl's own layout, decoded, by their bytes: most loads see bytes seen
# before (every read through the mount of an unchanged record).
_canonical_records: dict[bytes, Lifecycle] = {}
_STARTED_AT: Final = "STARTED_AT"
_CREATE_ERROR: Final = "CREATE_ERROR"


@dataclass(slots=True)
class Lifecycle:
    """One container's lifecycle record.

    `started_at` is unset (`Timestamp.UNSET`) until the container starts;
    `create_error` says whether hook processing failed at create time. `extra` holds
    the keys nerdctl does not know, in file order, so that they survive a transform.
    """

    started_at: Timestamp = Timestamp.UNSET
    create_error: bool = False
    extra: tuple[tuple[str, object], ...] = ()

    def copy(self) -> Lifecycle:
        """An independent copy (the fields themselves are immutable)."""
        return Lifecycle(self.started_at, self.create_error, self.extra)


def encode(record: Lifecycle) -> bytes:
    """The exact bytes nerdctl writes for this record.

    TypeError if a field holds the wrong type, ValueError if a value cannot be written
    (a year outside 0-9999, an extra key that is not JSON).
    """
    if not isinstance(record.started_at, Timestamp):
        raise TypeError(f"started_at must be a Timestamp, not {type(record.started_at).__name__}")
    if not isinstance(record.create_error, bool):
        raise TypeError(f"create_error must be a bool, not {type(record.create_error).__name__}")
    head = (
        '{"started_at":"'
        + record.started_at.format()
        + ('","create_error":true' if record.create_error else '","create_error":false')
    )
    if not record.extra:
        return (head + "}").encode()
    try:
        tail = "".join(
            "," + json.dumps(key) + ":" + json.dumps(value, separators=(",", ":"), allow_nan=False)
            for key, value in record.extra
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"an extra key cannot be written as JSON: {error}") from error
    return (head + tail + "}").encode()


def decode(data: bytes) -> Lifecycle:
    """The record in `data`, read as nerdctl reads it; ValueError says why it cannot be.

    Key names match case-insensitively (Go's folding), the last of duplicate keys wins,
    `null` leaves a field unset, and a missing key leaves it unset too (nerdctl would
    keep a stale in-memory value there; we never do).
    """
    known = _canonical_records.get(data)
    if known is not None:
        return known.copy()
    match = _CANONICAL.fullmatch(data)
    if match is None:
        return _decode_general(data)
    record = Lifecycle(
        started_at=Timestamp.parse(match[1].decode("ascii")),
        create_error=match[2] == b"true",
    )
    if len(_canonical_records) >= _CACHED_RECORDS:
        _canonical_records.clear()
    _canonical_records[data] = record.copy()
    return record


class _Object(dict[str, object]):
    """A decoded JSON object that also remembers its members in order, duplicates included."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


class _EscapedString(str):
    """A JSON string whose source held escapes: Go's time parser sees the raw bytes."""

    __slots__ = ()


# The pure-Python scanner, which (unlike the C one) asks `parse_string` for each string
# value. typeshed does not declare these two module attributes.
_py_make_scanner: Callable[[json.JSONDecoder], Callable[[str, int], tuple[object, int]]] = (
    json.scanner.py_make_scanner  # type: ignore[attr-defined]
)
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class _GoCompatibleDecoder(json.JSONDecoder):
    """json's pure-Python scanner, told to mark strings that were written with escapes."""

    def __init__(self) -> None:
        super().__init__(object_pairs_hook=_Object, parse_constant=_reject_constant)
        self.parse_string = self._parse_string
        self.scan_once = _py_make_scanner(self)

    @staticmethod
    def _parse_string(text: str, end: int, strict: bool) -> tuple[str, int]:
        value, new_end = _scanstring(text, end, strict)
        if "\\" in text[end:new_end]:
            value = _EscapedString(value)
        return value, new_end


_decoder: Final = _GoCompatibleDecoder()


def _fold(key: str) -> str:
    """Go's encoding/json key folding: ASCII upper-cased, other runes upper(lower(r))."""
    if key.isascii():
        return key.upper()
    folded = []
    for char in key:
        lower = char.lower()
        upper = lower.upper() if len(lower) == 1 else char
        folded.append(upper if len(upper) == 1 else lower)
    return "".join(folded)


def _decode_general(data: bytes) -> Lifecycle:
    # Go reads invalid UTF-8 inside strings as U+FFFD; "replace" does the same.
    text = data.decode("utf-8", "replace")
    if not text.strip(" \t\r\n"):
        raise ValueError("the record is empty (nerdctl: unexpected end of JSON input)")
    try:
        value = _decoder.decode(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error}") from error
    except RecursionError as error:
        raise ValueError("JSON nested too deeply") from error
    if value is None:
        return Lifecycle()
    if not isinstance(value, _Object):
        raise ValueError(  # noqa: TRY004 - bad data in the file, not a bad argument
            f"the record is a JSON {_json_kind(value)}, not an object"
        )
    record = Lifecycle()
    extra: list[tuple[str, object]] = []
    for key, member in value.pairs:
        folded = _fold(key)
        if folded == _STARTED_AT:
            if member is None:
                continue
            if not isinstance(member, str):
                raise ValueError(f"started_at is a JSON {_json_kind(member)}, not a string")
            if isinstance(member, _EscapedString):
                raise ValueError(
                    "started_at is written with JSON escapes, which nerdctl cannot read"
                )
            try:
                record.started_at = Timestamp.parse(member)
            except ValueError as error:
                raise ValueError(f"started_at: {error}") from error
        elif folded == _CREATE_ERROR:
            if member is None:
                continue
            if not isinstance(member, bool):
                raise ValueError(f"create_error is a JSON {_json_kind(member)}, not true or false")
            record.create_error = member
        else:
            extra.append((key, member))
    record.extra = tuple(extra)
    return record


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
