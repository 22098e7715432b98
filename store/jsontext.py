"""JSON as nerdctl's Go reader sees it, read with Python's C decoder wherever that is exact.

`read_members` gives the members of a record's top-level object in file order,
duplicates included. Two things Python's decoder would hide from us are kept:

- whether a string value was written with escapes (`EscapedStr`): Go's time parser
  reads the raw bytes between the quotes, so an escaped `started_at` is an error there;
- numbers exactly as written when Python cannot hold them (`RawJSON`): `1e999` would
  become `inf`, a 5000-digit integer would hit Python's digit limit, yet both are valid
  JSON that nerdctl reads (and skips). Values nested deeper than `DEPTH_AS_VALUES` are
  kept as text as well, so that nothing here or later recurses deeply.

The common record has no backslash and few brackets: it is decoded by one call of the C
scanner. Only other records take the member-by-member path, which still scans strings
and values in C.
"""

from __future__ import annotations

import json
import json.decoder
import json.encoder
import math
import re

from store.rawjson import RawJSON

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final, NoReturn

DEPTH_AS_VALUES: Final = 128
"""Values nested deeper than this are kept as `RawJSON` text, not as Python lists/dicts."""
MAX_DEPTH: Final = 10_000
"""Go's encoding/json refuses documents nested deeper than this (maxNestingDepth)."""
_MAX_INT_CHARS: Final = 640
"""The longest integer text converted to `int`: Python's digit limit can never be lower."""
_WHITESPACE: Final = " \t\n\r"


class EscapedStr(str):
    """A top-level string value whose JSON text held escapes (Go's time parser sees them)."""

    __slots__ = ()


class _Object(dict[str, object]):
    """A decoded JSON object that also remembers its members in order, duplicates included."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def _number_float(text: str) -> object:
    value = float(text)
    if not math.isfinite(value):
        return RawJSON(text)
    if value == 0 and text.lower().partition("e")[0].strip("-0."):
        return RawJSON(text)  # underflow: a non-zero number Python would read as zero
    return value


def _number_int(text: str) -> object:
    return int(text) if len(text) <= _MAX_INT_CHARS else RawJSON(text)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"not valid JSON: {name} is not a JSON value")


_decoder: Final = json.JSONDecoder(
    object_pairs_hook=_Object,
    parse_float=_number_float,
    parse_int=_number_int,
    parse_constant=_reject_constant,
)
_scan: Final[Callable[[str, int], tuple[object, int]]] = _decoder.scan_once  # type: ignore[attr-defined]
_scanstring: Final[Callable[[str, int, bool], tuple[str, int]]] = json.decoder.scanstring  # type: ignore[attr-defined]
_quote: Final[Callable[[str], str]] = json.encoder.encode_basestring_ascii
_containers: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def kind(value: object) -> str:
    """The JSON kind of a decoded value, for error messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, RawJSON):
        return "number" if value.text[:1] not in ("[", "{") else "array or object"
    return "object"


def read_members(data: bytes) -> list[tuple[str, object]] | None:
    """The members of the JSON object in `data` in order; None for `null`.

    ValueError when `data` is not one JSON value (empty, trailing garbage...) or is
    another kind of value. A string member value written with escapes is an
    `EscapedStr`. Invalid UTF-8 in strings reads as U+FFFD, as in Go.
    """
    text = data.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    if start == len(text):
        raise ValueError("the record is empty (nerdctl: unexpected end of JSON input)")
    brackets = data.count(b"[") + data.count(b"{")
    if "\\" not in text and brackets <= DEPTH_AS_VALUES:
        return _members_at_once(text, start)
    return _members_one_by_one(text, start, deep=brackets > DEPTH_AS_VALUES)


def _members_at_once(text: str, start: int) -> list[tuple[str, object]] | None:
    value, end = _scan_value(text, start)
    _expect_end(text, end)
    if isinstance(value, _Object):
        return value.pairs
    if value is None:
        return None
    raise ValueError(f"the record is a JSON {kind(value)}, not an object")


def _members_one_by_one(text: str, start: int, *, deep: bool) -> list[tuple[str, object]] | None:
    if text[start] != "{":
        return _members_at_once(text, start)
    pairs: list[tuple[str, object]] = []
    index = _skip(text, start + 1)
    if text.startswith("}", index):
        _expect_end(text, index + 1)
        return pairs
    while True:
        if not text.startswith('"', index):
            _syntax(text, index, "expecting a property name in double quotes")
        key, index = _scan_string(text, index)
        index = _skip(text, index)
        if not text.startswith(":", index):
            _syntax(text, index, "expecting ':'")
        index = _skip(text, index + 1)
        value: object
        if text.startswith('"', index):
            start_of_value = index
            value, index = _scan_string(text, index)
            if "\\" in text[start_of_value:index]:
                value = EscapedStr(value)
        elif deep and text.startswith(("[", "{"), index):
            value, index = _nested_value(text, index)
        else:
            value, index = _scan_value(text, index)
        pairs.append((key, value))
        index = _skip(text, index)
        if text.startswith(",", index):
            index = _skip(text, index + 1)
        elif text.startswith("}", index):
            _expect_end(text, index + 1)
            return pairs
        else:
            _syntax(text, index, "expecting ',' or '}'")


def _skip(text: str, index: int) -> int:
    while text.startswith((" ", "\t", "\n", "\r"), index):
        index += 1
    return index


def _syntax(text: str, index: int, problem: str) -> NoReturn:
    raise ValueError(f"not valid JSON: {problem} at character {index}")


def _expect_end(text: str, index: int) -> None:
    if text[index:].strip(_WHITESPACE):
        _syntax(text, index, "extra data after the value")


def _scan_string(text: str, index: int) -> tuple[str, int]:
    try:
        return _scanstring(text, index + 1, True)
    except ValueError as error:
        raise ValueError(f"not valid JSON: {error}") from error


def _scan_value(text: str, index: int) -> tuple[object, int]:
    try:
        return _scan(text, index)
    except StopIteration as stop:
        _syntax(text, stop.value, "expecting a value")
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error}") from error
    except RecursionError as error:
        raise ValueError("not valid JSON for this reader: nested too deeply") from error


_token: re.Pattern[str] | None = None


def _tokens() -> re.Pattern[str]:
    global _token  # noqa: PLW0603 - compiled on first use: few records need it
    if _token is None:
        _token = re.compile(
            r"[ \t\n\r]*(?:"
            r'(?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")'
            r"|(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
            r"|(?P<literal>true|false|null)"
            r"|(?P<punctuation>[\[\]{}:,])"
            r")"
        )
    return _token


def _nested_value(text: str, index: int) -> tuple[object, int]:
    """The array or object at `index` (a member of the top-level object) and its end.

    Checked without recursion, as Go checks it (at most `MAX_DEPTH` levels in all);
    kept as `RawJSON` when nested deeper than `DEPTH_AS_VALUES`.
    """
    token = _tokens()
    stack: list[str] = []
    deepest = 0
    parts: list[str] = []
    expect = _VALUE
    position = index
    while True:
        match = token.match(text, position)
        if match is None:
            _syntax(text, position, "expecting a JSON token")
        piece = match[match.lastgroup or 0]
        position = match.end()
        parts.append(piece)
        following = _next_expected(expect, piece, match.lastgroup == "string", stack)
        if following is None:
            _syntax(text, position, "unexpected token")
        expect = following
        deepest = max(deepest, len(stack))
        if len(stack) + 1 > MAX_DEPTH:  # the top-level object is one level
            _syntax(text, position, "exceeded max depth")
        if expect == _AFTER_VALUE and not stack:
            break
    if deepest > DEPTH_AS_VALUES:
        return RawJSON("".join(parts)), position
    return _scan_value(text, index)[0], position


# What the nested-value checker expects next.
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _AFTER_VALUE = range(6)


def _next_expected(expect: int, piece: str, is_string: bool, stack: list[str]) -> int | None:
    """What follows `piece` when `expect` was expected (None: `piece` is an error).

    `stack` holds the open arrays and objects, and is updated.
    """
    if expect in (_VALUE, _VALUE_OR_CLOSE):
        if piece in ("[", "{"):
            stack.append(piece)
            return _VALUE_OR_CLOSE if piece == "[" else _KEY_OR_CLOSE
        if piece == "]" and expect == _VALUE_OR_CLOSE:
            stack.pop()
            return _AFTER_VALUE
        return None if piece in ("]", "}", ":", ",") else _AFTER_VALUE
    if expect in (_KEY, _KEY_OR_CLOSE):
        if is_string:
            return _COLON
        if piece == "}" and expect == _KEY_OR_CLOSE:
            stack.pop()
            return _AFTER_VALUE
        return None
    if expect == _COLON:
        return _VALUE if piece == ":" else None
    if piece == ",":
        return _VALUE if stack[-1] == "[" else _KEY
    if piece == ("]" if stack[-1] == "[" else "}"):
        stack.pop()
        return _AFTER_VALUE
    return None


def dump(value: object) -> str:
    """`value` as compact JSON; `RawJSON` verbatim. ValueError if it is not JSON data."""
    cls = type(value)
    if cls is str:
        return _quote(value)  # type: ignore[arg-type]
    if value is None:
        return "null"
    if cls is bool:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        return float.__repr__(value)
    if isinstance(value, RawJSON):
        return value.text
    try:
        return _containers.encode(value)
    except TypeError:  # a RawJSON inside, or something that is not JSON data
        return _dump_nested(value)


def _dump_nested(value: object) -> str:
    if isinstance(value, RawJSON):
        return value.text
    if isinstance(value, dict):
        members = []
        for key, member in value.items():
            if not isinstance(key, str):
                raise TypeError(f"an object key must be a string, not {type(key).__name__}")
            members.append(_quote(key) + ":" + _dump_nested(member))
        return "{" + ",".join(members) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dump_nested(item) for item in value) + "]"
    try:
        return _containers.encode(value)
    except TypeError as error:
        raise ValueError(str(error)) from error
