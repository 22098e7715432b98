"""What the kernel holds of the view: an inode per name it looked up, and the attributes
each is answered with.

A name of the view is one of three things: a directory (a level above containers, or a
container), a value file of a container (`files.FILES`), or a tool's temporary file
(`tempfiles`). `Entries` tells them apart, counts the kernel's lookups (a directory new
to the kernel gets watched, so that what it caches can be dropped when it changes), and
builds their attributes from the backing tree, the record's snapshot, or the temp file.
"""

from __future__ import annotations

import errno
import os
import stat

from pyfuse3 import EntryAttributes

from fusefs import attributes
from fusefs.changes import MountOptions
from fusefs.errors import fail
from fusefs.files import FILES, ContainerFile
from fusefs.freshness import UNWATCHED, Freshness, Snapshot
from fusefs.inodes import InodeTable, Node
from fusefs.tempfiles import TempFile, TempFiles
from fusefs.view import Parts, View, is_visible


class Entries:
    """The kernel's view of the tree: nodes by inode, and their attributes.

    Every lookup counted (`look_up`, `new_entry`, `remember`, `remember_temp`) is
    matched by a `forget` when the kernel drops it. A name that is not there raises
    `pyfuse3.FUSEError` (ENOENT, ENOTDIR, EISDIR); what the backing tree raises goes
    through as the view raises it (the handlers' wrappers turn it into an errno).
    """

    def __init__(
        self,
        view: View,
        options: MountOptions,
        inodes: InodeTable,
        freshness: Freshness,
        temps: TempFiles,
    ) -> None:
        self.view = view
        self.options = options
        self.inodes = inodes
        self.freshness = freshness
        self.temps = temps
        self._temp_of: dict[int, TempFile] = {}

    # Nodes ------------------------------------------------------------------------

    def node(self, ino: int) -> Node:
        """The node the kernel holds as `ino`; ENOENT if it holds none."""
        try:
            return self.inodes[ino]
        except KeyError:
            raise fail(errno.ENOENT) from None

    def is_directory(self, parts: Parts) -> bool:
        """Whether `parts` names a directory (a level, or a container) of the view."""
        return len(parts) <= self.view.depth

    def remember(self, parts: Parts) -> Node:
        """Count one kernel lookup of `parts`; a directory new to the kernel gets watched."""
        node = self.inodes.remember(parts)
        if node.lookups == 1 and self.is_directory(parts):
            self.freshness.watch(parts)
        return node

    def remember_temp(self, parts: Parts, temp: TempFile) -> Node:
        """`remember` for temporary file `temp`, which `parts` now names."""
        node = self.remember(parts)
        self._temp_of[node.ino] = temp
        return node

    def forget(self, node: Node, count: int = 1) -> None:
        """Drop `count` lookups of `node`; at zero, what hangs on it goes too."""
        gone = self.inodes.forget(node.ino, count)
        if gone is not None:
            self.freshness.forget(gone)
            self._temp_of.pop(gone.ino, None)

    def is_temp(self, ino: int) -> bool:
        """Whether inode `ino` is a temporary file."""
        return ino in self._temp_of

    def temp(self, node: Node) -> TempFile | None:
        """The temporary file `node` is, if it is one."""
        return self._temp_of.get(node.ino)

    def gone(self, parts: Parts) -> None:
        """`parts` names nothing now; a node the kernel holds of it stays until forgotten."""
        node = self.inodes.find(parts)
        if node is not None:
            self.inodes.detach(node)

    def temp_moved(self, old: Parts, new: Parts, *, replaced: bool) -> None:
        """A temporary file moved from `old` to `new`, where it `replaced` another one."""
        if replaced:
            self.gone(new)
        node = self.inodes.find(old)
        if node is not None:
            self.inodes.move(node, new)

    def temp_committed(self, node: Node, value: Parts) -> None:
        """`node`, a temporary file renamed over value file `value`, now stands for it.

        The kernel holds `node` under that name until it looks the name up again.
        """
        self.inodes.make_alias(node, value)
        self._temp_of.pop(node.ino, None)

    def expire_temp_files(self) -> None:
        """Remove the temporary files closed long enough, and tell the kernel they are gone."""
        for temp in self.temps.expired():
            self.gone((*temp.container, temp.name))
            parent = self.inodes.find(temp.container)
            if parent is not None:
                self.freshness.notifier.drop_entry(parent.ino, temp.name)

    def file(self, node: Node) -> ContainerFile:
        """The value file `node` is: EISDIR for a directory, ENOENT for another name."""
        if len(node.parts) != self.view.depth + 1:
            raise fail(errno.EISDIR)
        file = FILES.get(node.parts[-1])
        if file is None:
            raise fail(errno.ENOENT)
        return file

    # Attributes -------------------------------------------------------------------

    def dir_attrs(self, ino: int, parts: Parts, st: os.stat_result) -> EntryAttributes:
        """A directory's attributes, from its backing directory's `st`."""
        timeouts = self.freshness.timeouts(parts)
        if parts and not self.freshness.kept_fresh(parts[:-1]):
            timeouts = UNWATCHED
        return attributes.directory(ino, st, timeouts, read_only=self.options.read_only)

    def file_attrs(
        self, ino: int, container: Parts, file: ContainerFile, snapshot: Snapshot
    ) -> EntryAttributes:
        """A value file's attributes: its record's, and the size of its value now."""
        meta = snapshot.meta
        data = snapshot.value(file)
        dir_stat = self.view.stat_dir(container) if meta is None else None
        writable = file.writable and not self.options.read_only
        attrs = attributes.value_file(
            ino, len(data), meta, dir_stat, self.freshness.timeouts(container), writable=writable
        )
        attrs.st_mtime_ns = self.freshness.attributes_told(ino, data, attrs.st_mtime_ns)
        return attrs

    @staticmethod
    def temp_attrs(ino: int, temp: TempFile) -> EntryAttributes:
        """A temporary file's attributes, as the tool that made it set them."""
        return attributes.plain_file(
            ino,
            mode=temp.mode,
            uid=temp.uid,
            gid=temp.gid,
            size=len(temp.data),
            times_ns=temp.times_ns,
        )

    def attrs(self, node: Node) -> EntryAttributes:
        """The attributes of whatever `node` is, read now."""
        if self.is_directory(node.parts):
            return self.dir_attrs(node.ino, node.parts, self.view.stat_dir(node.parts))
        temp = self.temp(node)
        if temp is not None:
            return self.temp_attrs(node.ino, temp)
        container = node.parts[:-1]
        return self.file_attrs(
            node.ino, container, self.file(node), self.freshness.snapshot(container)
        )

    # Directory entries ------------------------------------------------------------

    def look_up(self, parent: Node, name: bytes, uid: int) -> EntryAttributes:
        """The entry `name` of directory `parent`, as user `uid` sees it; counts a lookup.

        A value file that `uid` unlinked a moment ago is not there (see `tempfiles`).
        """
        parts = (*parent.parts, name)
        if len(parent.parts) < self.view.depth:
            if not is_visible(name):
                raise fail(errno.ENOENT)
            node = self.remember(parts)
            try:
                return self.dir_attrs(node.ino, parts, self.view.stat_dir(parts))
            except BaseException:
                self.forget(node)
                raise
        if len(parent.parts) > self.view.depth:
            raise fail(errno.ENOTDIR)
        file = FILES.get(name)
        if file is not None:
            if self.temps.value_file_unlinked(parent.parts, name, uid):
                raise fail(errno.ENOENT)
            snapshot = self.freshness.snapshot(parent.parts)
            return self.file_attrs(self.remember(parts).ino, parent.parts, file, snapshot)
        temp = self.temps.get(parent.parts, name)
        if temp is None:
            raise fail(errno.ENOENT)
        return self.temp_attrs(self.remember_temp(parts, temp).ino, temp)

    def new_entry(self, parent: Parts, name: bytes) -> EntryAttributes | None:
        """A full entry for a name the kernel does not hold; counts a lookup. None if gone."""
        parts = (*parent, name)
        if len(parent) < self.view.depth:
            (st,) = self.view.stat_children(parent, [name])
            if st is None:
                return None
            return self.dir_attrs(self.remember(parts).ino, parts, st)
        temp = self.temps.get(parent, name)
        if temp is not None:
            return self.temp_attrs(self.remember_temp(parts, temp).ino, temp)
        file = FILES.get(name)
        if file is None:
            return None
        snapshot = self.freshness.snapshot(parent)
        return self.file_attrs(self.remember(parts).ino, parent, file, snapshot)

    def plain_entry(self, parts: Parts) -> EntryAttributes | None:
        """An entry without attributes, for a name the kernel holds and inotify keeps fresh.

        The kernel then keeps what it cached (attributes, ACLs). None: send a full entry.
        """
        node = self.inodes.find(parts)
        if node is None or node.ino in self._temp_of:
            return None
        directory = self.is_directory(parts)
        if not self.freshness.kept_fresh(parts if directory else parts[:-1]):
            return None
        if node.plain is None:
            node.plain = attributes.plain_entry(
                node.ino, stat.S_IFDIR if directory else stat.S_IFREG
            )
        return node.plain
