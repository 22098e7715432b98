"""The pyfuse3 request handlers: thin, each maps one kernel request onto the view and the store.

Reads take a fresh lock-free snapshot of the record at open (writers rename atomically,
so the last committed record is always whole) and serve slices of it; every open uses
direct_io, so the page cache never shows a stale value. Writes follow sysfs rules: one
whole value at offset 0, parsed by `store.values` and committed by one
`Store.atransform`. Every handler is wrapped so that only `pyfuse3.FUSEError` leaves
it: anything else would end pyfuse3's main loop and leave a dead mount.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import pyfuse3
import trio
from pyfuse3 import EntryAttributes, FileInfo, FUSEError, RequestContext, SetattrFields

from fusefs.files import FILES, ContainerFile
from fusefs.inodes import InodeTable, Node
from fusefs.view import Parts, View, is_visible
from store import Lifecycle, LifecycleStoreError, LockTimeoutError, RecordCorruptError, Store
from store.record import read_record
from store.values import MAX_VALUE_BYTES, decode_value

log = logging.getLogger("lifecyclefs")

CACHE_SECONDS: Final = 1.0
"""Entry and attribute timeout: a repeated `cat` costs only its open, reads and release."""
_BLOCK: Final = 512
_STORES_KEPT: Final = 4096

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MountOptions:
    """How the mount behaves: read-only, durable writes, how long a write waits."""

    read_only: bool = False
    durable: bool = True
    lock_timeout: float | None = 10.0


_Snapshot = tuple[Lifecycle, os.stat_result | None]
"""A record and the stat of its file (None when there is no record)."""


@dataclass(slots=True)
class _OpenFile:
    node: Node
    file: ContainerFile
    data: bytes
    record: Lifecycle | None = None
    record_fd: int | None = None
    """The record file the snapshot was read from, kept open to fstat it lazily."""
    expires: float = 0.0


@dataclass(slots=True)
class _OpenDir:
    parts: Parts
    entries: list[tuple[bytes, EntryAttributes]]


def _fuse_error(operations: Operations, error: Exception, handler: str) -> FUSEError:
    """The FUSEError a shell user understands for an exception a handler raised."""
    if isinstance(error, FUSEError):
        return error
    if isinstance(error, LifecycleStoreError):
        return FUSEError(operations.errno_for(error))
    if isinstance(error, OSError):
        return FUSEError(error.errno or errno.EIO)
    log.error("internal error in %s; answered EIO", handler, exc_info=error)
    return FUSEError(errno.EIO)


def _handler(
    handler: Callable[Concatenate[Operations, P], T],
) -> Callable[Concatenate[Operations, P], Coroutine[Any, Any, T]]:
    """pyfuse3's async handler for `handler`, which answers without waiting for anything.

    Only FUSEError leaves it: anything else would end pyfuse3's main loop.
    """

    @functools.wraps(handler)
    async def wrapper(self: Operations, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return handler(self, *args, **kwargs)
        except Exception as error:
            raise _fuse_error(self, error, handler.__name__) from None

    return wrapper


def _waiting_handler(
    handler: Callable[Concatenate[Operations, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Operations, P], Coroutine[Any, Any, T]]:
    """Like `_handler`, for a handler that waits (a worker thread, a lock)."""

    @functools.wraps(handler)
    async def wrapper(self: Operations, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await handler(self, *args, **kwargs)
        except Exception as error:
            raise _fuse_error(self, error, handler.__name__) from None

    return wrapper


def _fail(code: int) -> FUSEError:
    return FUSEError(code)


class Operations(pyfuse3.Operations):
    """A lifecyclefs mount: SOURCE's state directories, each a directory of value files."""

    supports_dot_lookup = False

    def __init__(self, view: View, options: MountOptions) -> None:
        super().__init__()
        self.view = view
        self.options = options
        self.inodes = InodeTable()
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, _OpenDir] = {}
        self._handles = itertools.count(1)
        self._corrupt_reported: dict[str, str] = {}
        self._stores: dict[Parts, Store] = {}
        # The handle of the last open of a file, by inode. The kernel asks for
        # attributes right after most opens (a read invalidates its atime, and `cat`
        # calls fstat); answering from that open's snapshot saves reading the record
        # again, and matches what reads of that open return.
        self._opened: dict[int, int] = {}

    # Errors and helpers -------------------------------------------------------------

    def errno_for(self, error: LifecycleStoreError) -> int:
        """The errno for a store failure; a corrupt record is logged once, then EIO."""
        if isinstance(error, RecordCorruptError):
            if self._corrupt_reported.get(error.path) != str(error):
                self._corrupt_reported[error.path] = str(error)
                log.error("%s", error)
            return errno.EIO
        if isinstance(error, LockTimeoutError):
            return errno.EBUSY
        return error.errno or errno.EIO

    def _refused(self) -> FUSEError:
        """What an operation the view does not do gets: EROFS on a read-only mount, else EPERM."""
        return _fail(errno.EROFS if self.options.read_only else errno.EPERM)

    def _node(self, ino: int) -> Node:
        try:
            return self.inodes[ino]
        except KeyError:
            raise _fail(errno.ENOENT) from None

    def _store(self, container: Parts) -> Store:
        store = self._stores.get(container)
        if store is None:
            if len(self._stores) >= _STORES_KEPT:
                self._stores.clear()
            store = self._stores[container] = Store(
                self.view.display_path(container),
                open_dir=functools.partial(self.view.open_dir, container),
                durable=self.options.durable,
                lock_timeout=self.options.lock_timeout,
            )
        return store

    def _read_committed(self, container: Parts) -> tuple[Lifecycle, int | None]:
        """The last committed record of `container`, read without the lock.

        Also the descriptor it was read from (None when there is no record), still open
        so that its stat can be taken later; the caller closes it.
        """
        path = self._store(container).record_path
        try:
            fd = self.view.open_record(container)
        except OSError as error:
            self.view.stat_dir(container)  # ENOENT when the container itself is not shown
            if isinstance(error, FileNotFoundError):
                return Lifecycle(), None
            raise LifecycleStoreError.from_os_error("cannot read", path, error) from error
        try:
            record, _ = read_record(fd, path)
        except BaseException:
            os.close(fd)
            raise
        if self._corrupt_reported:
            self._corrupt_reported.pop(path, None)
        return record, fd

    def _snapshot(self, container: Parts) -> _Snapshot:
        """The last committed record of `container` and its file's stat."""
        record, fd = self._read_committed(container)
        if fd is None:
            return record, None
        try:
            return record, os.fstat(fd)
        finally:
            os.close(fd)

    def _file_of(self, node: Node) -> ContainerFile:
        if len(node.parts) != self.view.depth + 1:
            raise _fail(errno.EISDIR)
        return FILES[node.parts[-1]]

    def _dir_attrs(self, ino: int, st: os.stat_result) -> EntryAttributes:
        attrs = EntryAttributes()
        attrs.st_ino = ino
        mode = st.st_mode & ~0o222 if self.options.read_only else st.st_mode
        attrs.st_mode = mode
        attrs.st_nlink = st.st_nlink
        attrs.st_uid = st.st_uid
        attrs.st_gid = st.st_gid
        attrs.st_size = st.st_size
        attrs.st_blksize = st.st_blksize
        attrs.st_blocks = st.st_blocks
        attrs.st_atime_ns = st.st_atime_ns
        attrs.st_mtime_ns = st.st_mtime_ns
        attrs.st_ctime_ns = st.st_ctime_ns
        attrs.entry_timeout = CACHE_SECONDS
        attrs.attr_timeout = CACHE_SECONDS
        return attrs

    def _file_attrs(
        self,
        ino: int,
        container: Parts,
        file: ContainerFile,
        record: Lifecycle,
        record_stat: os.stat_result | None,
    ) -> EntryAttributes:
        # With no record yet, show what the first write will create: a 0600 file of
        # the directory's owner (the store gives new records to the directory's owner).
        owner = record_stat if record_stat is not None else self.view.stat_dir(container)
        mode = stat.S_IMODE(owner.st_mode) & 0o666 if record_stat is not None else 0o600
        if not file.writable or self.options.read_only:
            mode &= 0o444
        size = len(file.render(record))
        attrs = self._dir_attrs(ino, owner)
        attrs.st_mode = stat.S_IFREG | mode
        attrs.st_nlink = 1
        attrs.st_size = size
        attrs.st_blocks = (size + _BLOCK - 1) // _BLOCK
        return attrs

    def _attrs(self, node: Node) -> EntryAttributes:
        if len(node.parts) <= self.view.depth:
            return self._dir_attrs(node.ino, self.view.stat_dir(node.parts))
        container = node.parts[:-1]
        record, record_stat = self._snapshot(container)
        return self._file_attrs(node.ino, container, self._file_of(node), record, record_stat)

    def _forget_cached_attrs(self, container: Parts) -> None:
        """Make the kernel ask again for the attributes of a container's files."""
        for name in FILES:
            node = self.inodes.find((*container, name))
            if node is not None:
                self._opened.pop(node.ino, None)  # its snapshot predates this write
                with contextlib.suppress(OSError):  # the kernel has dropped it already
                    pyfuse3.invalidate_inode(node.ino, attr_only=True)

    # Lookups and attributes ----------------------------------------------------------

    @_handler
    def lookup(self, parent_inode: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        """The entry `name` of a directory: a state directory, or a container's file."""
        parent = self._node(parent_inode)
        parts = (*parent.parts, name)
        if len(parent.parts) < self.view.depth:
            st = self.view.stat_dir(parts)
            return self._dir_attrs(self.inodes.remember(parts).ino, st)
        if len(parent.parts) > self.view.depth:
            raise _fail(errno.ENOTDIR)
        file = FILES.get(name)
        if file is None:
            raise _fail(errno.ENOENT)
        record, record_stat = self._snapshot(parent.parts)
        attrs = self._file_attrs(0, parent.parts, file, record, record_stat)
        attrs.st_ino = self.inodes.remember(parts).ino
        return attrs

    @_handler
    def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """Drop the lookups the kernel no longer holds."""
        for ino, count in inode_list:
            self.inodes.forget(ino, count)

    @_handler
    def getattr(self, inode: int, ctx: RequestContext) -> EntryAttributes:
        """Attributes of the backing directory, or of the record behind a value file."""
        node = self._node(inode)
        handle = self._files.get(self._opened.pop(inode, 0))
        if handle is not None and handle.record is not None and time.monotonic() < handle.expires:
            record_stat = None if handle.record_fd is None else os.fstat(handle.record_fd)
            container = node.parts[:-1]
            return self._file_attrs(inode, container, handle.file, handle.record, record_stat)
        return self._attrs(node)

    @_handler
    def setattr(
        self,
        inode: int,
        attr: EntryAttributes,
        fields: SetattrFields,
        fh: int | None,
        ctx: RequestContext,
    ) -> EntryAttributes:
        """Truncation and time changes leave the record as it is; owner and mode: EPERM."""
        node = self._node(inode)
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise _fail(errno.EPERM)
        return self._attrs(node)

    @_handler
    def statfs(self, ctx: RequestContext) -> pyfuse3.StatvfsData:
        """The statistics of the filesystem that holds SOURCE."""
        backing = os.statvfs(self.view.source_fd)
        data = pyfuse3.StatvfsData()
        for name in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_namemax",
        ):
            setattr(data, name, getattr(backing, name))
        return data

    # Directories ---------------------------------------------------------------------

    @_waiting_handler
    async def opendir(self, inode: int, ctx: RequestContext) -> int:
        """Snapshot the directory's entries, so that readdir's offsets stay stable.

        Listing a level of containers stats every entry (10,000 of them, maybe), so it
        runs in a worker thread rather than stall every other request of the mount.
        """
        node = self._node(inode)
        entries: list[tuple[bytes, EntryAttributes]]
        if len(node.parts) < self.view.depth:

            def list_with_attrs() -> list[tuple[bytes, EntryAttributes]]:
                listing = self.view.list_dir(node.parts)
                return [(name, self._dir_attrs(0, st)) for name, st in listing]

            entries = await trio.to_thread.run_sync(list_with_attrs)
        elif len(node.parts) == self.view.depth:
            record, record_stat = self._snapshot(node.parts)
            entries = [
                (name, self._file_attrs(0, node.parts, file, record, record_stat))
                for name, file in FILES.items()
            ]
        else:
            raise _fail(errno.ENOTDIR)
        fh = next(self._handles)
        self._dirs[fh] = _OpenDir(node.parts, entries)
        return fh

    @_handler
    def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Entries from `start_id` on; each one the kernel accepts counts as a lookup."""
        handle = self._dirs[fh]
        for index in range(start_id, len(handle.entries)):
            name, attrs = handle.entries[index]
            node = self.inodes.remember((*handle.parts, name))
            attrs.st_ino = node.ino
            if not pyfuse3.readdir_reply(token, name, attrs, index + 1):
                self.inodes.forget(node.ino, 1)
                break

    @_handler
    def releasedir(self, fh: int) -> None:
        """Drop the snapshot taken at opendir."""
        del self._dirs[fh]

    @_handler
    def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: RequestContext
    ) -> EntryAttributes:
        """Create a state directory (0700, owned by the caller) above container level."""
        parent = self._node(parent_inode)
        if self.options.read_only or len(parent.parts) >= self.view.depth:
            raise self._refused()
        if not is_visible(name):
            raise _fail(errno.EINVAL)
        parts = (*parent.parts, name)
        st = self.view.make_dir(parts, (ctx.uid, ctx.gid))
        return self._dir_attrs(self.inodes.remember(parts).ino, st)

    # Files ---------------------------------------------------------------------------

    @_handler
    def open(self, inode: int, flags: int, ctx: RequestContext) -> FileInfo:
        """Open a container file; a reader gets a snapshot of the record taken now.

        O_TRUNC is ignored: the record stays as it is until a value is written.
        """
        node = self._node(inode)
        file = self._file_of(node)
        access = flags & os.O_ACCMODE
        if access != os.O_RDONLY:
            if self.options.read_only:
                raise _fail(errno.EROFS)
            if not file.writable:
                raise _fail(errno.EACCES)
        fh = next(self._handles)
        if access == os.O_WRONLY:
            self._files[fh] = _OpenFile(node, file, b"")
        else:
            record, record_fd = self._read_committed(node.parts[:-1])
            self._files[fh] = _OpenFile(
                node,
                file,
                file.render(record),
                record,
                record_fd,
                time.monotonic() + CACHE_SECONDS,
            )
            self._opened[inode] = fh
        return FileInfo(fh=fh, direct_io=True, keep_cache=False)

    @_handler
    def read(self, fh: int, off: int, size: int) -> bytes:
        """A slice of the snapshot taken at open."""
        return self._files[fh].data[off : off + size]

    @_waiting_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        """Parse one whole value and commit it with one locked, atomic transform.

        EINVAL for a value that does not parse (nothing changes), EFBIG past 4 KiB,
        ESPIPE for a write that does not start at offset 0, EBUSY if the lock stays
        taken longer than the mount's lock timeout.
        """
        handle = self._files[fh]
        if off != 0:
            raise _fail(errno.ESPIPE)
        if len(buf) > MAX_VALUE_BYTES:
            raise _fail(errno.EFBIG)
        assert handle.file.parse is not None  # open() refuses writers of read-only files
        try:
            update = handle.file.parse(decode_value(buf))
        except ValueError as error:
            path = self.view.display_path(handle.node.parts)
            log.info("refused %r for %s: %s", buf[:80], path, error)
            raise _fail(errno.EINVAL) from None
        container = handle.node.parts[:-1]
        await self._store(container).atransform(update)
        self._forget_cached_attrs(container)
        return len(buf)

    @_handler
    def release(self, fh: int) -> None:
        """Forget the handle and close the record it read."""
        handle = self._files.pop(fh)
        if self._opened.get(handle.node.ino) == fh:
            del self._opened[handle.node.ino]
        if handle.record_fd is not None:
            os.close(handle.record_fd)

    # What the view does not do -------------------------------------------------------

    @_handler
    def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: RequestContext
    ) -> tuple[FileInfo, EntryAttributes]:
        """New files: EPERM (a container holds exactly its value files)."""
        raise self._refused()

    @_handler
    def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: RequestContext
    ) -> EntryAttributes:
        """EPERM."""
        raise self._refused()

    @_handler
    def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: RequestContext
    ) -> EntryAttributes:
        """EPERM."""
        raise self._refused()

    @_handler
    def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: RequestContext
    ) -> EntryAttributes:
        """EPERM."""
        raise self._refused()

    @_handler
    def unlink(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        """EPERM: removing state is nerdctl's business (or `lifecyclefs delete`)."""
        raise self._refused()

    @_handler
    def rmdir(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        """EPERM: removing state is nerdctl's business."""
        raise self._refused()

    @_handler
    def rename(  # noqa: PLR0917 - pyfuse3's signature
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: RequestContext,
    ) -> None:
        """EPERM: a container's name is its identity."""
        raise self._refused()
