"""What the kernel may keep of the mount, and when it must drop it: exactly fresh, cheaply.

The kernel caches entries, attributes and file pages. Keeping them saves requests (a
`cat` of an unchanged value is one OPEN, its bytes come from the page cache), but a
record may change at any moment by nerdctl, the library, the command line or another
mount. Three rules keep every answer fresh:

- inotify on every directory the kernel knows reports every change made to it, by
  anyone (nerdctl, the library, the command line, another mount, this one): the
  attributes of what changed are invalidated at once (so `stat` and `ls -l` see the
  change within milliseconds), the pages of values that changed are dropped, and
  `poll` waiters on those values are woken. With those watches the kernel may keep
  entries and attributes for long; where a watch cannot be had (inotify's limit), it
  keeps them for one second only.
- Every open first reads what inotify has queued (one system call: the kernel queues
  an event before the writer's rename returns, so nothing that happened before the
  open is missed). A watched container's record is then known without reading it
  again; an unwatched one is read. If the value differs from what the kernel may hold
  for that inode, its attributes are invalidated before the reply and the reply drops
  its cached pages (`keep_cache=False`); otherwise the pages stay.
- Our own writes are changes like any other, told the same way.
"""

from __future__ import annotations

import errno
import logging
import os
import select
from collections.abc import Iterable
from typing import Final

import pyfuse3
import trio

from fusefs import inotify
from fusefs.attributes import Timeouts
from fusefs.files import FILES
from fusefs.handles import ReadHandle
from fusefs.inodes import InodeTable, Node
from fusefs.notify import KernelNotifier
from fusefs.view import Parts, View, is_visible
from store import Lifecycle, LifecycleStoreError
from store.record import RECORD_NAME

log = logging.getLogger("lifecyclefs")

WATCHED: Final = Timeouts(entry=3600.0, attr=3600.0)
"""How long the kernel may keep what inotify tells us the changes of."""
UNWATCHED: Final = Timeouts(entry=1.0, attr=1.0)
"""How long it may keep the rest."""
_RECORD: Final = RECORD_NAME.encode()
_CACHED_RECORD_BYTES: Final = 4096
"""Records larger than this are read at every open rather than kept."""
_CACHED_RECORDS: Final = 100_000
_LISTED_NAMES: Final = 200_000
"""Names of listings kept, over all directories."""

Snapshot = tuple[Lifecycle, os.stat_result | None]
"""A record and its file's stat (None when there is no record)."""
_DIR_EVENTS: Final = (
    inotify.IN_ATTRIB
    | inotify.IN_CREATE
    | inotify.IN_DELETE
    | inotify.IN_MOVED_FROM
    | inotify.IN_MOVED_TO
    | inotify.IN_CLOSE_WRITE
    | inotify.IN_DELETE_SELF
    | inotify.IN_MOVE_SELF
    | inotify.IN_ONLYDIR
)
_GONE_SELF: Final = inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_UNMOUNT
_ENTRY_GONE: Final = inotify.IN_DELETE | inotify.IN_MOVED_FROM
_ENTRY_CHANGED: Final = _ENTRY_GONE | inotify.IN_CREATE | inotify.IN_MOVED_TO
_POLL_READY: Final = select.POLLIN | select.POLLRDNORM | select.POLLOUT | select.POLLWRNORM
_POLL_CHANGED: Final = _POLL_READY | select.POLLPRI | select.POLLERR


def invalidate_attributes(ino: int) -> None:
    """Make the kernel ask again for `ino`'s attributes (safe inside any handler)."""
    try:
        pyfuse3.invalidate_inode(ino, attr_only=True)
    except OSError as error:  # ENOENT: the kernel has dropped it already
        if error.errno != errno.ENOENT:
            raise


class Freshness:
    """The kernel's caches of one mount: what it was told, and the watches that keep it true."""

    def __init__(self, view: View, inodes: InodeTable) -> None:
        self._view = view
        self._inodes = inodes
        self.notifier = KernelNotifier()
        self._inotify = inotify.Inotify()
        self._wd_parts: dict[int, Parts] = {}
        self._watched: dict[Parts, int] = {}
        self._told: dict[int, bytes] = {}
        """What the kernel may hold (size and pages) of each file inode."""
        self._readers: dict[int, set[ReadHandle]] = {}
        self._snapshots: dict[Parts, Snapshot] = {}
        """The records of watched containers, as read since their last event."""
        self._listings: dict[Parts, list[bytes]] = {}
        """The entries of watched level directories, as listed since their last change."""
        self._watch_limit_logged = False

    def close(self) -> None:
        """Stop the notifier and drop every watch."""
        self.notifier.stop()
        self._inotify.close()

    # Watches ------------------------------------------------------------------------

    def watch(self, parts: Parts) -> None:
        """Watch directory `parts` (the kernel now holds it); quietly unwatched if we cannot."""
        if parts in self._watched:
            return
        try:
            fd = self._view.open_path(parts)
        except OSError:
            return
        try:
            wd = self._inotify.add_watch_fd(fd, _DIR_EVENTS)
        except OSError as error:
            if error.errno == errno.ENOSPC and not self._watch_limit_logged:
                self._watch_limit_logged = True
                log.warning(
                    "inotify watch limit reached (fs.inotify.max_user_watches):"
                    " directories beyond it are cached for 1 s only"
                )
            return
        finally:
            os.close(fd)
        stale = self._wd_parts.get(wd)
        if stale is not None:  # the same directory under another name: it was moved
            self._watched.pop(stale, None)
        self._wd_parts[wd] = parts
        self._watched[parts] = wd

    def _forget_watch(self, wd: int, parts: Parts) -> None:
        self._wd_parts.pop(wd, None)
        if self._watched.get(parts) == wd:
            del self._watched[parts]
        for watched in [p for p in self._snapshots if p[: len(parts)] == parts]:
            del self._snapshots[watched]
        for listed in [p for p in self._listings if p[: len(parts)] == parts]:
            del self._listings[listed]

    def unwatch(self, parts: Parts) -> None:
        """Stop watching directory `parts` (the kernel has forgotten it)."""
        self._snapshots.pop(parts, None)
        self._listings.pop(parts, None)
        wd = self._watched.pop(parts, None)
        if wd is None:
            return
        if self._wd_parts.get(wd) == parts:
            del self._wd_parts[wd]
            try:
                self._inotify.remove_watch(wd)
            except OSError as error:
                log.debug(
                    "cannot remove the watch of %s: %s", self._view.display_path(parts), error
                )

    def snapshot(self, container: Parts) -> Snapshot:
        """`container`'s last committed record and its stat, exactly as fresh as a read.

        Reads the events inotify queued first; a watched container's record read since
        its last event is not read again.
        """
        self.drain()
        known = self._snapshots.get(container)
        if known is not None:
            return known
        return self._read(container)

    def _read(self, container: Parts) -> Snapshot:
        snapshot = self._view.read_record(container)
        if container in self._watched and (
            snapshot[1] is None or snapshot[1].st_size <= _CACHED_RECORD_BYTES
        ):
            if len(self._snapshots) >= _CACHED_RECORDS:
                self._snapshots.clear()
            self._snapshots[container] = snapshot
        return snapshot

    def listing(self, parts: Parts) -> list[bytes] | None:
        """The entries of level directory `parts` as last listed, if still exactly so."""
        self.drain()
        return self._listings.get(parts)

    def listed(self, parts: Parts, names: list[bytes]) -> None:
        """Keep the listing of `parts` (read after `listing` said None) while it holds."""
        if parts not in self._watched:
            return
        if sum(map(len, self._listings.values())) + len(names) > _LISTED_NAMES:
            self._listings.clear()
        self._listings[parts] = names

    def drain(self) -> None:
        """Act on what inotify has queued now."""
        events = self._inotify.read()
        if events:
            self.handle(events)

    def timeouts(self, directory: Parts) -> Timeouts:
        """How long the kernel may keep entries and attributes of (or in) `directory`."""
        return WATCHED if directory in self._watched else UNWATCHED

    def kept_fresh(self, directory: Parts) -> bool:
        """Whether every change to `directory`'s attributes reaches us (it is watched)."""
        return directory in self._watched

    # What the kernel holds of each file ----------------------------------------------

    def told(self, ino: int, data: bytes) -> None:
        """The kernel was told attributes for `data` (its size) for file inode `ino`."""
        self._told[ino] = data

    def forget(self, node: Node) -> None:
        """The kernel dropped `node`: forget what it was told and stop watching it."""
        self._told.pop(node.ino, None)
        self.unwatch(node.parts)

    def opened_for_reading(self, handle: ReadHandle) -> bool:
        """A reader opened `handle`'s file; say whether the kernel may keep its pages.

        When the value differs from what the kernel may hold, its attributes are
        invalidated now (before the open is answered) and the answer drops its pages.
        """
        ino = handle.node.ino
        self._readers.setdefault(ino, set()).add(handle)
        if self._told.get(ino) == handle.data:
            return True
        self._told[ino] = handle.data
        invalidate_attributes(ino)
        return False

    def opened_for_writing(self, ino: int) -> None:
        """A writer opened file inode `ino`: O_TRUNC may have emptied the kernel's copy."""
        self._told.pop(ino, None)

    def released(self, handle: ReadHandle) -> None:
        """A reader closed `handle`."""
        readers = self._readers.get(handle.node.ino)
        if readers is not None:
            readers.discard(handle)
            if not readers:
                del self._readers[handle.node.ino]

    def poll(self, handle: ReadHandle, waiter: pyfuse3.PollHandle | None) -> int:
        """sysfs-style poll: POLLPRI|POLLERR once the value changed since `handle` read it.

        Otherwise keep `waiter`, to be woken when it changes.
        """
        container = handle.node.parts[:-1]
        try:
            record, _ = self.snapshot(container)
        except (OSError, LifecycleStoreError):
            return _POLL_CHANGED  # a read will tell what went wrong
        value = handle.file.render(record)
        if value != (handle.latest if handle.latest is not None else handle.data):
            handle.latest = value
        if handle.latest is not None and handle.latest != handle.data:
            return _POLL_CHANGED
        if waiter is not None:
            handle.poll = waiter
        return _POLL_READY

    # Changes ------------------------------------------------------------------------

    def record_changed(self, container: Parts, record: Lifecycle | None) -> None:
        """`container`'s record changed (None: it is unreadable now); tell the kernel.

        Attributes of its files and directory are invalidated at once; the pages of
        values that changed are dropped, and their readers' `poll` waiters woken.
        """
        self._snapshots.pop(container, None)
        directory = self._inodes.find(container)
        if directory is not None:
            invalidate_attributes(directory.ino)
        for name, file in FILES.items():
            node = self._inodes.find((*container, name))
            if node is None:
                continue
            invalidate_attributes(node.ino)
            value = None if record is None else file.render(record)
            told = self._told.get(node.ino)
            if value is not None and told == value:
                continue
            self._told.pop(node.ino, None)
            readers = self._readers.get(node.ino)
            if not readers:
                continue  # the next open drops the pages itself (see opened_for_reading)
            self.notifier.drop_pages(node.ino)
            for reader in readers:
                if value is not None and value != reader.data:
                    reader.latest = value
                if reader.poll is not None:
                    self.notifier.wake(reader.poll)
                    reader.poll = None

    def _refresh(self, container: Parts) -> None:
        if not any(self._inodes.find((*container, name)) for name in FILES):
            directory = self._inodes.find(container)
            if directory is not None:
                invalidate_attributes(directory.ino)
            return
        self._snapshots.pop(container, None)
        try:
            record: Lifecycle | None = self._read(container)[0]
        except (OSError, LifecycleStoreError):
            record = None
        self.record_changed(container, record)

    def _everything_changed(self) -> None:
        """inotify lost events: drop every attribute and page the kernel holds of us."""
        self._told.clear()
        self._snapshots.clear()
        self._listings.clear()
        for node in self._inodes.nodes():
            invalidate_attributes(node.ino)
            if len(node.parts) > self._view.depth:
                self.notifier.drop_pages(node.ino)
        for readers in self._readers.values():
            for reader in readers:
                if reader.poll is not None:
                    self.notifier.wake(reader.poll)
                    reader.poll = None

    # The watcher --------------------------------------------------------------------

    async def run(self) -> None:
        """Read inotify events for as long as the mount lives, and tell the kernel."""
        while True:
            await trio.lowlevel.wait_readable(self._inotify.fileno())
            self.handle(self._inotify.read())

    def handle(self, events: Iterable[inotify.Event]) -> None:
        """Turn one batch of inotify events into invalidations, each done once."""
        changed: set[Parts] = set()
        directories: set[Parts] = set()
        gone: set[tuple[Parts, bytes]] = set()
        for event in events:
            if event.mask & inotify.IN_Q_OVERFLOW:
                self._everything_changed()
                continue
            parts = self._wd_parts.get(event.wd)
            if parts is None:
                continue
            if event.mask & (inotify.IN_IGNORED | _GONE_SELF):
                # The directory is gone from where we knew it: no longer watched there.
                self._forget_watch(event.wd, parts)
                directories.add(parts)
                if parts and event.mask & _GONE_SELF:
                    gone.add((parts[:-1], parts[-1]))
                continue
            directories.add(parts)
            if len(parts) == self._view.depth:
                if event.name in (_RECORD, b""):
                    changed.add(parts)
            elif event.mask & inotify.IN_ISDIR and is_visible(event.name):
                directories.add((*parts, event.name))
                if event.mask & _ENTRY_GONE:
                    gone.add((parts, event.name))
                if event.mask & _ENTRY_CHANGED:
                    self._listings.pop(parts, None)
        for parts in directories - changed:
            node = self._inodes.find(parts)
            if node is not None:
                invalidate_attributes(node.ino)
        for container in changed:
            self._refresh(container)
        for parent, name in gone:
            node = self._inodes.find(parent)
            if node is not None:
                self.notifier.drop_entry(node.ino, name)
