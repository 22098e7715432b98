"""Files that tools make in a container directory while they save: in memory, bounded.

`sed -i`, vim, Python's `tempfile` + `os.replace` and friends write a new file next to
the one they save and rename it over the original (vim also keeps a swap file; install
unlinks the original and creates it again). A container directory holds only its value
files, so these temporary files live in the daemon's memory: never on disk, bounded
per file, per container and per user, listed only to their creator, and gone when
unlinked, when renamed over a value file (which commits their content), or once they
have sat closed for `IDLE_SECONDS`.

An unlinked value file is not removed (state goes only through nerdctl or `lifecyclefs
delete`): for a few seconds its name is free for the user who unlinked it, so that the
file created in its place, whose writes commit as any write does, replaces it.
"""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from pyfuse3 import EntryAttributes, SetattrFields

from fusefs.budgets import Budgets
from fusefs.errors import fail
from fusefs.view import Parts

MAX_FILE_BYTES: Final = 65_536
"""The largest temporary file; a write past it: EFBIG."""
MAX_PER_CONTAINER: Final = 16
"""Temporary files in one container directory; beyond: ENOSPC."""
IDLE_SECONDS: Final = 30.0
"""A temporary file closed this long is removed."""
UNLINKED_SECONDS: Final = 5.0
"""How long an unlinked value file's name stays free for the user who unlinked it."""
MAX_UNLINKED: Final = 4096


def _now_ns() -> int:
    return time.time_ns()


@dataclass(slots=True, eq=False)
class TempFile:
    """A tool's temporary file in a container directory."""

    container: Parts
    name: bytes
    creator: int
    """The user who made it: it is listed to them only, and counted in their budget."""
    uid: int
    gid: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    acl: bytes | None = None
    """A POSIX ACL set on it (`system.posix_acl_access`), as its xattr bytes."""
    open_count: int = 0
    closed_at: float = field(default_factory=time.monotonic)
    atime_ns: int = field(default_factory=_now_ns)
    mtime_ns: int = field(default_factory=_now_ns)
    ctime_ns: int = field(default_factory=_now_ns)

    @property
    def times_ns(self) -> tuple[int, int, int]:
        """(atime, mtime, ctime) in nanoseconds."""
        return self.atime_ns, self.mtime_ns, self.ctime_ns

    def set_access_acl(self, value: bytes, mode: int, *, extended: bool) -> None:
        """Take access ACL `value`, whose permission bits are `mode` (kept only if `extended`)."""
        self.mode = self.mode & ~0o777 | mode
        self.acl = value if extended else None
        self.touch(content=False)

    def touch(self, *, content: bool) -> None:
        """Note a change of the content (mtime and ctime) or of the metadata (ctime)."""
        now = _now_ns()
        self.ctime_ns = now
        if content:
            self.mtime_ns = now


class TempFiles:
    """Every container's temporary files, and the value files unlinked a moment ago."""

    def __init__(self, budgets: Budgets) -> None:
        self._budgets = budgets
        self._by_container: dict[Parts, dict[bytes, TempFile]] = {}
        self._unlinked: dict[tuple[Parts, bytes, int], float] = {}

    def __iter__(self) -> Iterator[TempFile]:
        for files in self._by_container.values():
            yield from files.values()

    def get(self, container: Parts, name: bytes) -> TempFile | None:
        """The temporary file `name` of `container`, if there is one."""
        files = self._by_container.get(container)
        return None if files is None else files.get(name)

    def listed_to(self, container: Parts, uid: int) -> list[TempFile]:
        """The temporary files of `container` that `uid` made, by name."""
        files = self._by_container.get(container, {})
        return sorted(
            (temp for temp in files.values() if temp.creator == uid), key=lambda t: t.name
        )

    def create(self, container: Parts, name: bytes, uid: int, gid: int, mode: int) -> TempFile:
        """A new empty temporary file; EEXIST, ENOSPC (container full) or EDQUOT (user)."""
        files = self._by_container.setdefault(container, {})
        if name in files:
            raise fail(errno.EEXIST)
        if len(files) >= MAX_PER_CONTAINER:
            raise fail(errno.ENOSPC)
        self._budgets.add_temp(uid, 1, 0)
        temp = files[name] = TempFile(container, name, uid, uid, gid, mode)
        return temp

    def write(self, temp: TempFile, offset: int, data: bytes) -> int:
        """Write `data` at `offset` (a hole reads as zeros); EFBIG past MAX_FILE_BYTES."""
        end = offset + len(data)
        if end > MAX_FILE_BYTES:
            raise fail(errno.EFBIG)
        self._resize(temp, max(end, len(temp.data)))
        temp.data[offset:end] = data
        temp.touch(content=True)
        return len(data)

    def truncate(self, temp: TempFile, size: int) -> None:
        """Cut or extend (with zeros) to `size` bytes; EFBIG past MAX_FILE_BYTES."""
        if size > MAX_FILE_BYTES:
            raise fail(errno.EFBIG)
        self._resize(temp, size)
        temp.touch(content=True)

    def set_attributes(self, temp: TempFile, attr: EntryAttributes, fields: SetattrFields) -> None:
        """What a setattr asks: size (as `truncate`), mode (dropping any ACL), owner, times."""
        if fields.update_size:
            self.truncate(temp, attr.st_size)
        if fields.update_mode:
            temp.mode = stat.S_IMODE(attr.st_mode)
            temp.acl = None
        if fields.update_uid:
            temp.uid = attr.st_uid
        if fields.update_gid:
            temp.gid = attr.st_gid
        if fields.update_atime:
            temp.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            temp.mtime_ns = attr.st_mtime_ns
        temp.touch(content=False)

    def _resize(self, temp: TempFile, size: int) -> None:
        # An unlinked file still open is no longer counted: MAX_FILE_BYTES bounds it.
        counted = self.get(temp.container, temp.name) is temp
        grown = size - len(temp.data)
        if grown > 0:
            if counted:
                self._budgets.add_temp(temp.creator, 0, grown)
            temp.data.extend(bytes(grown))
        elif grown < 0:
            del temp.data[size:]
            if counted:
                self._budgets.remove_temp(temp.creator, 0, -grown)

    def remove(self, temp: TempFile) -> None:
        """Forget `temp` and give its memory back."""
        files = self._by_container.get(temp.container)
        if files is None or files.get(temp.name) is not temp:
            return
        del files[temp.name]
        if not files:
            del self._by_container[temp.container]
        self._budgets.remove_temp(temp.creator, 1, len(temp.data))

    def rename(self, temp: TempFile, container: Parts, name: bytes) -> TempFile | None:
        """Move `temp` to `name` in `container`; returns the temporary file it replaced."""
        replaced = self.get(container, name)
        if replaced is temp:
            return None
        files = self._by_container.setdefault(container, {})
        if replaced is None and container != temp.container and len(files) >= MAX_PER_CONTAINER:
            raise fail(errno.ENOSPC)
        if replaced is not None:
            self.remove(replaced)
        old = self._by_container[temp.container]
        del old[temp.name]
        if not old:
            del self._by_container[temp.container]
        temp.container, temp.name = container, name
        self._by_container.setdefault(container, {})[name] = temp
        temp.touch(content=False)
        return replaced

    def opened(self, temp: TempFile) -> None:
        """Note an open handle of `temp` (it does not expire while open)."""
        temp.open_count += 1

    def closed(self, temp: TempFile) -> None:
        """Note a handle of `temp` released."""
        temp.open_count -= 1
        temp.closed_at = time.monotonic()

    def expired(self) -> list[TempFile]:
        """Remove and return the temporary files closed for IDLE_SECONDS or more."""
        deadline = time.monotonic() - IDLE_SECONDS
        gone = [temp for temp in self if temp.open_count == 0 and temp.closed_at <= deadline]
        for temp in gone:
            self.remove(temp)
        now = time.monotonic()
        for key in [key for key, until in self._unlinked.items() if until <= now]:
            del self._unlinked[key]
        return gone

    def unlink_value_file(self, container: Parts, name: bytes, uid: int) -> None:
        """Note that `uid` unlinked value file `name`: for a moment the name is free for it."""
        if len(self._unlinked) >= MAX_UNLINKED:
            raise fail(errno.EBUSY)
        self._unlinked[(container, name, uid)] = time.monotonic() + UNLINKED_SECONDS

    def value_file_unlinked(self, container: Parts, name: bytes, uid: int) -> bool:
        """Whether `uid` unlinked value file `name` a moment ago (and has not made it again)."""
        until = self._unlinked.get((container, name, uid))
        if until is None:
            return False
        if until <= time.monotonic():
            del self._unlinked[(container, name, uid)]
            return False
        return True

    def value_file_made_again(self, container: Parts, name: bytes, uid: int) -> None:
        """The unlinked value file `name` was created again: its name is taken again."""
        self._unlinked.pop((container, name, uid), None)
