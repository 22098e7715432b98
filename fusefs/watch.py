"""`lifecyclefs watch`: one JSON line per change of any record below SOURCE, from inotify.

Each line is the container's state after the change, by its path below SOURCE:

    {"path": "default/r1", "started_at": "2024-01-02T04:04:05+01:00", "create_error": false}
    {"path": "default/r1", "removed": true}
    {"path": "default/r1", "error": "corrupt record ...: ..."}

Every directory of the tree is watched, through a descriptor the view opened safely,
and a new namespace or container directory is watched as it appears (then read, so
that what it held before its watch existed is not missed). A record counts as changed
when it is renamed into place (nerdctl, `Store`), closed after a write in place, or
removed. When the kernel's event queue overflows, the whole tree is read again. The
same state is never printed twice in a row for one container. Lines are flushed one by
one; SIGINT and SIGTERM end the watch quietly with status 0. SOURCE itself removed
ends it with status 1 (within a second).
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from fusefs import inotify
from fusefs.containers import open_view, read_snapshot, relative_path, started_at_value
from fusefs.output import emit
from fusefs.view import Parts, View, is_visible
from store import LifecycleStoreError
from store.record import RECORD_NAME

State = tuple[tuple[str, object], ...]
"""What a line says about one container, path aside; no entry means no record."""

_RECORD: Final = RECORD_NAME.encode()
_DIR_EVENTS: Final = (
    inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_DELETE | inotify.IN_MOVED_FROM
)
_RECORD_EVENTS: Final = (
    inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_DELETE | inotify.IN_MOVED_FROM
)
_SELF_GONE: Final = inotify.IN_DELETE_SELF | inotify.IN_UNMOUNT
_LEVEL_MASK: Final = _DIR_EVENTS | _SELF_GONE | inotify.IN_ONLYDIR
"""Directories above the containers: entries coming and going."""
_CONTAINER_MASK: Final = _RECORD_EVENTS | _SELF_GONE | inotify.IN_ONLYDIR
"""Container directories: the record changing (a temp file's events are filtered out)."""
_REMOVED: Final[State] = (("removed", True),)
_SOURCE_CHECK_MS: Final = 1000
"""How often SOURCE's link count is looked at: while the view holds SOURCE open, the
kernel tells no watch that SOURCE was removed (IN_DELETE_SELF waits for the close)."""


class SourceGoneError(Exception):
    """SOURCE itself was removed or unmounted: there is nothing left to watch."""


class ReaderGoneError(Exception):
    """Nobody reads the lines any more (`lifecyclefs watch | head -1`)."""


class Watcher:
    """The tree below one SOURCE, watched: what was last printed for each container."""

    def __init__(self, view: View, watches: inotify.Inotify, emit: Callable[[str], None]) -> None:
        self._view = view
        self._watches = inotify.Watches(watches)
        self._emit = emit
        self._states: dict[Parts, State] = {}

    def start(self, *, report: bool) -> None:
        """Watch the whole tree and learn every record (printing each if `report`)."""
        self._add_tree((), report=report)

    def handle(self, events: list[inotify.Event]) -> None:
        """Bring the printed states up to date with a batch of events."""
        dirty: dict[Parts, None] = {}  # ordered set: containers to read again
        for event in events:
            if event.mask & inotify.IN_Q_OVERFLOW:
                self.rescan()
                dirty.clear()
                continue
            parts = self._watches.path_of(event.wd)
            if parts is None:
                continue  # a watch already forgotten
            if event.mask & (_SELF_GONE | inotify.IN_IGNORED):
                self._gone(parts, event.wd)
            elif self._view.is_container(parts):
                if event.name == _RECORD and not event.mask & inotify.IN_ISDIR:
                    dirty[parts] = None
            elif event.mask & inotify.IN_ISDIR and is_visible(event.name):
                child = (*parts, event.name)
                if event.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
                    self._add_tree(child, report=True)
                else:
                    self._remove_tree(child)
        for container in dirty:
            if container in self._watches.paths():
                self._refresh(container, report=True)

    def rescan(self) -> None:
        """Read the whole tree again (after lost events): print what changed meanwhile."""
        seen: set[Parts] = set()
        self._add_tree((), report=True, seen=seen)
        for parts in [parts for parts in self._watches.paths() if parts not in seen]:
            self._watches.remove(parts)
        for container in [container for container in self._states if container not in seen]:
            self._set(container, None, report=True)

    def _add_tree(self, parts: Parts, *, report: bool, seen: set[Parts] | None = None) -> None:
        """Watch `parts` and the directories below it, then read each container's record.

        The watch comes before the listing and the read, so nothing that happens after
        the watch exists is missed.
        """
        container = self._view.is_container(parts)
        try:
            fd = self._view.open_dir(parts)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone already: its removal is (or was) an event of its parent
        try:
            self._watches.add(parts, fd, _CONTAINER_MASK if container else _LEVEL_MASK)
        finally:
            os.close(fd)
        if seen is not None:
            seen.add(parts)
        if container:
            self._refresh(parts, report=report)
            return
        try:
            children = self._view.list_names(parts, limit=sys.maxsize)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in children:
            self._add_tree((*parts, name), report=report, seen=seen)

    def source_removed(self) -> None:
        """SOURCE is gone: say so for every record it held, then raise SourceGoneError."""
        self._gone((), self._watches.wd_of(()))

    def _gone(self, parts: Parts, wd: int | None) -> None:
        """The directory watched as `wd` was removed (its parent's event may say so too)."""
        if self._watches.wd_of(parts) != wd:
            return  # since replaced by a new directory of the same name
        self._remove_tree(parts)
        if not parts:
            raise SourceGoneError(f"{self._view.source} was removed")

    def _remove_tree(self, parts: Parts) -> None:
        """`parts` and everything below it are gone: say so for each record it held."""
        if self._view.is_container(parts):
            below = [parts]
        else:
            known = sorted(self._watches.paths() | self._states.keys())
            below = [other for other in known if other[: len(parts)] == parts]
        for other in below:
            self._watches.remove(other)
            self._set(other, None, report=True)

    def _refresh(self, container: Parts, *, report: bool) -> None:
        self._set(container, read_state(self._view, container), report=report)

    def _set(self, container: Parts, state: State | None, *, report: bool) -> None:
        """Record the container's state; print it if asked and it is not the last printed."""
        if state == self._states.get(container):
            return
        if state is None:
            del self._states[container]
            state = _REMOVED
        else:
            self._states[container] = state
        if report:
            self._emit(json.dumps({"path": relative_path(container), **dict(state)}) + "\n")


def read_state(view: View, container: Parts) -> State | None:
    """The container's record as a line shows it; None when it has none (or is gone)."""
    try:
        record = read_snapshot(view, container)
    except LifecycleStoreError as error:
        return (("error", str(error)),)
    if record is None:
        return None
    return (("started_at", started_at_value(record)), ("create_error", record.create_error))


@contextmanager
def _stop_signals() -> Iterator[int]:
    """While inside, SIGINT and SIGTERM only make the yielded descriptor readable."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    try:
        for number in previous:
            signal.signal(number, lambda _number, _frame: None)
        yield read_end
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(old_wakeup)
        os.close(read_end)
        os.close(write_end)


def _write_line(line: str) -> None:
    if not emit(line, flush=True):
        raise ReaderGoneError


def watch(view: View, *, initial: bool, stop_fd: int) -> None:
    """Print every change below the view's SOURCE until `stop_fd` becomes readable.

    OSError when a watch cannot be added (ENOSPC: the inotify watch limit), SourceGoneError
    when SOURCE is removed, ReaderGoneError when nobody reads the lines any more.
    """
    with inotify.Inotify() as watches:
        watcher = Watcher(view, watches, _write_line)
        watcher.start(report=initial)
        poller = select.poll()
        poller.register(watches.fileno(), select.POLLIN)
        poller.register(stop_fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll(_SOURCE_CHECK_MS)}
            if stop_fd in ready:
                return
            while events := watches.read():
                watcher.handle(events)
            if os.fstat(view.source_fd).st_nlink == 0:
                watcher.source_removed()


def main(source: str, depth: int, *, initial: bool) -> int:
    """`lifecyclefs watch`: print changes until SIGINT or SIGTERM, then exit 0."""
    from fusefs.cli import EXIT_OK, CommandError  # noqa: PLC0415 - cli imports us

    with _stop_signals() as stop_fd:
        view = open_view(source, depth)
        try:
            watch(view, initial=initial, stop_fd=stop_fd)
        except ReaderGoneError:
            pass
        except SourceGoneError as error:
            raise CommandError(str(error)) from error
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise CommandError(
                    "cannot watch every directory: the inotify watch limit is reached"
                    " (sysctl fs.inotify.max_user_watches)"
                ) from error
            raise CommandError(f"watching {view.source}: {error.strerror or error}") from error
        finally:
            view.close()
    return EXIT_OK
