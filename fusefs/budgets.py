"""What one user may hold of the daemon at once, so that no user can starve the others.

With `-o allow_other` every local user talks to one root daemon. Each user (uid) has
its own budget of open handles, of memory pinned by them, of requests waiting (for a
lock, a worker thread), of worker threads, and of temporary files; one user at its
limit gets a clear errno while everyone else goes on. Nothing here is shared between
users but the bounds themselves.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import trio

from fusefs.errors import fail

_IDLE_USERS_KEPT: Final = 1024
MAX_HANDLES: Final = 16_384
"""Open files and directories per user; beyond: EMFILE."""
MAX_PINNED_BYTES: Final = 8 << 20
"""Memory per user held by open handles (snapshots, listings); beyond: ENOMEM."""
HANDLE_OVERHEAD_BYTES: Final = 256
"""What a handle costs beyond its data, counted against MAX_PINNED_BYTES."""
MAX_WAITING: Final = 256
"""Requests per user waiting at once (a lock, a worker thread); beyond: EBUSY."""
THREADS: Final = 4
"""Worker threads per user (a big listing, an fsync on a disk)."""
MAX_TEMP_FILES: Final = 64
"""Temporary files per user (editors, sed -i); beyond: EDQUOT."""
MAX_TEMP_BYTES: Final = 1 << 20
"""Bytes of temporary files per user; beyond: EDQUOT."""


@dataclass(slots=True)
class UserBudget:
    """What one user holds now."""

    handles: int = 0
    pinned: int = 0
    waiting: int = 0
    temp_files: int = 0
    temp_bytes: int = 0
    _threads: trio.CapacityLimiter | None = None

    @property
    def threads(self) -> trio.CapacityLimiter:
        """This user's worker-thread limiter."""
        if self._threads is None:
            self._threads = trio.CapacityLimiter(THREADS)
        return self._threads

    @property
    def idle(self) -> bool:
        """Whether this user holds nothing (its entry may go)."""
        return not (
            self.handles
            or self.pinned
            or self.waiting
            or self.temp_files
            or self.temp_bytes
            or (self._threads is not None and self._threads.borrowed_tokens)
        )


class Budgets:
    """Every user's budget; an entry exists only while its user holds something."""

    def __init__(self) -> None:
        self._users: dict[int, UserBudget] = {}

    def of(self, uid: int) -> UserBudget:
        """The budget of `uid` (created empty if it holds nothing yet)."""
        budget = self._users.get(uid)
        if budget is None:
            budget = self._users[uid] = UserBudget()
        return budget

    def _tidy(self, uid: int) -> None:
        # Idle entries stay (a user's next open needs one again) until there are many.
        if len(self._users) > _IDLE_USERS_KEPT:
            self._users = {u: b for u, b in self._users.items() if not b.idle or u == uid}

    def open_handle(self, uid: int, pinned: int) -> None:
        """Count a new handle pinning `pinned` bytes; EMFILE or ENOMEM past the limits."""
        budget = self.of(uid)
        cost = pinned + HANDLE_OVERHEAD_BYTES
        if budget.handles >= MAX_HANDLES:
            self._tidy(uid)
            raise fail(errno.EMFILE)
        if budget.pinned + cost > MAX_PINNED_BYTES:
            self._tidy(uid)
            raise fail(errno.ENOMEM)
        budget.handles += 1
        budget.pinned += cost

    def close_handle(self, uid: int, pinned: int) -> None:
        """Give back what `open_handle` counted."""
        budget = self._users[uid]  # it holds this handle: its entry is there
        budget.handles -= 1
        budget.pinned -= pinned + HANDLE_OVERHEAD_BYTES
        self._tidy(uid)

    @contextmanager
    def waiting(self, uid: int) -> Iterator[trio.CapacityLimiter]:
        """Count a request that may wait; yields the user's worker-thread limiter.

        EBUSY when the user has MAX_WAITING requests waiting already: each waiting
        request holds one of the daemon's request slots, which all users share.
        """
        budget = self.of(uid)
        if budget.waiting >= MAX_WAITING:
            raise fail(errno.EBUSY)
        budget.waiting += 1
        try:
            yield budget.threads
        finally:
            budget.waiting -= 1
            self._tidy(uid)

    def add_temp(self, uid: int, files: int, size: int) -> None:
        """Count `files` more temporary files and `size` more bytes; EDQUOT past the limits."""
        budget = self.of(uid)
        if budget.temp_files + files > MAX_TEMP_FILES or budget.temp_bytes + size > MAX_TEMP_BYTES:
            self._tidy(uid)
            raise fail(errno.EDQUOT)
        budget.temp_files += files
        budget.temp_bytes += size

    def remove_temp(self, uid: int, files: int, size: int) -> None:
        """Give back what `add_temp` counted."""
        budget = self.of(uid)
        budget.temp_files -= files
        budget.temp_bytes -= size
        self._tidy(uid)
