"""Telling the kernel to drop a directory entry, or to wake a `poll`, from a thread of its own.

Dropping a directory entry can block: the kernel waits for a lookup in the same
directory to finish, and only the trio loop can answer that lookup. So these
notifications never run on the loop: they queue here and a single thread sends them in
order. The queue holds each pending notification once (keyed by what it concerns), so
it is bounded by what the kernel holds. Attribute invalidations do not block and are
sent inline by the caller.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable

import pyfuse3

log = logging.getLogger("lifecyclefs")

_Key = tuple[object, ...]


class KernelNotifier:
    """A thread that drops directory entries and wakes `poll` waiters, in the order asked."""

    def __init__(self) -> None:
        self._pending: dict[_Key, Callable[[], None]] = {}
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once the filesystem is mounted)."""
        self._thread = threading.Thread(target=self._run, name="kernel-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, dropping what is still queued (before the session closes)."""
        with self._wake:
            self._stopping = True
            self._pending.clear()
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def drop_entry(self, parent: int, name: bytes) -> None:
        """Drop the cached entry `name` of directory `parent`."""
        self._queue(("entry", parent, name), lambda: pyfuse3.invalidate_entry(parent, name))

    def wake(self, handle: pyfuse3.PollHandle) -> None:
        """Wake whoever polls through `handle`."""
        self._queue(("poll", id(handle)), handle.notify)

    def _queue(self, key: _Key, action: Callable[[], None]) -> None:
        with self._wake:
            if self._stopping:
                return
            self._pending.pop(key, None)  # again: keep only the latest, in the new order
            self._pending[key] = action
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                batch = list(self._pending.values())
                self._pending.clear()
            for action in batch:
                try:
                    action()
                except OSError as error:  # ENOENT: the kernel had dropped it already
                    if error.errno != errno.ENOENT:
                        log.debug("kernel notification failed: %s", error)
