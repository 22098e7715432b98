"""nerdctl's lock: `flock(LOCK_EX)` on a descriptor of the state directory itself.

The lock belongs to the open file description, so every operation opens the directory
anew: that excludes other processes, nerdctl, and other threads of this process alike,
and closing the descriptor releases it (even when the process dies).

Waiting comes in two kinds. With no deadline, the waiter blocks in the kernel (`flock`
without LOCK_NB), which queues waiters and hands the lock over as soon as it is
released. A wait that must be able to stop (a timeout; a trio cancellation, see
`Store.aload`) cannot block in the kernel, so it retries LOCK_NB after delays that start
at `POLL_FIRST_SECONDS` and double, but never exceed a tenth of the time already waited
nor `POLL_MAX_SECONDS`: a short hold is noticed within microseconds of its end, and a
long one costs a few tries a second.
"""

from __future__ import annotations

import errno
import fcntl
import math
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Final

POLL_FIRST_SECONDS: Final = 50e-6
POLL_MAX_SECONDS: Final = 50e-3
_POLL_SHARE: Final = 0.1
"""A delay is at most this share of the time already waited."""
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


def checked_timeout(seconds: float | None) -> float | None:
    """A lock timeout as `Store` takes it: None (for ever), or finite seconds >= 0.

    0 means "do not wait": the lock is tried once. ValueError for NaN, infinity or a
    negative number.
    """
    if seconds is None:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"lock_timeout must be None or finite seconds >= 0, not {seconds}")
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


def unlock(fd: int) -> None:
    """Release the lock on `fd` before the descriptor is closed."""
    fcntl.flock(fd, fcntl.LOCK_UN)


def next_delay(delay: float, waited: float) -> float:
    """The pause before the next try, after `delay` and `waited` seconds in all."""
    return max(POLL_FIRST_SECONDS, min(delay * 2, waited * _POLL_SHARE, POLL_MAX_SECONDS))


def pauses(timeout: float | None) -> Iterator[float]:
    """The pauses between tries of a taken lock, for a wait of at most `timeout` seconds.

    The first is `POLL_FIRST_SECONDS`; each next one doubles, but stays within a tenth
    of the time waited so far and `POLL_MAX_SECONDS`, and never runs past the deadline.
    Raise TimeoutError once `timeout` seconds have passed (None: never).
    """
    start = time.monotonic()
    delay = POLL_FIRST_SECONDS
    while True:
        pause = delay
        if timeout is not None:
            remaining = start + timeout - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(errno.ETIMEDOUT, f"lock not granted within {timeout} s")
            pause = min(delay, remaining)
        yield pause
        delay = next_delay(delay, time.monotonic() - start)


def lock(fd: int, timeout: float | None = None) -> None:
    """Hold the lock on `fd` when this returns; TimeoutError after `timeout` seconds.

    None waits however long it takes, queued in the kernel (which hands the lock over
    the moment it is released). The lock is never held when this raises.
    """
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    if try_lock(fd):
        return
    for pause in pauses(timeout):
        time.sleep(pause)
        if try_lock(fd):
            return
