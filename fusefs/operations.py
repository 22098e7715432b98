"""The pyfuse3 request handlers: a thin map from kernel requests to the view and the store.

Each handler finds what a request names (a level directory, a container, one of its
files, a tool's temporary file: `entries`, which also builds attributes), asks the
component that knows (`view` for the backing tree, `store` for records, `freshness` for
what the kernel may cache, `tempfiles`, `budgets`) and answers. Only `pyfuse3.FUSEError`
leaves a handler (see `errors`).

Reads render a lock-free snapshot of the record at open. Writes follow sysfs rules (one
whole value at offset 0) and commit through one locked, atomic `Store.atransform`; a
temporary file renamed over a value file commits its content the same way.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Sequence
from typing import Final

import pyfuse3
import trio
from pyfuse3 import EntryAttributes, FileInfo, RequestContext, SetattrFields

from fusefs import acl
from fusefs.budgets import MAX_PINNED_BYTES, Budgets
from fusefs.changes import Changes, MountOptions
from fusefs.entries import Entries
from fusefs.errors import CorruptRecords, fail, handler, waiting_handler
from fusefs.files import FILES, ContainerFile
from fusefs.freshness import Freshness, invalidate_attributes
from fusefs.handles import DirHandle, HandleTable, ReadHandle, TempHandle, WriteHandle
from fusefs.inodes import InodeTable, Node
from fusefs.tempfiles import TempFile, TempFiles
from fusefs.view import View, is_visible

log = logging.getLogger("lifecyclefs")

_LISTING_ENTRY_BYTES: Final = 256
"""What one entry of an open listing costs, counted against its user's budget."""
_EXPIRY_SECONDS: Final = 5.0
_POLL_READY: Final = 0x145  # POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM


class Operations(pyfuse3.Operations):
    """A lifecyclefs mount: SOURCE's state directories, each a directory of value files."""

    supports_dot_lookup = False
    enable_acl = True

    def __init__(self, view: View, options: MountOptions) -> None:
        super().__init__()
        self.view = view
        self.options = options
        self.inodes = InodeTable()
        self.budgets = Budgets()
        self.handles = HandleTable(self.budgets)
        self.temps = TempFiles(self.budgets)
        self.freshness = Freshness(view, self.inodes)
        self.corrupt = CorruptRecords()
        self.changes = Changes(view, options, self.budgets, self.freshness)
        self.entries = Entries(view, options, self.inodes, self.freshness, self.temps)
        self.freshness.watch(())

    # Life ---------------------------------------------------------------------------

    async def run_background(self) -> None:
        """What runs beside the request handlers: the inotify watcher, temp-file expiry."""
        self.freshness.notifier.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.freshness.run)
            while True:
                await trio.sleep(_EXPIRY_SECONDS)
                self.entries.expire_temp_files()

    def close(self) -> None:
        """Stop what `run_background` started (before the FUSE session closes)."""
        self.freshness.close()

    def _refused(self) -> pyfuse3.FUSEError:
        """What the view does not do: EROFS on a read-only mount, else EPERM."""
        return fail(errno.EROFS if self.options.read_only else errno.EPERM)

    # Lookups and attributes ---------------------------------------------------------

    @handler
    def lookup(self, parent_inode: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        """An entry of a directory: a state directory, a container's file, a temp file."""
        return self.entries.look_up(self.entries.node(parent_inode), name, ctx.uid)

    @handler
    def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """Drop the lookups the kernel no longer holds."""
        for ino, count in inode_list:
            node = self.inodes.find_ino(ino)
            if node is not None:
                self.entries.forget(node, count)

    @handler
    def getattr(self, inode: int, ctx: RequestContext) -> EntryAttributes:
        """Attributes of the backing directory, of the record behind a file, of a temp file."""
        return self.entries.attrs(self.entries.node(inode))

    @waiting_handler
    async def setattr(
        self,
        inode: int,
        attr: EntryAttributes,
        fields: SetattrFields,
        fh: int | None,
        ctx: RequestContext,
    ) -> EntryAttributes:
        """chmod and chown act on the backing directory, or on the record behind a file.

        The kernel has checked that the caller may (`default_permissions`). Truncating
        a value file, or changing its times, leaves the record as it is. A temporary
        file takes every change.
        """
        node = self.entries.node(inode)
        temp = self.entries.temp(node)
        if temp is not None:
            self.temps.set_attributes(temp, attr, fields)
            return self.entries.temp_attrs(node.ino, temp)
        current = self.entries.attrs(node)
        mode = stat.S_IMODE(attr.st_mode) if fields.update_mode else None
        uid = attr.st_uid if fields.update_uid else -1
        gid = attr.st_gid if fields.update_gid else -1
        if mode == stat.S_IMODE(current.st_mode):
            mode = None
        if uid == current.st_uid:
            uid = -1
        if gid == current.st_gid:
            gid = -1
        if mode is None and uid == -1 and gid == -1:
            return current

        def change(fd: int) -> None:
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            if mode is not None:  # after fchown, which may clear set-id bits
                os.fchmod(fd, mode)

        await self._change_backing(node, change, ctx)
        return self.entries.attrs(node)

    async def _change_backing(
        self, node: Node, change: Callable[[int], None], ctx: RequestContext
    ) -> None:
        """Apply `change` to the backing directory of `node`, or to its record."""
        if self.entries.is_directory(node.parts):
            self.changes.change_directory(node.parts, change)
        else:
            await self.changes.change_record(node.parts[:-1], change, ctx.uid)

    @handler
    def getxattr(self, inode: int, name: bytes, ctx: RequestContext) -> bytes:
        """POSIX ACLs: the backing directory's or record's own. Other names: EOPNOTSUPP."""
        xattr = name.decode(errors="replace")
        if xattr not in acl.NAMES:
            raise fail(errno.EOPNOTSUPP)
        node = self.entries.node(inode)
        value: bytes | None
        if self.entries.is_directory(node.parts):
            value = self.view.read_acl(node.parts, xattr, of_record=False)
        elif xattr == acl.DEFAULT:
            value = None
        elif (temp := self.entries.temp(node)) is not None:
            value = temp.acl
        else:
            value = self.view.read_acl(node.parts[:-1], xattr, of_record=True)
        if value is None:
            raise fail(pyfuse3.ENOATTR)
        return value

    @waiting_handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: RequestContext) -> None:
        """A POSIX ACL (setfacl) goes to the backing directory or record; other names: EPERM.

        A temp file keeps the ACL a tool sets, and its mode follows.
        """
        node = self.entries.node(inode)
        xattr = name.decode(errors="replace")
        if xattr not in acl.NAMES:
            raise self._refused()
        try:
            mode, extended = acl.mode_of(value)
        except ValueError:
            raise fail(errno.EINVAL) from None
        temp = self.entries.temp(node)
        if temp is not None:
            if xattr != acl.ACCESS:
                raise fail(errno.EACCES)
            temp.set_access_acl(value, mode, extended=extended)
            return
        if xattr == acl.DEFAULT and not self.entries.is_directory(node.parts):
            raise fail(errno.EACCES)
        await self._change_backing(node, lambda fd: os.setxattr(fd, xattr, value), ctx)

    @waiting_handler
    async def removexattr(self, inode: int, name: bytes, ctx: RequestContext) -> None:
        """A POSIX ACL goes from the backing directory or record; other names: EPERM."""
        node = self.entries.node(inode)
        xattr = name.decode(errors="replace")
        if xattr not in acl.NAMES:
            raise self._refused()
        temp = self.entries.temp(node)
        if temp is not None:
            if temp.acl is None or xattr != acl.ACCESS:
                raise fail(pyfuse3.ENOATTR)
            temp.acl = None
            return
        await self._change_backing(node, lambda fd: os.removexattr(fd, xattr), ctx)

    @handler
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

    # Directories --------------------------------------------------------------------

    @waiting_handler
    async def opendir(self, inode: int, ctx: RequestContext) -> int:
        """Snapshot the directory's entries, so that readdir's offsets stay stable.

        A level of containers may hold 10,000 of them: it is listed in one of the
        caller's worker threads, not on the loop that serves everyone, and the listing
        is kept while inotify says it holds.
        """
        node = self.entries.node(inode)
        names: list[bytes]
        if len(node.parts) < self.view.depth:
            listed = self.freshness.listing(node.parts)
            if listed is None:
                limit = MAX_PINNED_BYTES // _LISTING_ENTRY_BYTES
                with self.budgets.waiting(ctx.uid) as threads:
                    listed = await trio.to_thread.run_sync(
                        self.view.list_names, node.parts, limit, limiter=threads
                    )
                self.freshness.listed(node.parts, listed)
            names = listed
        elif len(node.parts) == self.view.depth:
            self.view.stat_dir(node.parts)
            names = [*FILES, *(t.name for t in self.temps.listed_to(node.parts, ctx.uid))]
        else:
            raise fail(errno.ENOTDIR)
        pinned = len(names) * _LISTING_ENTRY_BYTES
        return self.handles.add_dir(DirHandle(node.parts, names, ctx.uid, pinned))

    @handler
    def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Entries from `start_id` on; each full entry the kernel accepts counts as a lookup.

        An entry the kernel holds already, and whose attributes inotify keeps fresh,
        goes as a plain entry: the kernel keeps what it cached (attributes, ACLs).
        Others get their attributes read now.
        """
        handle = self.handles.dirs[fh]
        names, parent = handle.names, handle.parts
        for index in range(start_id, len(names)):
            name = names[index]
            parts = (*parent, name)
            plain = self.entries.plain_entry(parts)
            if plain is not None:
                if not pyfuse3.readdir_reply(token, name, plain, index + 1):
                    return
                continue
            attrs = self.entries.new_entry(parent, name)
            if attrs is None:  # gone since opendir: left out
                continue
            if not pyfuse3.readdir_reply(token, name, attrs, index + 1):
                self.entries.forget(self.inodes[attrs.st_ino])
                return

    @handler
    def releasedir(self, fh: int) -> None:
        """Drop the snapshot taken at opendir."""
        self.handles.pop_dir(fh)

    @handler
    def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: RequestContext
    ) -> EntryAttributes:
        """Create a state directory (0700) above container level, owned by the caller."""
        parent = self.entries.node(parent_inode)
        if self.options.read_only or len(parent.parts) >= self.view.depth:
            raise self._refused()
        if not is_visible(name):
            raise fail(errno.EINVAL)
        parts = (*parent.parts, name)
        st = self.changes.make_directory(parts, ctx.uid, ctx.gid, ctx.pid)
        invalidate_attributes(parent_inode)
        return self.entries.dir_attrs(self.entries.remember(parts).ino, parts, st)

    # Files --------------------------------------------------------------------------

    @waiting_handler
    async def open(self, inode: int, flags: int, ctx: RequestContext) -> FileInfo:
        """Open a container file; a reader gets a snapshot of the record rendered now.

        O_TRUNC is ignored: the record stays as it is until a value is written. A reader
        of a value that stays put (most opens) is answered by `open_unchanged`.
        """
        if not flags & os.O_ACCMODE and not self.corrupt and not self.entries.is_temp(inode):
            unchanged = self.freshness.open_unchanged(inode, ctx.uid)
            if unchanged is not None:
                return FileInfo(fh=self._add_reader(unchanged), keep_cache=True)
        node = self.entries.node(inode)
        temp = self.entries.temp(node)
        if temp is not None:
            if flags & os.O_TRUNC:
                self.temps.truncate(temp, 0)
            return self._open_temp(node, temp, ctx.uid)
        file = self.entries.file(node)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            if self.options.read_only:
                raise fail(errno.EROFS)
            if not file.writable:
                raise fail(errno.EACCES)
            return await self._open_for_writing(node, file, ctx.uid)
        container = node.parts[:-1]
        data = self.freshness.snapshot(container).value(file)
        if self.corrupt:
            self.corrupt.forget(self.view.record_path(container))
        handle = ReadHandle(node, file, data, ctx.uid)
        fh = self.handles.add_file(handle)
        keep = self.freshness.opened_for_reading(handle)
        if keep is None:
            return FileInfo(fh=fh, direct_io=True)
        return FileInfo(fh=fh, keep_cache=keep)

    def _add_reader(self, handle: ReadHandle) -> int:
        """Count `handle`, registered with freshness already, in its user's budget."""
        try:
            return self.handles.add_file(handle)
        except BaseException:
            self.freshness.released(handle)
            raise

    async def _open_for_writing(self, node: Node, file: ContainerFile, uid: int) -> FileInfo:
        fh = self.handles.add_file(WriteHandle(node, file, uid))
        await self.freshness.opened_for_writing(node.ino)
        return FileInfo(fh=fh, direct_io=True)

    def _open_temp(self, node: Node, temp: TempFile, uid: int) -> FileInfo:
        fh = self.handles.add_file(TempHandle(node, temp, uid))
        self.temps.opened(temp)
        return FileInfo(fh=fh, direct_io=True)

    @handler
    def read(self, fh: int, off: int, size: int) -> bytes:
        """A slice of the snapshot taken at open (a read from the start takes a newer one)."""
        handle = self.handles.files[fh]
        if isinstance(handle, TempHandle):
            return bytes(handle.temp.data[off : off + size])
        if isinstance(handle, WriteHandle):
            snapshot = self.freshness.snapshot(handle.node.parts[:-1])
            return snapshot.value(handle.file)[off : off + size]
        if off == 0 and handle.latest is not None:
            handle.data, handle.latest = handle.latest, None
        return handle.data[off : off + size]

    @waiting_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        """Parse one whole value and commit it with one locked, atomic transform.

        EINVAL for a value that does not parse (nothing changes), EFBIG past 4 KiB,
        ESPIPE for a write that does not start at offset 0, EBUSY if the lock stays
        taken longer than the mount's lock timeout. A temp file takes any write.
        """
        handle = self.handles.files[fh]
        if isinstance(handle, TempHandle):
            return self.temps.write(handle.temp, off, buf)
        if isinstance(handle, ReadHandle):
            raise fail(errno.EBADF)
        if off != 0:
            raise fail(errno.ESPIPE)
        await self.changes.commit(
            handle.node.parts[:-1], handle.file, buf, handle.uid, handle.node.ino
        )
        return len(buf)

    @handler
    def release(self, fh: int) -> None:
        """Forget the handle."""
        handle = self.handles.pop_file(fh)
        if isinstance(handle, ReadHandle):
            self.freshness.released(handle)
        elif isinstance(handle, WriteHandle):
            self.freshness.writer_released(handle.node.ino)
        else:
            self.temps.closed(handle.temp)

    @handler
    def poll(
        self, inode: int, fh: int, poll_handle: pyfuse3.PollHandle | None, ctx: RequestContext
    ) -> int:
        """sysfs-style: POLLPRI | POLLERR once the value changed since this handle read it."""
        handle = self.handles.files.get(fh)
        if not isinstance(handle, ReadHandle):
            return _POLL_READY
        return self.freshness.poll(handle, poll_handle)

    # Temporary files: what editors and `sed -i` need ---------------------------------

    @waiting_handler
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: RequestContext
    ) -> tuple[FileInfo, EntryAttributes]:
        """A tool's temporary file in a container directory (in memory; see `tempfiles`).

        A value file the caller unlinked a moment ago is opened again for writing.
        Elsewhere, new files: EPERM.
        """
        parent = self.entries.node(parent_inode)
        if self.options.read_only or len(parent.parts) != self.view.depth:
            raise self._refused()
        self.view.stat_dir(parent.parts)
        parts = (*parent.parts, name)
        file = FILES.get(name)
        if file is not None:
            if not file.writable or not self.temps.value_file_unlinked(parent.parts, name, ctx.uid):
                raise fail(errno.EEXIST)
            self.temps.value_file_made_again(parent.parts, name, ctx.uid)
            node = self.entries.remember(parts)
            info = await self._open_for_writing(node, file, ctx.uid)
            snapshot = self.freshness.snapshot(parent.parts)
            return info, self.entries.file_attrs(node.ino, parent.parts, file, snapshot)
        temp = self.temps.create(parent.parts, name, ctx.uid, ctx.gid, mode & ~ctx.umask)
        node = self.entries.remember_temp(parts, temp)
        return self._open_temp(node, temp, ctx.uid), self.entries.temp_attrs(node.ino, temp)

    @handler
    def unlink(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        """A temp file goes; a value file's name is free for the caller for a moment."""
        parent = self.entries.node(parent_inode)
        if self.options.read_only:
            raise fail(errno.EROFS)
        if len(parent.parts) != self.view.depth:
            raise self._refused()
        temp = self.temps.get(parent.parts, name)
        if temp is not None:
            self.temps.remove(temp)
            self.entries.gone((*parent.parts, name))
            return
        file = FILES.get(name)
        if file is None:
            raise fail(errno.ENOENT)
        if not file.writable:
            raise self._refused()
        self.temps.unlink_value_file(parent.parts, name, ctx.uid)

    @waiting_handler
    async def rename(  # noqa: PLR0917 - pyfuse3's signature
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: RequestContext,
    ) -> None:
        """A temp file renamed over a value file commits its content; onto a free name, moves.

        Content that does not parse fails the rename with EINVAL and changes nothing.
        Anything else (a container's name is its identity): EPERM.
        """
        old_parent = self.entries.node(parent_inode_old)
        new_parent = self.entries.node(parent_inode_new)
        if self.options.read_only:
            raise fail(errno.EROFS)
        depth = self.view.depth
        if len(old_parent.parts) != depth or len(new_parent.parts) != depth:
            raise self._refused()
        temp = self.temps.get(old_parent.parts, name_old)
        if temp is None or flags & pyfuse3.RENAME_EXCHANGE:
            raise self._refused()
        old_parts = (*old_parent.parts, name_old)
        new_parts = (*new_parent.parts, name_new)
        file = FILES.get(name_new)
        if file is None:
            if flags & pyfuse3.RENAME_NOREPLACE and self.temps.get(new_parent.parts, name_new):
                raise fail(errno.EEXIST)
            replaced = self.temps.rename(temp, new_parent.parts, name_new)
            self.entries.temp_moved(old_parts, new_parts, replaced=replaced is not None)
            return
        if not file.writable:
            raise self._refused()
        if flags & pyfuse3.RENAME_NOREPLACE:
            raise fail(errno.EEXIST)
        node = self.inodes.find(old_parts)
        await self.changes.commit(new_parent.parts, file, bytes(temp.data), ctx.uid)
        self.temps.remove(temp)
        if node is not None:
            self.entries.temp_committed(node, new_parts)

    # What the view does not do ------------------------------------------------------

    @handler
    def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: RequestContext
    ) -> EntryAttributes:
        """EPERM."""
        raise self._refused()

    @handler
    def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: RequestContext
    ) -> EntryAttributes:
        """EPERM."""
        raise self._refused()

    @handler
    def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: RequestContext
    ) -> EntryAttributes:
        """EPERM."""
        raise self._refused()

    @handler
    def rmdir(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        """EPERM: removing state is nerdctl's business."""
        raise self._refused()
