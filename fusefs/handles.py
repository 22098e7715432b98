"""Open files and directories of the mount: what each handle holds, counted per user.

A handle pins no descriptor: a reader holds the bytes it serves (a snapshot of the
record rendered at open), a writer only what it writes to, a listing the names and
attributes it was opened with. What each pins is counted against its user's budget.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pyfuse3

from fusefs.budgets import Budgets
from fusefs.files import ContainerFile
from fusefs.inodes import Node
from fusefs.tempfiles import TempFile
from fusefs.view import Parts


@dataclass(slots=True, eq=False)
class ReadHandle:
    """A container file open for reading: the value as rendered at open.

    `latest` is a newer value, served from the next read at offset 0 on, as sysfs
    attributes are re-read after a seek to the start: for a reader through the page
    cache, the value of the kernel's last attribute reply (its size stands for it);
    otherwise the last value noticed. `poll` is the `poll` waiter to wake when the
    value changes.
    """

    node: Node
    file: ContainerFile
    data: bytes
    uid: int
    latest: bytes | None = None
    poll: pyfuse3.PollHandle | None = None
    cached: bool = False
    """Its reads go through the kernel's page cache (else: direct I/O)."""
    opened_at: float = 0.0

    @property
    def pinned(self) -> int:
        """Bytes this handle holds (as counted when it was opened)."""
        return len(self.data)


@dataclass(slots=True, eq=False)
class WriteHandle:
    """A value file open for writing: each write commits one whole value."""

    node: Node
    file: ContainerFile
    uid: int

    @property
    def pinned(self) -> int:
        """Bytes this handle holds."""
        return 0


@dataclass(slots=True, eq=False)
class TempHandle:
    """A temporary file open for reading and writing."""

    node: Node
    temp: TempFile
    uid: int

    @property
    def pinned(self) -> int:
        """Bytes this handle holds (the temporary file's own are counted with it)."""
        return 0


@dataclass(slots=True, eq=False)
class DirHandle:
    """A directory's entries as they were at opendir, so that readdir offsets are stable."""

    parts: Parts
    names: list[bytes]
    """The entries' names (a listing shared with the cache: never changed)."""
    uid: int
    pinned: int


FileHandle = ReadHandle | WriteHandle | TempHandle


class HandleTable:
    """Handles by number, each counted in its user's budget until released."""

    def __init__(self, budgets: Budgets) -> None:
        self._budgets = budgets
        self._numbers = itertools.count(1)
        self._counted: dict[int, int] = {}
        self.files: dict[int, FileHandle] = {}
        self.dirs: dict[int, DirHandle] = {}

    def _count(self, uid: int, pinned: int) -> int:
        self._budgets.open_handle(uid, pinned)
        fh = next(self._numbers)
        self._counted[fh] = pinned
        return fh

    def _uncount(self, fh: int, uid: int) -> None:
        self._budgets.close_handle(uid, self._counted.pop(fh))

    def add_file(self, handle: FileHandle) -> int:
        """Register `handle`; EMFILE/ENOMEM when its user is at the limit."""
        fh = self._count(handle.uid, handle.pinned)
        self.files[fh] = handle
        return fh

    def pop_file(self, fh: int) -> FileHandle:
        """Forget handle `fh` and give its budget back."""
        handle = self.files.pop(fh)
        self._uncount(fh, handle.uid)
        return handle

    def add_dir(self, handle: DirHandle) -> int:
        """Register a directory handle; EMFILE/ENOMEM when its user is at the limit."""
        fh = self._count(handle.uid, handle.pinned)
        self.dirs[fh] = handle
        return fh

    def pop_dir(self, fh: int) -> DirHandle:
        """Forget directory handle `fh` and give its budget back."""
        handle = self.dirs.pop(fh)
        self._uncount(fh, handle.uid)
        return handle
