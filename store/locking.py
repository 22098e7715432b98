"""nerdctl's lock: `flock(LOCK_EX)` on a descriptor of the state directory itself.

The lock belongs to the open file description, so every operation opens the directory
anew: that excludes other processes, nerdctl, and other threads of this process alike,
and closing the descriptor releases it (even when the process dies).

Waiting comes in two kinds. With no deadline and no cancellation, the waiter blocks in
the kernel (`flock` without LOCK_NB), which queues waiters and hands the lock over as
soon as it is released. A wait that must be able to stop (a timeout, a trio
cancellation) cannot block in the kernel, so it retries LOCK_NB with a short
exponential back-off, capped at `POLL_MAX_SECONDS` so that a waiter never sleeps long
past a release.
"""

from __future__ import annotations

import errno
import fcntl
import math
import time
from collections.abc import Callable
from typing import Final

POLL_FIRST_SECONDS: Final = 50e-6
POLL_MAX_SECONDS: Final = 2e-3
_CONTENDED: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})


def timeout_from_seconds(seconds: float) -> float | None:
    """A lock timeout as the command line and mount options give it: 0 means for ever.

    Returns None (wait for ever) for 0 and the number itself when it is finite and
    positive; ValueError for anything else (negative, NaN, infinity), so that a typo
    never turns into an endless wait.
    """
    if seconds == 0:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a lock timeout must be a finite number of seconds or 0, not {seconds}")
    return seconds


def try_lock(fd: int) -> bool:
    """Take the lock on `fd` if it is free, without waiting; say whether it was taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in _CONTENDED:
            return False
        raise
    return True


def lock(
    fd: int,
    *,
    timeout: float | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> None:
    """Hold the lock on `fd` when this returns.

    Raise TimeoutError once `timeout` seconds have passed without it. `check_cancelled`
    is called between attempts and may raise to abandon the wait (trio passes
    `trio.from_thread.check_cancelled`); the lock is never held when anything is raised.
    """
    if try_lock(fd):
        return
    if timeout is None and check_cancelled is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = POLL_FIRST_SECONDS
    while True:
        if check_cancelled is not None:
            check_cancelled()
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(errno.ETIMEDOUT, f"lock not granted within {timeout} s")
            delay = min(delay, remaining)
        time.sleep(delay)
        if try_lock(fd):
            return
        delay = min(delay * 2, POLL_MAX_SECONDS)
