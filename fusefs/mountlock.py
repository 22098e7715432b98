"""One lifecyclefs mount per mount point: a lock file held by the process that serves it.

Two `lifecyclefs mount` started at once on one mount point both pass the checks made
before mounting; the lock decides which one mounts. The serving process takes it after
the fork (so the caller never holds it: its exit cannot let it go), keeps it while it
serves, and removes the file before letting go. A daemon that was killed leaves a file
nobody holds, which the next mount takes over and `lifecyclefs umount` removes.

Lock files live in /run/lifecyclefs for root; a user's in $XDG_RUNTIME_DIR/lifecyclefs,
or /tmp/lifecyclefs-UID when that is not set. Each is named after a hash of the mount
point's canonical path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from typing import Final

from filelock import FileLock, Timeout

WAIT_SECONDS: Final = 10.0
"""How long a mount waits for a lock that a stopping daemon still holds."""
_POLL_SECONDS: Final = 0.02


class MountPointBusyError(Exception):
    """Another process serves, or is starting to serve, this mount point."""


class LockDirectoryError(Exception):
    """The directory of lock files cannot be used; the message is one line."""


def lock_directory() -> str:
    """Where this user's lock files live."""
    uid = os.geteuid()
    if uid == 0:
        return "/run/lifecyclefs"
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return os.path.join(runtime, "lifecyclefs")
    return f"/tmp/lifecyclefs-{uid}"


def lock_path(mountpoint: str) -> str:
    """The lock file of `mountpoint` (any spelling of it: the name is its canonical path's)."""
    key = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:32]
    return os.path.join(lock_directory(), f"mount-{key}.lock")


@contextlib.contextmanager
def held(mountpoint: str, may_wait: Callable[[], bool]) -> Iterator[None]:
    """Hold `mountpoint`'s lock while inside; remove the lock file on the way out.

    While another process holds it, wait as long as `may_wait()` says so (at most
    WAIT_SECONDS): a daemon that was just unmounted is still letting go. Then raise
    MountPointBusyError. LockDirectoryError if the lock directory is not ours alone.
    """
    path = lock_path(mountpoint)
    _make_directory(os.path.dirname(path))
    lock = _file_lock(path)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            lock.acquire(blocking=False)
            break
        except Timeout:
            if time.monotonic() > deadline or not may_wait():
                raise MountPointBusyError(mountpoint) from None
            time.sleep(_POLL_SECONDS)
    try:
        yield
    finally:
        # Removed while still held: whoever opened this file meanwhile finds it
        # unlinked once it gets the lock (filelock checks) and starts again.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        lock.release()


def _file_lock(path: str) -> FileLock:
    """The lock of one mount point's file (0600; any thread of ours may release it)."""
    return FileLock(path, mode=0o600, thread_local=False)


def remove_stale(mountpoint: str) -> None:
    """Remove `mountpoint`'s lock file if no process holds it (its daemon was killed).

    A live daemon removes its own file when it stops; nothing is done then.
    """
    path = lock_path(mountpoint)
    if not os.path.exists(path):
        return
    lock = _file_lock(path)
    try:
        lock.acquire(blocking=False)
    except (Timeout, OSError):
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    finally:
        lock.release()


def _make_directory(directory: str) -> None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        found = os.lstat(directory)
    except OSError as error:
        raise LockDirectoryError(
            f"cannot make the lock directory {directory}: {error.strerror}"
        ) from error
    # A directory someone else made (in /tmp) could let them take our locks.
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o022:
        raise LockDirectoryError(
            f"lock directory {directory} is not this user's alone (owner, mode or type)"
        )
