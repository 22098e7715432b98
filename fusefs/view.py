"""Which directories of SOURCE the mount shows, and how to reach them without leaving it.

A path in the view is a tuple of names (bytes, as the kernel sends them) below SOURCE.
Every directory at `depth` is a container; the levels above it (nerdctl's namespace
directories at depth 2) are plain directories. Only real directories whose names do
not start with "." are shown: files, symlinks, hidden and temporary entries are not.
Everything is opened from a descriptor of SOURCE with openat2(RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV) (on kernels without it, a walk of O_NOFOLLOW
opens that checks the device), so neither a symlink planted anywhere in the tree, nor
a `..`, nor a filesystem a user mounted inside it (a FUSE mount that never answers
would stall the daemon) is ever entered.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable
from typing import ClassVar, Final

from fusefs.identity import acting_as
from store import Lifecycle, LifecycleStoreError
from store.record import RECORD_NAME, RECORD_READ_FLAGS, read_record

Parts = tuple[bytes, ...]
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RECORD: Final = RECORD_NAME.encode()
DIR_MODE: Final = 0o700
"""A new state directory's mode, as nerdctl makes them."""


OpenBeneath = Callable[[bytes, int], int]
"""Opens a relative path (with the given flags) below one directory; returns the fd."""


def _load_openat2() -> Callable[[int], OpenBeneath] | None:
    """Linux's openat2(2) confined below a directory, no symlinks, if the kernel has it.

    One system call does what a walk of O_NOFOLLOW opens does; the view's hot path
    (every `cat`) opens the record with it. Returns a binder: `bind(dir_fd)` gives the
    opener for paths below `dir_fd`.
    """

    class OpenHow(ctypes.Structure):
        _fields_: ClassVar = [
            ("flags", ctypes.c_uint64),
            ("mode", ctypes.c_uint64),
            ("resolve", ctypes.c_uint64),
        ]

    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    # Every argument but the path is a ctypes object made once: each reaches the
    # kernel at its full C width, and a call converts nothing.
    number = ctypes.c_long(_SYS_OPENAT2)
    size = ctypes.c_size_t(ctypes.sizeof(OpenHow))
    resolve = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV
    hows: dict[int, object] = {}  # by flags: a reference to its open_how (the view uses two)

    def bind(dir_fd: int) -> OpenBeneath:
        directory = ctypes.c_int(dir_fd)

        def openat2(path: bytes, flags: int) -> int:
            how = hows.get(flags)
            if how is None:
                how = hows[flags] = ctypes.byref(OpenHow(flags, 0, resolve))
            fd = syscall(number, directory, path, how, size)
            if fd < 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), os.fsdecode(path))
            return int(fd)

        return openat2

    root = os.open("/", _DIR_FLAGS)
    try:
        os.close(bind(root)(b".", _DIR_FLAGS))
    except OSError:
        return None  # ENOSYS (before Linux 5.6) or a seccomp filter: walk instead
    finally:
        os.close(root)
    return bind


_SYS_OPENAT2: Final = 437  # the same number on every architecture
_RESOLVE_NO_XDEV: Final = 0x01
_RESOLVE_NO_MAGICLINKS: Final = 0x02
_RESOLVE_NO_SYMLINKS: Final = 0x04
_RESOLVE_BENEATH: Final = 0x08


def _not_shown(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


def is_visible(name: bytes) -> bool:
    """Whether a directory named `name` may be shown (not hidden, not `.`/`..`)."""
    return not name.startswith(b".") and b"/" not in name and name != b""


class View:
    """The tree of state directories below one SOURCE directory."""

    def __init__(self, source: str, depth: int) -> None:
        """Open SOURCE (a symlink to it is followed, once); its descriptor anchors the rest."""
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.given_source = os.path.abspath(source)
        self.source = os.path.realpath(source)
        self.depth = depth
        self.source_fd = os.open(self.source, _DIR_FLAGS)
        source_stat = os.fstat(self.source_fd)
        self._source_id = (source_stat.st_dev, source_stat.st_ino)
        self._openat2 = None if _openat2 is None else _openat2(self.source_fd)

    def source_in_place(self) -> bool:
        """Whether SOURCE's path still leads to the directory this view serves.

        False once SOURCE was moved, deleted, replaced, or its filesystem unmounted:
        what is written then would land in a tree nobody looks at any more.
        """
        try:
            now = os.stat(self.given_source)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == self._source_id

    def close(self) -> None:
        """Release the SOURCE descriptor."""
        os.close(self.source_fd)

    def is_container(self, parts: Parts) -> bool:
        """Whether `parts` names a container directory (as opposed to a level above)."""
        return len(parts) == self.depth

    def display_path(self, parts: Parts) -> str:
        """The backing path of `parts`, for messages."""
        return os.path.join(self.source, *(os.fsdecode(part) for part in parts))

    def record_path(self, container: Parts) -> str:
        """The backing path of `container`'s lifecycle.json, for messages."""
        return self.display_path((*container, _RECORD))

    def open_dir(self, parts: Parts) -> int:
        """A new descriptor of the directory `parts`, reached without following symlinks.

        Raise FileNotFoundError when it is not a directory the view shows.
        """
        if not all(map(is_visible, parts)):
            raise _not_shown(self.display_path(parts))
        if not parts:
            return os.dup(self.source_fd)
        try:
            return self._open_beneath(parts, _DIR_FLAGS)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):  # a symlink or a file: not shown
                raise _not_shown(self.display_path(parts)) from error
            raise

    def open_record(self, container: Parts) -> int:
        """A read descriptor of `container`'s lifecycle.json, by the same rules.

        FileNotFoundError when either the record or the container is missing. This is
        every `cat`'s path: `container` holds names the view has shown already, so
        only the fallback walk (which `..` could lead out) checks them again.
        """
        return self._open_beneath((*container, _RECORD), RECORD_READ_FLAGS)

    def _open_beneath(self, parts: Parts, flags: int) -> int:
        """Open `parts` below SOURCE; any symlink on the way fails (ELOOP or ENOTDIR)."""
        if self._openat2 is not None:  # RESOLVE_BENEATH: not even `..` leads out
            return self._openat2(b"/".join(parts), flags)
        if not all(map(is_visible, parts[:-1])):
            raise _not_shown(self.display_path(parts))
        fd = self.source_fd
        try:
            for part in parts[:-1]:
                parent = fd
                fd = os.open(part, _DIR_FLAGS, dir_fd=parent)
                if parent != self.source_fd:
                    os.close(parent)
                self._same_device(fd, parts)
            last = os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=fd)
        finally:
            if fd != self.source_fd:
                os.close(fd)
        try:
            self._same_device(last, parts)
        except OSError:
            os.close(last)
            raise
        return last

    def _same_device(self, fd: int, parts: Parts) -> None:
        if os.fstat(fd).st_dev != self._source_id[0]:
            code = errno.EXDEV
            raise OSError(code, os.strerror(code), self.display_path(parts))

    def open_path(self, parts: Parts) -> int:
        """An O_PATH descriptor of the directory `parts` (to watch it), by the same rules."""
        if not parts:
            return os.open(".", _PATH_FLAGS, dir_fd=self.source_fd)
        if not all(map(is_visible, parts)):
            raise _not_shown(self.display_path(parts))
        return self._open_beneath(parts, _PATH_FLAGS)

    def read_record(self, container: Parts) -> tuple[Lifecycle, os.stat_result | None]:
        """The last committed record of `container`, without the lock, and its stat.

        A missing record is all unset (stat None); a container that is not shown (any
        more) is FileNotFoundError. Store failures raise LifecycleStoreError.
        """
        path = self.record_path(container)
        try:
            fd = self.open_record(container)
        except OSError as error:
            self.stat_dir(container)  # ENOENT when the container itself is not shown
            if isinstance(error, FileNotFoundError):
                return Lifecycle(), None
            raise LifecycleStoreError.from_os_error("cannot read", path, error) from error
        try:
            return read_record(fd, path, want_stat=True)
        finally:
            os.close(fd)

    def read_acl(self, parts: Parts, name: str, *, of_record: bool) -> bytes | None:
        """The POSIX ACL xattr `name` of directory `parts` (or of its record); None if unset.

        A container without a record has no record ACL. Errors are OSError.
        """
        try:
            fd = self.open_record(parts) if of_record else self.open_dir(parts)
        except FileNotFoundError:
            if of_record:
                self.stat_dir(parts)
                return None
            raise
        try:
            return os.getxattr(fd, name)
        except OSError as error:
            if error.errno in (errno.ENODATA, errno.EOPNOTSUPP):
                return None
            raise
        finally:
            os.close(fd)

    def stat_dir(self, parts: Parts) -> os.stat_result:
        """The stat of the directory `parts`; FileNotFoundError unless it is one we show."""
        if not parts:
            return os.fstat(self.source_fd)
        parent = self.open_dir(parts[:-1]) if len(parts) > 1 else self.source_fd
        try:
            if not is_visible(parts[-1]):
                raise _not_shown(self.display_path(parts))
            result = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            if parent != self.source_fd:
                os.close(parent)
        if not stat.S_ISDIR(result.st_mode):
            raise _not_shown(self.display_path(parts))
        return result

    def list_names(self, parts: Parts, limit: int) -> list[bytes]:
        """The names of the visible subdirectories of `parts`, sorted.

        OSError ENOMEM past `limit` entries: a listing is held in memory while open.
        """
        fd = self.open_dir(parts)
        names = []
        try:
            with os.scandir(fd) as scan:
                for entry in scan:
                    name = os.fsencode(entry.name)
                    if not is_visible(name) or not entry.is_dir(follow_symlinks=False):
                        continue
                    names.append(name)
                    if len(names) > limit:
                        code = errno.ENOMEM
                        raise OSError(code, os.strerror(code), self.display_path(parts))
        finally:
            os.close(fd)
        names.sort()
        return names

    def stat_children(self, parts: Parts, names: list[bytes]) -> list[os.stat_result | None]:
        """The stats of the subdirectories `names` of `parts` (None: gone, or not one)."""
        fd = self.open_dir(parts)
        stats: list[os.stat_result | None] = []
        try:
            for name in names:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    stats.append(None)
                    continue
                stats.append(st if stat.S_ISDIR(st.st_mode) else None)
        finally:
            os.close(fd)
        return stats

    def make_dir(self, parts: Parts, uid: int, gid: int, groups: list[int]) -> os.stat_result:
        """Create the directory `parts` (0700, like nerdctl's) as user `uid` would.

        The directory is created with the caller's filesystem identity, so it is theirs
        from the moment it exists and the backing filesystem checks their permissions;
        no step acts on a name anyone could swap. Returns its stat.
        """
        if not is_visible(parts[-1]):
            raise ValueError(f"a hidden name is never shown: {os.fsdecode(parts[-1])!r}")
        parent = self.open_dir(parts[:-1])
        try:
            with acting_as(uid, gid, groups):
                os.mkdir(parts[-1], DIR_MODE, dir_fd=parent)
            return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)


_openat2 = _load_openat2()
