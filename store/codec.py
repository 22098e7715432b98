"""`lifecycle.json` bytes <-> a `Lifecycle` record, exactly as nerdctl v2.0.3 does it.

Writing produces the bytes of Go's `json.Marshal` of nerdctl's struct: compact,
`started_at` then `create_error`, no trailing newline. Reading accepts what Go's
`json.Unmarshal` into that struct accepts and rejects what it rejects, with one
deliberate difference: keys we do not know are kept and written back (nerdctl drops
them).

Records in nerdctl's own layout are read without any JSON machinery (`json` is not even
imported); everything else goes through `store.jsontext`, Python's C decoder told what
Go would see.
"""

from __future__ import annotations

from store.rawjson import RawJSON
from store.timestamp import Timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Final, TypeAlias

    _Fields: TypeAlias = tuple[Timestamp, bool, tuple[tuple[str, object], ...]]

_HEAD: Final = b'{"started_at":"'
_FALSE_TAIL: Final = b'","create_error":false}'
_TRUE_TAIL: Final = b'","create_error":true}'
_FALSE_MIDDLE: Final = b'","create_error":false,'
_TRUE_MIDDLE: Final = b'","create_error":true,'
_CACHED_RECORD_BYTES: Final = 256
"""Longer records are never cached: the cache holds at most about a megabyte."""
_CACHED_RECORDS: Final = 4096
_records: dict[bytes, _Fields] = {}
"""Decoded records by their bytes (small ones, whose extra values are immutable): most
loads see bytes seen before, every read through the mount of an unchanged record."""
_IMMUTABLE: Final = frozenset({str, int, float, bool, type(None), RawJSON})
_FOLDED: Final = {"started_at": "STARTED_AT", "create_error": "CREATE_ERROR"}
_KNOWN: Final = frozenset(_FOLDED.values())
_tails: dict[bytes, tuple[tuple[str, object], ...]] = {}
"""The extra members after nerdctl's two keys, decoded, by their bytes (immutable ones)."""
_extra_texts: dict[int, tuple[tuple[tuple[str, object], ...], str]] = {}
"""Encoded extra members, by the identity of their (immutable) tuple."""
_jsontext: ModuleType | None = None
_parse_time = Timestamp.parse


class Lifecycle:
    """One container's lifecycle record.

    `started_at` is unset (`Timestamp.UNSET`) until the container starts;
    `create_error` says whether hook processing failed at create time. `extra` holds
    the keys nerdctl does not know, in file order, so that they survive a transform:
    (name, value) pairs whose values are what `json` decodes, or `RawJSON`.
    """

    __slots__ = ("create_error", "extra", "started_at")

    started_at: Timestamp
    create_error: bool
    extra: tuple[tuple[str, object], ...]

    def __init__(
        self,
        started_at: Timestamp = Timestamp.UNSET,
        create_error: bool = False,
        extra: tuple[tuple[str, object], ...] = (),
    ) -> None:
        self.started_at = started_at
        self.create_error = create_error
        self.extra = extra

    def copy(self) -> Lifecycle:
        """An independent copy (the fields themselves are immutable)."""
        return Lifecycle(self.started_at, self.create_error, self.extra)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lifecycle):
            return NotImplemented
        return (
            self.started_at == other.started_at
            and self.create_error == other.create_error
            and self.extra == other.extra
        )

    __hash__ = None  # type: ignore[assignment] # mutable

    def __repr__(self) -> str:
        return (
            f"Lifecycle(started_at={self.started_at!r}, create_error={self.create_error!r}"
            f", extra={self.extra!r})"
        )


def encode(record: Lifecycle) -> bytes:
    """The exact bytes nerdctl writes for this record.

    TypeError if a field holds the wrong type, ValueError if a value cannot be written
    (a year outside 0-9999, an extra value that is not JSON data). Whatever `decode`
    returned encodes.
    """
    started_at = record.started_at
    if not isinstance(started_at, Timestamp):
        raise TypeError(f"started_at must be a Timestamp, not {type(started_at).__name__}")
    create_error = record.create_error
    if create_error is True:
        tail = '","create_error":true'
    elif create_error is False:
        tail = '","create_error":false'
    else:
        raise TypeError(f"create_error must be a bool, not {type(create_error).__name__}")
    text = '{"started_at":"' + started_at.format() + tail
    extra = record.extra
    if extra:
        known = _extra_texts.get(id(extra))
        text += known[1] if known is not None and known[0] is extra else _encode_extra(extra)
    return (text + "}").encode()


def _encode_extra(extra: tuple[tuple[str, object], ...]) -> str:
    json = _jsontext or _load_jsontext()
    try:
        text = "".join("," + json.dump(key) + ":" + json.dump(value) for key, value in extra)
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"an extra key cannot be written as JSON: {error}") from error
    if len(text) <= _CACHED_RECORD_BYTES and _immutable(extra):
        # Kept by identity, with the tuple itself (so its id is not reused): decoded
        # records share their extra tuple, and most transforms leave it as it is.
        if len(_extra_texts) >= _CACHED_RECORDS:
            _extra_texts.clear()
        _extra_texts[id(extra)] = (extra, text)
    return text


def _immutable(extra: tuple[tuple[str, object], ...]) -> bool:
    return all(key.__class__ is str and value.__class__ in _IMMUTABLE for key, value in extra)


def decode(data: bytes) -> Lifecycle:
    """The record in `data`, read as nerdctl reads it; ValueError says why it cannot be.

    Key names match case-insensitively (Go's folding), the last of duplicate keys wins,
    `null` leaves a field unset, and a missing key leaves it unset too (nerdctl would
    keep a stale in-memory value there; we never do).
    """
    known = _records.get(data)
    if known is not None:
        return Lifecycle(known[0], known[1], known[2])
    # nerdctl's own two keys, the commonest record, matched here rather than by
    # _decode_nerdctl_layout: going through it cost 3% of a load, measured side by side.
    if data.startswith(_HEAD):
        end = data.find(b'"', 15)
        tail = data[end:]
        if end > 0 and tail in (_FALSE_TAIL, _TRUE_TAIL):
            try:
                started_at = _parse_time(data[15:end].decode("ascii"))
            except ValueError:
                pass
            else:
                create_error = tail == _TRUE_TAIL
                if len(data) <= _CACHED_RECORD_BYTES:
                    if len(_records) >= _CACHED_RECORDS:
                        _records.clear()
                    _records[data] = (started_at, create_error, ())
                return Lifecycle(started_at, create_error)
    record, immutable = _decode_nerdctl_layout(data) or _decode_json(data)
    if immutable and len(data) <= _CACHED_RECORD_BYTES:
        if len(_records) >= _CACHED_RECORDS:
            _records.clear()
        _records[data] = (record.started_at, record.create_error, record.extra)
    return record


def _decode_nerdctl_layout(data: bytes) -> tuple[Lifecycle, bool] | None:
    """nerdctl's layout followed by more keys: the record, and whether it is immutable.

    None for anything else: the general decoder then takes it (and says why it cannot
    be read, if it cannot). The keys after nerdctl's two are decoded once per text.
    """
    if not data.startswith(_HEAD):
        return None
    end = data.find(b'"', 15)
    if end < 0:
        return None
    rest = data[end:]
    if rest.startswith(_FALSE_MIDDLE):
        create_error = False
        extra, immutable = _extras(rest[len(_FALSE_MIDDLE) - 1 :])
    elif rest.startswith(_TRUE_MIDDLE):
        create_error = True
        extra, immutable = _extras(rest[len(_TRUE_MIDDLE) - 1 :])
    else:
        return None
    if extra is None:
        return None
    try:
        started_at = _parse_time(data[15:end].decode("ascii"))
    except ValueError:
        return None
    return Lifecycle(started_at, create_error, extra), immutable


def _extras(tail: bytes) -> tuple[tuple[tuple[str, object], ...] | None, bool]:
    """The members of `tail` (`,` then members then `}`), and whether they are immutable.

    None if one of them is a key nerdctl knows, or `tail` is not the end of a JSON
    object: the general decoder then takes the whole record.
    """
    known = _tails.get(tail)
    if known is not None:
        return known, True
    json = _jsontext or _load_jsontext()
    try:
        members = json.read_members(b"{" + tail[1:])
    except ValueError:
        return None, False
    if not members:  # `,}` is not JSON
        return None, False
    extra = []
    for key, value in members:
        if (_FOLDED.get(key) or _fold(key)) in _KNOWN:
            return None, False
        extra.append((key, str(value) if isinstance(value, json.EscapedStr) else value))
    found = tuple(extra)
    immutable = _immutable(found)
    if immutable and len(tail) <= _CACHED_RECORD_BYTES:
        if len(_tails) >= _CACHED_RECORDS:
            _tails.clear()
        _tails[tail] = found
    return found, immutable


def _load_jsontext() -> ModuleType:
    global _jsontext  # noqa: PLW0603 - imported on first use: nerdctl's layout needs no JSON
    from store import jsontext  # noqa: PLC0415

    _jsontext = jsontext
    return jsontext


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


def _decode_json(data: bytes) -> tuple[Lifecycle, bool]:
    json = _jsontext or _load_jsontext()
    members = json.read_members(data)
    record = Lifecycle()
    if members is None:
        return record, True
    extra: list[tuple[str, object]] = []
    immutable = True
    for key, value in members:
        member = value
        name = _FOLDED.get(key) or _fold(key)
        if name == "STARTED_AT":
            if member is None:
                continue
            if not isinstance(member, str):
                raise ValueError(f"started_at is a JSON {json.kind(member)}, not a string")
            if isinstance(member, json.EscapedStr):
                raise ValueError(
                    "started_at is written with JSON escapes, which nerdctl cannot read"
                )
            try:
                record.started_at = Timestamp.parse(member)
            except ValueError as error:
                raise ValueError(f"started_at: {error}") from error
        elif name == "CREATE_ERROR":
            if member is None:
                continue
            if member is not True and member is not False:
                raise ValueError(f"create_error is a JSON {json.kind(member)}, not true or false")
            record.create_error = member
        else:
            if isinstance(member, json.EscapedStr):
                member = str(member)
            elif member.__class__ not in _IMMUTABLE:
                immutable = False
            extra.append((key, member))
    record.extra = tuple(extra)
    return record, immutable
