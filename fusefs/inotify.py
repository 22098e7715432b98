"""Linux inotify, through ctypes: watch directories, read their events in batches.

The standard library has no inotify. This is the small part lifecyclefs needs: the
mount uses it to drop what the kernel caches when a record changes outside the mount,
and `lifecyclefs watch` to print those changes. An instance is non-blocking: `read()`
returns what is queued (nothing when nothing is), and `fileno()` is what to wait on.

Watches are added through a descriptor the caller has already opened safely
(`add_watch_fd`), because `inotify_add_watch` itself takes a path and would follow
any symlink on the way.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import KeysView
from typing import Final, NamedTuple

from fusefs.view import Parts

IN_ACCESS: Final = 0x00000001
IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_CLOSE_NOWRITE: Final = 0x00000010
IN_OPEN: Final = 0x00000020
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_UNMOUNT: Final = 0x00002000
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
IN_EXCL_UNLINK: Final = 0x04000000
IN_MASK_ADD: Final = 0x20000000
IN_ISDIR: Final = 0x40000000

_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC
_HEADER: Final = struct.Struct("iIII")
_READ_SIZE: Final = 65_536


class Event(NamedTuple):
    """One inotify event: the watch it came from, what happened, and to which name."""

    wd: int
    mask: int
    cookie: int
    name: bytes
    """The entry of the watched directory concerned; empty for the directory itself."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


_c = _libc()


def _check(result: int, doing: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{doing}: {os.strerror(code)}")
    return result


def parse_events(data: bytes) -> list[Event]:
    """The events packed in `data`, as read(2) returns them from an inotify descriptor."""
    events = []
    offset = 0
    while offset < len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = data[offset : offset + length].rstrip(b"\0")
        offset += length
        events.append(Event(wd, mask, cookie, name))
    return events


class Inotify:
    """A non-blocking inotify instance; close it (or use `with`) when done."""

    def __init__(self) -> None:
        self._fd = _check(_c.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        """The descriptor to wait on for readability."""
        return self._fd

    def close(self) -> None:
        """Release the instance and every watch it holds."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def add_watch_fd(self, fd: int, mask: int) -> int:
        """Watch the file or directory open on `fd` (any kind of descriptor, O_PATH too).

        Returns the watch descriptor; watching the same object again returns the same
        one (with IN_MASK_ADD, the masks are merged). OSError (ENOSPC: the user's
        watch limit) when it cannot.
        """
        return self.add_watch(f"/proc/self/fd/{fd}".encode(), mask)

    def add_watch(self, path: bytes, mask: int) -> int:
        """Watch `path` (symlinks on the way are followed: prefer `add_watch_fd`)."""
        return _check(_c.inotify_add_watch(self._fd, path, mask), "inotify_add_watch")

    def remove_watch(self, wd: int) -> None:
        """Stop watching `wd`; a watch the kernel has dropped already is not an error."""
        if _c.inotify_rm_watch(self._fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_rm_watch: {os.strerror(code)}")

    def read(self) -> list[Event]:
        """The events queued now; an empty list when there are none (never blocks)."""
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return []
        return parse_events(data)


class Watches:
    """Directories watched through one `Inotify`, by path (`Parts`) and by watch descriptor.

    inotify gives one descriptor per directory, whatever path reached it: a directory
    watched again under a new path (it was moved) keeps its descriptor, and a path
    watched again may get a new one (another directory is there now). Both maps follow,
    so a path has at most one descriptor and a descriptor one path.
    """

    def __init__(self, instance: Inotify) -> None:
        self._inotify = instance
        self._paths: dict[int, Parts] = {}
        self._wds: dict[Parts, int] = {}

    def add(self, parts: Parts, fd: int, mask: int) -> int:
        """Watch the directory open on `fd` as `parts`; its descriptor. OSError if we cannot."""
        wd = self._inotify.add_watch_fd(fd, mask)
        moved_from = self._paths.get(wd)
        if moved_from is not None and self._wds.get(moved_from) == wd:
            del self._wds[moved_from]
        replaced = self._wds.get(parts)
        if replaced is not None and self._paths.get(replaced) == parts:
            del self._paths[replaced]
        self._paths[wd] = parts
        self._wds[parts] = wd
        return wd

    def path_of(self, wd: int) -> Parts | None:
        """The path watched as `wd`, if it still is."""
        return self._paths.get(wd)

    def wd_of(self, parts: Parts) -> int | None:
        """The descriptor `parts` is watched as, if it is."""
        return self._wds.get(parts)

    def paths(self) -> KeysView[Parts]:
        """Every path watched: a live view, which follows every change."""
        return self._wds.keys()

    def dropped(self, wd: int) -> None:
        """The kernel dropped watch `wd` (its directory is gone): forget it."""
        parts = self._paths.pop(wd, None)
        if parts is not None and self._wds.get(parts) == wd:
            del self._wds[parts]

    def remove(self, parts: Parts) -> None:
        """Stop watching `parts`; the kernel's watch goes too, unless another path has it.

        OSError when the kernel refuses (the maps are up to date anyway).
        """
        wd = self._wds.pop(parts, None)
        if wd is not None and self._paths.get(wd) == parts:
            del self._paths[wd]
            self._inotify.remove_watch(wd)
