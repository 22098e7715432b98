"""What a handler's failure becomes at the filesystem: an errno, never a dead mount.

pyfuse3 ends its main loop on any exception but `pyfuse3.FUSEError`, leaving a mounted,
dead filesystem. Every handler is therefore wrapped (`handler`, `waiting_handler`) so
that anything else becomes an errno: a store failure its own errno, an OSError its
errno, and anything unexpected EIO with one bounded log line.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar

from pyfuse3 import FUSEError

from store import LifecycleStoreError, LockTimeoutError, RecordCorruptError

log = logging.getLogger("lifecyclefs")

P = ParamSpec("P")
T = TypeVar("T")
_REPORTED_KEPT: Final = 1024
_SHOWN_CHARACTERS: Final = 60


def fail(code: int) -> FUSEError:
    """The FUSEError for `code`, to raise."""
    return FUSEError(code)


def shown(value: object) -> str:
    """`value` for a log line: its repr, cut to a few dozen characters."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    return text[:_SHOWN_CHARACTERS] + f"... ({len(text)} characters)"


class CorruptRecords:
    """Logs each corrupt record once (until it reads well again), remembering a bounded set."""

    def __init__(self) -> None:
        self._reported: OrderedDict[str, str] = OrderedDict()

    def report(self, error: RecordCorruptError) -> None:
        """Log `error` unless this very problem of this record was logged already."""
        message = str(error)
        if self._reported.get(error.path) == message:
            return
        self._reported[error.path] = message
        self._reported.move_to_end(error.path)
        if len(self._reported) > _REPORTED_KEPT:
            self._reported.popitem(last=False)
        log.error("%s", message[:512])

    def __bool__(self) -> bool:
        return bool(self._reported)

    def forget(self, path: str) -> None:
        """The record at `path` read well: log it again if it breaks again."""
        if self._reported:
            self._reported.pop(path, None)


def errno_for(error: LifecycleStoreError, corrupt: CorruptRecords) -> int:
    """The errno for a store failure; a corrupt record is logged once, then EIO."""
    if isinstance(error, RecordCorruptError):
        corrupt.report(error)
        return errno.EIO
    if isinstance(error, LockTimeoutError):
        return errno.EBUSY
    return error.errno or errno.EIO


def fuse_error(error: Exception, corrupt: CorruptRecords, where: str) -> FUSEError:
    """The FUSEError a shell user understands for an exception a handler raised."""
    if isinstance(error, FUSEError):
        return error
    if isinstance(error, LifecycleStoreError):
        return FUSEError(errno_for(error, corrupt))
    if isinstance(error, OSError):
        return FUSEError(error.errno or errno.EIO)
    log.error("internal error in %s; answered EIO", where, exc_info=error)
    return FUSEError(errno.EIO)


class HasCorruptRecords(Protocol):
    """What the wrappers need of the operations object."""

    corrupt: CorruptRecords


Self = TypeVar("Self", bound=HasCorruptRecords)


def handler(
    method: Callable[Concatenate[Self, P], T],
) -> Callable[Concatenate[Self, P], Coroutine[Any, Any, T]]:
    """pyfuse3's async handler for `method`, which answers without waiting for anything."""

    @functools.wraps(method)
    async def wrapper(self: Self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            raise fuse_error(error, self.corrupt, method.__name__) from None

    return wrapper


def waiting_handler(
    method: Callable[Concatenate[Self, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Self, P], Coroutine[Any, Any, T]]:
    """Like `handler`, for a handler that waits (a lock, a worker thread)."""

    @functools.wraps(method)
    async def wrapper(self: Self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except Exception as error:
            raise fuse_error(error, self.corrupt, method.__name__) from None

    return wrapper
