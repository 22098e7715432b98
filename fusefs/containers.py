"""The containers below SOURCE, as the mount shows them, for `check`, `ps` and `watch`.

Containers are the visible directories `depth` levels below SOURCE (the view's rules:
no hidden entries, no files, no symlinks, nothing outside SOURCE). Records are read as
`Store.snapshot()` reads them: without the lock, which is safe because every writer
replaces the record by an atomic rename.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

from fusefs.view import Parts, View
from store import Lifecycle, LifecycleStoreError
from store.record import read_record
from store.values import FIELDS


def open_view(source: str, depth: int) -> View:
    """The view of SOURCE for a command; `CommandError` (one line) when it cannot be opened."""
    from fusefs.cli import CommandError  # noqa: PLC0415 - cli imports the commands that use us

    try:
        return View(source, depth)
    except OSError as error:
        raise CommandError(f"cannot open {source}: {error.strerror}") from error


def walk(view: View, under: Parts = ()) -> Iterator[Parts]:
    """Every container directory at or below `under`, depth first, in name order.

    A directory removed while the walk goes on is skipped, not an error.
    """
    if view.is_container(under):
        yield under
        return
    try:
        entries = view.list_names(under, limit=sys.maxsize)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in entries:
        yield from walk(view, (*under, name))


def read_snapshot(view: View, container: Parts) -> Lifecycle | None:
    """The container's last committed record, without the lock; None when it has none.

    None too when the container itself is gone. Raise `LifecycleStoreError` when the
    record cannot be read or nerdctl would refuse it (`RecordCorruptError`).
    """
    path = view.record_path(container)
    try:
        fd = view.open_record(container)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise LifecycleStoreError.from_os_error("cannot read", path, error) from error
    try:
        return read_record(fd, path)[0]
    finally:
        os.close(fd)


def is_io_error(error: LifecycleStoreError) -> bool:
    """Whether reading failed (EACCES, EIO...), as opposed to a record nerdctl refuses."""
    return isinstance(error.__cause__, OSError)


def started_at_value(record: Lifecycle) -> str | None:
    """`started_at` exactly as stored (nerdctl's RFC 3339), or None when never started."""
    return FIELDS["started_at"].render(record).rstrip("\n") or None


def relative_path(container: Parts) -> str:
    """The container's path below SOURCE (`default/r1`), decoded as `os.fsdecode` does."""
    return "/".join(os.fsdecode(name) for name in container)


def printable(text: str) -> str:
    """`text` safe on one line of a terminal: control characters and bytes that are not
    UTF-8 (as `os.fsdecode` keeps them) are shown as Python escapes (`\\n`, `\\xff`)."""
    if text.isprintable():
        return text
    return "".join(map(_printable_char, text))


def _printable_char(char: str) -> str:
    if char.isprintable():
        return char
    if "\udc80" <= char <= "\udcff":  # a byte os.fsdecode could not decode
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1]
