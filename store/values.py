"""The text of one field, as a value file holds it: one codec for the filesystem and the CLI.

`render` gives what `cat started_at` prints; `parse` takes what `echo ... > started_at`
or `lifecyclefs set started_at=...` writes and returns the change to apply inside a
transform, so parsing (and its ValueError) happens before any lock is taken.
"""

from __future__ import annotations

from store.timestamp import Timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final, TypeAlias

    from store.codec import Lifecycle

MAX_VALUE_BYTES: Final = 4096
"""The longest value a write may carry, newline included (sysfs's page)."""

Update: TypeAlias = "Callable[[Lifecycle], None]"
"""A change to one record, applied inside `Store.transform`."""

_DAY_SECONDS: Final = 86_400


def _strip_newline(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def render_started_at(record: Lifecycle) -> str:
    """The time as nerdctl prints it and a newline, or nothing at all when unset."""
    if record.started_at.is_unset:
        return ""
    return record.started_at.format_go() + "\n"


def parse_started_at(text: str) -> Update:
    """RFC 3339 (offset kept), `now`, or an empty line for unset; ValueError otherwise.

    Offsets of 24 hours or more are refused although nerdctl's reader loads them: its
    writer cannot write them back, so storing one would break nerdctl's next transform.
    """
    value = _strip_newline(text)
    if value == "":
        started_at = Timestamp.UNSET
    elif value == "now":
        started_at = Timestamp.now()
    else:
        started_at = Timestamp.parse(value)
        if abs(started_at.offset) >= _DAY_SECONDS:
            raise ValueError(f"UTC offset of 24 hours or more in {value!r}")

    def update(record: Lifecycle) -> None:
        record.started_at = started_at

    return update


def render_create_error(record: Lifecycle) -> str:
    """`true` or `false` and a newline."""
    return "true\n" if record.create_error else "false\n"


_BOOLEANS: Final = {"true": True, "1": True, "false": False, "0": False}


def parse_create_error(text: str) -> Update:
    """`true`, `false`, `1` or `0`, with an optional newline; ValueError otherwise."""
    value = _strip_newline(text)
    try:
        create_error = _BOOLEANS[value]
    except KeyError:
        raise ValueError(f"expected true, false, 1 or 0, not {value!r}") from None

    def update(record: Lifecycle) -> None:
        record.create_error = create_error

    return update


class Field:
    """One field of the record as text: how it is shown and how a new value is read."""

    __slots__ = ("name", "parse", "render")

    def __init__(
        self, name: str, render: Callable[[Lifecycle], str], parse: Callable[[str], Update]
    ) -> None:
        self.name = name
        self.render = render
        self.parse = parse

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


FIELDS: Final = {
    field.name: field
    for field in (
        Field("started_at", render_started_at, parse_started_at),
        Field("create_error", render_create_error, parse_create_error),
    )
}
"""The fields a value file or `lifecyclefs get/set` can name, in display order."""


def decode_value(data: bytes) -> str:
    """The text of a written value, which must be UTF-8; ValueError otherwise.

    The size bound, MAX_VALUE_BYTES, is the writer's to check: it has its own errno.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError("a value must be UTF-8 text") from error
