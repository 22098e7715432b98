"""The files of a container directory: one row each, so a new field is one more row.

Each row says how the file's content is rendered from a record and, for the value
files, how a written value is parsed into a change (through `store.values`, the codec
the command line shares). `lifecycle.json` is the whole record, read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from store.codec import Lifecycle, encode
from store.values import FIELDS, Field, Update


@dataclass(frozen=True, slots=True)
class ContainerFile:
    """A file shown in every container directory."""

    name: bytes
    render: Callable[[Lifecycle], bytes]
    parse: Callable[[str], Update] | None
    """How a written value becomes a change; None for a read-only file."""

    @property
    def writable(self) -> bool:
        """Whether values may be written to this file."""
        return self.parse is not None


def _value_file(field: Field) -> ContainerFile:
    return ContainerFile(
        name=field.name.encode(),
        render=lambda record: field.render(record).encode(),
        parse=field.parse,
    )


FILES: Final = {
    file.name: file
    for file in (
        *(_value_file(field) for field in FIELDS.values()),
        ContainerFile(name=b"lifecycle.json", render=encode, parse=None),
    )
}
"""The files of a container directory, by name, in listing order."""
