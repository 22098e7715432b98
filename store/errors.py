"""The one exception family `store` raises."""

from __future__ import annotations


class LifecycleStoreError(Exception):
    """A lifecycle store operation failed; nothing stored was changed by the failure.

    The cause is chained (`__cause__`). When the cause is an `OSError`, `errno` is its
    errno (ENOENT, EACCES, ENOSPC...), so callers such as the filesystem can pass it
    on; otherwise `errno` is None unless a subclass says otherwise. `path` names the
    file or directory concerned.
    """

    def __init__(self, message: str, *, path: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno

    @classmethod
    def from_os_error(cls, doing: str, path: str, error: OSError) -> LifecycleStoreError:
        """An error for `error`, raised while `doing` on `path`, keeping its errno."""
        reason = error.strerror or str(error)
        return cls(f"{doing} {path}: {reason}", path=path, errno=error.errno)


class RecordCorruptError(LifecycleStoreError):
    """`lifecycle.json` exists but nerdctl could not read it either (empty, bad JSON...)."""


class RecordTooLargeError(LifecycleStoreError):
    """`lifecycle.json` is larger than `MAX_RECORD_BYTES`; `errno` is EFBIG.

    Raised before anything is parsed, so a huge file costs no more than reading the cap.
    """


class LockTimeoutError(LifecycleStoreError):
    """The state directory's lock was not granted within the store's lock timeout."""
