"""What the kernel may keep of the mount, and when it must drop it: exactly fresh, cheaply.

The kernel caches entries, attributes and file pages. Keeping them saves requests (a
`cat` of an unchanged value is one OPEN; its bytes come from the page cache), but a
record may change at any moment: by nerdctl, the library, the command line, another
mount or this one. The rules that keep every answer right:

- inotify on every directory the kernel knows reports every change to it, by anyone.
  The attributes of what changed are invalidated at once (so `stat` and `ls -l` see
  the change within milliseconds) and `poll` waiters on values that changed are woken.
  A write through the mount invalidates its container's files itself, before it
  answers; the directory's new mtime comes with the watcher's batch, as any change's.
  With those watches the kernel may keep entries and attributes for an hour; where a
  watch cannot be had (inotify's limit), it keeps them for one second only, and files
  there are never served from the page cache.
- Every open first reads what inotify has queued (one system call: the kernel queues
  an event before the writer's rename returns, so nothing that happened before the
  open is missed). A watched container's record read since its last event is known
  without reading it again.
- A value file's size and its cached pages must always stand for the same value, or a
  read would come out cut or padded. The kernel learns the size only from our
  attribute replies, and drops an attribute reply that arrives after it was told to
  invalidate (its attribute version moved on). So: attributes are invalidated only
  while the kernel holds valid ones (then no attribute request of its can be in
  flight); a reader's cached pages are refilled with exactly the value of the last
  attribute reply; and the reported mtime always moves when the value does, so that
  the kernel drops pages of an older value itself (it does when size or mtime change).
- A write through the mount makes the kernel change the size itself (O_TRUNC empties
  it, a write extends it), and several processes' attribute replies reach the kernel
  in no particular order. So a container that changed within the last second, or has
  a writer, is read without the page cache (direct I/O: exactly the snapshot of each
  open, whatever the size); a writer waits (briefly) for readers that just opened
  from the cache. The page cache serves the common case: a value that stays put.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import pyfuse3
import trio

from fusefs import inotify
from fusefs.attributes import FileMeta, Timeouts
from fusefs.files import FILES, ContainerFile
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
_CACHED_RECORD_BYTES: Final = 1024
"""Records larger than this are read at every open rather than kept."""
_CACHED_RECORDS: Final = 20_000
_LISTED_NAMES: Final = 100_000
"""Names of listings kept, over all directories."""


class Snapshot:
    """A record as last committed, what attributes show of its file, and its rendered values.

    Kept for every watched container the kernel knows: rendering each file once per
    change (not once per open) is part of what makes a `cat` cheap.
    """

    __slots__ = ("_values", "meta", "record")

    def __init__(self, record: Lifecycle, meta: FileMeta | None) -> None:
        self.record = record
        self.meta = meta
        """None when there is no record."""
        self._values: dict[bytes, bytes] = {}

    def value(self, file: ContainerFile) -> bytes:
        """`file` rendered from this record."""
        value = self._values.get(file.name)
        if value is None:
            value = self._values[file.name] = file.render(self.record)
        return value


_SELF_EVENTS: Final = (
    inotify.IN_ATTRIB | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_ONLYDIR
)
_LEVEL_EVENTS: Final = (
    _SELF_EVENTS
    | inotify.IN_CREATE
    | inotify.IN_DELETE
    | inotify.IN_MOVED_FROM
    | inotify.IN_MOVED_TO
)
"""What changes a level directory's listing or a subdirectory's attributes."""
_CONTAINER_EVENTS: Final = (
    _SELF_EVENTS
    | inotify.IN_DELETE
    | inotify.IN_MOVED_FROM
    | inotify.IN_MOVED_TO
    | inotify.IN_CLOSE_WRITE
)
"""What changes a record: a rename onto or away from it, a write in place, an unlink.
(A creation in place ends with IN_CLOSE_WRITE; IN_CREATE would only add a temp
file's noise to every nerdctl write.)"""
_GONE_SELF: Final = inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_UNMOUNT
_ENTRY_GONE: Final = inotify.IN_DELETE | inotify.IN_MOVED_FROM
_ENTRY_CHANGED: Final = _ENTRY_GONE | inotify.IN_CREATE | inotify.IN_MOVED_TO
_BATCH_SECONDS: Final = 0.005
_BUSY_SECONDS: Final = 1.0
"""After a change, a container's files are read without the page cache for this long.
The kernel takes a file's size and its pages in separate steps; while a value keeps
changing, readers racing those steps could see one value's bytes in another's size."""
_WRITER_WAITS_SECONDS: Final = 0.1
"""How long a writer waits for readers that opened from the page cache just before it."""
_POLL_READY: Final = select.POLLIN | select.POLLRDNORM | select.POLLOUT | select.POLLWRNORM
_POLL_CHANGED: Final = _POLL_READY | select.POLLPRI | select.POLLERR


def invalidate_attributes(ino: int) -> None:
    """Make the kernel ask again for `ino`'s attributes (safe inside any handler)."""
    try:
        pyfuse3.invalidate_inode(ino, attr_only=True)
    except OSError as error:  # ENOENT: the kernel has dropped it already
        if error.errno != errno.ENOENT:
            raise


@dataclass(slots=True, eq=False)
class _KernelCopy:
    """What the kernel holds of one of our files, and who has it open.

    One exists per file inode the kernel holds (10,000s of them): what is rarely
    needed (reader sets, the event a writer waits on) is made only when needed.
    """

    value: bytes | None = None
    """The value its size (and cached pages, if any) stand for; None: unknown."""
    mtime_ns: int | None = None
    """The mtime it was last told."""
    attrs_valid: bool = False
    """It holds attributes it was not told to drop (so it sends no attribute request)."""
    writers: int = 0
    cached_readers: list[ReadHandle] | None = None
    direct_readers: list[ReadHandle] | None = None
    reader_gone: trio.Event | None = None

    @property
    def idle(self) -> bool:
        """Nothing to remember: the kernel holds no attributes and nobody has it open."""
        return not (
            self.value is not None
            or self.attrs_valid
            or self.writers
            or self.cached_readers
            or self.direct_readers
        )

    def add_reader(self, handle: ReadHandle) -> None:
        """Count `handle` among the readers through the page cache or, if not
        `handle.cached`, without it."""
        if handle.cached:
            if self.cached_readers is None:
                self.cached_readers = []
            self.cached_readers.append(handle)
        else:
            if self.direct_readers is None:
                self.direct_readers = []
            self.direct_readers.append(handle)

    def readers(self) -> tuple[ReadHandle, ...]:
        """Every reader of the file."""
        return (*(self.cached_readers or ()), *(self.direct_readers or ()))


class Freshness:
    """The kernel's caches of one mount: what it was told, and the watches that keep it true."""

    def __init__(self, view: View, inodes: InodeTable) -> None:
        self._view = view
        self._inodes = inodes
        self.notifier = KernelNotifier()
        self._inotify = inotify.Inotify()
        self._queued = select.poll()
        self._queued.register(self._inotify.fileno(), select.POLLIN)
        self._watches = inotify.Watches(self._inotify)
        self._watched = self._watches.paths()
        """The watched directories, live (tested on every request: a C-level lookup)."""
        self._copies: dict[int, _KernelCopy] = {}
        """What the kernel holds of each of our file inodes."""
        self._snapshots: dict[Parts, Snapshot] = {}
        """The records of watched containers, as read since their last event."""
        self._busy_until: dict[Parts, float] = {}
        """Containers that changed a moment ago, and until when they count as busy."""
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
            events = _CONTAINER_EVENTS if len(parts) == self._view.depth else _LEVEL_EVENTS
            self._watches.add(parts, fd, events)
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

    def _forget_watch(self, wd: int, parts: Parts) -> None:
        self._watches.dropped(wd)
        for watched in [p for p in self._snapshots if p[: len(parts)] == parts]:
            del self._snapshots[watched]
        for listed in [p for p in self._listings if p[: len(parts)] == parts]:
            del self._listings[listed]

    def unwatch(self, parts: Parts) -> None:
        """Stop watching directory `parts` (the kernel has forgotten it)."""
        self._snapshots.pop(parts, None)
        self._listings.pop(parts, None)
        try:
            self._watches.remove(parts)
        except OSError as error:
            log.debug("cannot remove the watch of %s: %s", self._view.display_path(parts), error)

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
        record, st = self._view.read_record(container)
        snapshot = Snapshot(record, None if st is None else FileMeta.of(st))
        if container in self._watched and (st is None or st.st_size <= _CACHED_RECORD_BYTES):
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
        """Act on what inotify has queued now (cheap when nothing is: no exception)."""
        if self._queued.poll(0):
            self.handle(self._inotify.read())

    def timeouts(self, directory: Parts) -> Timeouts:
        """How long the kernel may keep entries and attributes of (or in) `directory`."""
        return WATCHED if directory in self._watched else UNWATCHED

    def kept_fresh(self, directory: Parts) -> bool:
        """Whether every change to `directory`'s attributes reaches us (it is watched)."""
        return directory in self._watched

    # What the kernel holds of each file ----------------------------------------------

    def _copy(self, ino: int) -> _KernelCopy:
        copy = self._copies.get(ino)
        if copy is None:
            copy = self._copies[ino] = _KernelCopy()
        return copy

    def _tidy(self, ino: int, copy: _KernelCopy) -> None:
        if copy.idle:
            self._copies.pop(ino, None)

    def _invalidate(self, ino: int, copy: _KernelCopy) -> None:
        """Make the kernel drop `ino`'s attributes, if it holds valid ones."""
        if copy.attrs_valid:
            copy.attrs_valid = False
            invalidate_attributes(ino)

    def attributes_told(self, ino: int, value: bytes, mtime_ns: int) -> int:
        """The kernel is being told `ino`'s attributes for `value`; returns the mtime to tell.

        The mtime moves by a nanosecond where the record's own did not but the value
        did (two changes within one clock tick), so that the kernel drops stale pages.
        Readers that read from the page cache refill it with this very value.
        """
        copy = self._copy(ino)
        if copy.value is not None and copy.value != value and copy.mtime_ns is not None:
            mtime_ns = max(mtime_ns, copy.mtime_ns + 1)
        copy.value, copy.mtime_ns, copy.attrs_valid = value, mtime_ns, True
        for reader in copy.cached_readers or ():
            reader.latest = value
        return mtime_ns

    def forget(self, node: Node) -> None:
        """The kernel dropped `node`: forget what it held and stop watching it."""
        copy = self._copies.get(node.ino)
        if copy is not None:
            copy.value, copy.mtime_ns, copy.attrs_valid = None, None, False
            self._tidy(node.ino, copy)
        self.unwatch(node.parts)

    def opened_for_reading(self, handle: ReadHandle) -> bool | None:
        """A reader opened `handle`'s file: how the kernel may serve its reads.

        None: without the page cache (direct I/O); only a value file (not the record,
        which may span pages) of a watched container that is quiet (no writer, no
        change for a second) uses it. Otherwise whether the kernel may keep the pages
        it holds: if the value differs from the one they stand for, its attributes are
        invalidated now (before the open is answered) and the pages must go
        (`keep_cache=False`).
        """
        handle.opened_at = now = time.monotonic()
        copy = self._copy(handle.node.ino)
        handle.cached = self._cacheable(copy, handle.node.parts[:-1], handle.file, now)
        copy.add_reader(handle)
        if not handle.cached:
            return None
        if copy.value == handle.data:
            return True
        self._invalidate(handle.node.ino, copy)
        copy.value = None  # the open drops the pages; the next attributes tell again
        return False

    def open_unchanged(self, ino: int, uid: int) -> ReadHandle | None:
        """A reader's open of `ino` that the kernel may serve from the pages it holds.

        The `cat` of a value that stays put, decided with as few lookups as it takes:
        the kernel holds the file's value, inotify has queued nothing about its
        container (read first), whose record is known, and the value is still that one.
        Then the rules of `opened_for_reading` hold as for any reader, and the handle
        returned is registered as reading from the cache. None: nothing was registered;
        ask `opened_for_reading`.
        """
        copy = self._copies.get(ino)
        node = self._inodes.find_ino(ino)
        if copy is None or copy.value is None or node is None:
            return None
        file = FILES.get(node.parts[-1])
        if file is None or len(node.parts) != self._view.depth + 1:
            return None
        self.drain()
        container = node.parts[:-1]
        snapshot = self._snapshots.get(container)
        now = time.monotonic()
        if (
            snapshot is None
            or snapshot.value(file) != copy.value
            or not self._cacheable(copy, container, file, now)
        ):
            return None
        handle = ReadHandle(node, file, copy.value, uid, cached=True, opened_at=now)
        copy.add_reader(handle)
        return handle

    def _cacheable(
        self, copy: _KernelCopy, container: Parts, file: ContainerFile, now: float
    ) -> bool:
        """Whether `file` may be read through the page cache now (see the rules above)."""
        return (
            file.writable
            and not copy.writers
            and self._busy_until.get(container, 0.0) <= now
            and container in self._watched
        )

    def released(self, handle: ReadHandle) -> None:
        """A reader closed `handle`."""
        ino = handle.node.ino
        copy = self._copies.get(ino)
        if copy is None:
            return
        if handle.cached and copy.cached_readers is not None:
            copy.cached_readers.remove(handle)
            if copy.reader_gone is not None:
                copy.reader_gone.set()
                copy.reader_gone = None
        elif copy.direct_readers is not None:
            copy.direct_readers.remove(handle)
        self._tidy(ino, copy)

    def _busy(self, container: Parts) -> None:
        now = time.monotonic()
        if len(self._busy_until) >= _CACHED_RECORDS:
            self._busy_until = {c: t for c, t in self._busy_until.items() if t > now}
        self._busy_until[container] = now + _BUSY_SECONDS

    async def opened_for_writing(self, ino: int) -> None:
        """A writer opens file `ino`: readers go without the page cache while it writes.

        The kernel changes the file's size itself for a writer (O_TRUNC empties it). A
        reader that just opened from the page cache (it has yet to read) is waited for,
        briefly, so that it reads what it opened.
        """
        copy = self._copy(ino)
        copy.writers += 1
        copy.value, copy.attrs_valid = None, False
        node = self._inodes.find_ino(ino)
        if node is not None:
            self._busy(node.parts[:-1])

        def just_opened() -> bool:
            now = time.monotonic()
            return any(
                now - reader.opened_at < _WRITER_WAITS_SECONDS
                for reader in copy.cached_readers or ()
            )

        if just_opened():
            with trio.move_on_after(_WRITER_WAITS_SECONDS):
                while just_opened():
                    if copy.reader_gone is None:
                        copy.reader_gone = trio.Event()
                    await copy.reader_gone.wait()

    def writer_released(self, ino: int) -> None:
        """A writer of file `ino` closed it."""
        copy = self._copies.get(ino)
        if copy is not None:
            copy.writers -= 1
            self._tidy(ino, copy)

    def poll(self, handle: ReadHandle, waiter: pyfuse3.PollHandle | None) -> int:
        """sysfs-style poll: POLLPRI|POLLERR once the value changed since `handle` read it.

        Otherwise keep `waiter`, to be woken when it changes.
        """
        container = handle.node.parts[:-1]
        try:
            value = self.snapshot(container).value(handle.file)
        except (OSError, LifecycleStoreError):
            return _POLL_CHANGED  # a read will tell what went wrong
        if value != (handle.latest if handle.latest is not None else handle.data):
            handle.latest = value
        if handle.latest is not None and handle.latest != handle.data:
            return _POLL_CHANGED
        if waiter is not None:
            handle.poll = waiter
        return _POLL_READY

    # Changes ------------------------------------------------------------------------

    def record_changed(
        self, container: Parts, record: Lifecycle | None, *, written: int | None = None
    ) -> None:
        """`container`'s record changed (None: it is unreadable now); tell the kernel.

        The attributes of its files are invalidated (see the rules above), readers
        without the page cache get the new value from their next read at offset 0, and
        `poll` waiters on values that changed are woken. `written` is the file just
        written through the mount: the kernel dropped its size and times itself, and
        keeps its mode, so that the writer's next open needs no request.

        The directory's own attributes (the rename moved its mtime) are left to the
        watcher's next batch, within milliseconds, as for a change made outside:
        invalidating them here made the kernel ask for them again at every write,
        which cost a third of the write.
        """
        self._snapshots.pop(container, None)
        self._busy(container)
        for file, ino, copy in self._held_files(container):
            if ino == written:
                copy.attrs_valid = False
            else:
                self._invalidate(ino, copy)
            value = None if record is None else file.render(record)
            for reader in copy.direct_readers or ():
                if value is not None and value != reader.data:
                    reader.latest = value
            for reader in copy.readers():
                if reader.poll is not None and value != reader.data:
                    self.notifier.wake(reader.poll)
                    reader.poll = None

    def attributes_changed(self, parts: Parts, *, directory: bool) -> None:
        """The owner, mode or ACL of directory `parts`, or of container `parts`'s record,
        changed through the mount: the kernel must ask again (ACLs included)."""
        if directory:
            self._invalidate_directory(parts)
            return
        self._snapshots.pop(parts, None)
        for _, ino, copy in self._held_files(parts):
            self._invalidate(ino, copy)

    def _invalidate_directory(self, parts: Parts) -> None:
        """Make the kernel ask again for directory `parts`'s attributes, if it holds it."""
        node = self._inodes.find(parts)
        if node is not None:
            invalidate_attributes(node.ino)

    def _held_files(self, container: Parts) -> Iterator[tuple[ContainerFile, int, _KernelCopy]]:
        """The files of `container` the kernel holds something of: each, its inode, its copy."""
        for name, file in FILES.items():
            node = self._inodes.find((*container, name))
            copy = None if node is None else self._copies.get(node.ino)
            if node is not None and copy is not None:
                yield file, node.ino, copy

    def _reread(self, container: Parts) -> Lifecycle | None:
        """`container`'s record read anew; None when it cannot be read now."""
        self._snapshots.pop(container, None)
        try:
            return self._read(container).record
        except (OSError, LifecycleStoreError):
            return None

    def _refresh(self, container: Parts) -> None:
        if any(self._inodes.find((*container, name)) for name in FILES):
            self.record_changed(container, self._reread(container))

    def _everything_changed(self) -> None:
        """inotify lost events: everything may have changed."""
        self._snapshots.clear()
        self._listings.clear()
        for node in self._inodes.nodes():
            if len(node.parts) <= self._view.depth:
                invalidate_attributes(node.ino)
        for container in {
            node.parts[:-1] for node in self._inodes.nodes() if len(node.parts) > self._view.depth
        }:
            self.record_changed(container, self._reread(container))

    # The watcher --------------------------------------------------------------------

    async def run(self) -> None:
        """Read inotify events for as long as the mount lives, and tell the kernel.

        Events are taken in batches a few milliseconds apart (a write brings several),
        well within the 100 ms in which `stat` must see a change; an open reads them
        at once anyway.
        """
        while True:
            await trio.lowlevel.wait_readable(self._inotify.fileno())
            await trio.sleep(_BATCH_SECONDS)
            self.drain()

    def handle(self, events: Iterable[inotify.Event]) -> None:
        """Turn one batch of inotify events into invalidations, each done once."""
        changed: set[Parts] = set()
        directories: set[Parts] = set()
        gone: set[tuple[Parts, bytes]] = set()
        for event in events:
            if event.mask & inotify.IN_Q_OVERFLOW:
                self._everything_changed()
                continue
            parts = self._watches.path_of(event.wd)
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
        for parts in directories:  # every changed container's directory among them
            self._invalidate_directory(parts)
        for container in changed:
            self._refresh(container)
        for parent, name in gone:
            node = self._inodes.find(parent)
            if node is not None:
                self.notifier.drop_entry(node.ino, name)
