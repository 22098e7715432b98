"""`Store`: one container's lifecycle record, loaded and changed under nerdctl's lock."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

from store import atomic, locking
from store.codec import Lifecycle, decode, encode
from store.errors import LifecycleStoreError, LockTimeoutError, RecordCorruptError

if TYPE_CHECKING:
    from store.timestamp import Timestamp

RECORD_NAME: Final = "lifecycle.json"
DIR_MODE: Final = 0o700
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
RECORD_READ_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
"""How a record is opened for reading (O_NONBLOCK: a FIFO planted there must not hang)."""
_READ_CHUNK: Final = 65_536
_MAX_RECORD_BYTES: Final = 1 << 20

T = TypeVar("T")
DirOpener = Callable[[], int]
"""Opens the state directory and returns a new descriptor (read-only, O_DIRECTORY)."""


class Store:
    """The lifecycle record of one container, in `<state_dir>/lifecycle.json`.

    Every `load`, `transform` and `delete` takes `flock(LOCK_EX)` on the state directory,
    as nerdctl does, so both can work on one directory at the same moment; every write
    is an atomic rename. `started_at` and `create_error` show the record as the last
    operation of this object saw it. Failures raise `LifecycleStoreError`.

    `durable` (the default) fsyncs each write and its directory; `durable=False` costs
    what nerdctl's writes cost. `lock_timeout` bounds each wait for the lock (None:
    wait as long as it takes). Reading never creates anything: the directory is made
    only by `create=True` or `create()`. `open_dir` replaces how the directory is
    opened (the filesystem uses it to stay inside its source tree).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        create: bool = False,
        durable: bool = True,
        lock_timeout: float | None = None,
        open_dir: DirOpener | None = None,
    ) -> None:
        self._state_dir = os.fspath(state_dir)
        self._record_path = os.path.join(self._state_dir, RECORD_NAME)
        self.durable = durable
        self.lock_timeout = lock_timeout
        self._open_dir = open_dir or self._open_path
        self._record = Lifecycle()
        if create:
            self.create()

    def __repr__(self) -> str:
        return f"Store({self._state_dir!r})"

    @property
    def state_dir(self) -> str:
        """The state directory, as given."""
        return self._state_dir

    @property
    def record_path(self) -> str:
        """The path of `lifecycle.json` in the state directory."""
        return self._record_path

    @property
    def record(self) -> Lifecycle:
        """A copy of the record as last loaded or written by this object."""
        return self._record.copy()

    @property
    def started_at(self) -> Timestamp:
        """When the container started, as last seen; `Timestamp.UNSET` if it has not."""
        return self._record.started_at

    @property
    def create_error(self) -> bool:
        """Whether hook processing failed at create time, as last seen."""
        return self._record.create_error

    def create(self) -> None:
        """Create the state directory (mode 0700, parents too) unless it exists."""
        try:
            os.makedirs(self._state_dir, mode=DIR_MODE, exist_ok=True)
        except OSError as error:
            raise LifecycleStoreError.from_os_error(
                "cannot create state directory", self._state_dir, error
            ) from error

    def load(self) -> Lifecycle:
        """Read the record under the lock and return it; a missing record is all unset."""
        self._record = self._locked(self._read)
        return self._record.copy()

    def snapshot(self) -> Lifecycle:
        """Read the last committed record without taking the lock.

        Safe because every writer (nerdctl included) replaces the record by an atomic
        rename: the file read is always a whole record, never a half-written one. It
        never waits, even while another process holds the lock.
        """
        return self.snapshot_stat()[0]

    def snapshot_stat(self) -> tuple[Lifecycle, os.stat_result | None]:
        """`snapshot()` and the record file's `fstat` (None when there is no record)."""
        dir_fd = self._open()
        try:
            record, stat = self._read_with_stat(dir_fd, want_stat=True)
        finally:
            os.close(dir_fd)
        self._record = record
        return record.copy(), stat

    def transform(self, fn: Callable[[Lifecycle], object]) -> Lifecycle:
        """Under the lock: load, let `fn` change the record, write it atomically.

        `fn` gets a fresh record to modify in place; what it returns is ignored. If it
        raises, nothing is written and `LifecycleStoreError` is raised from its
        exception. Returns the record as written.
        """
        self._record = self._locked(lambda dir_fd: self._transform(dir_fd, fn))
        return self._record.copy()

    def update(
        self, *, started_at: Timestamp | None = None, create_error: bool | None = None
    ) -> Lifecycle:
        """A `transform` that sets the fields given (None leaves a field as it is)."""
        return self.transform(_setter(started_at, create_error))

    def delete(self) -> bool:
        """Remove the record under the lock; say whether there was one.

        A missing record, or a missing state directory, is not an error. The other
        files of the directory (nerdctl keeps several there) are never touched.
        """
        existed = self._locked(self._delete, if_missing=_nothing_deleted)
        self._record = Lifecycle()
        return existed

    async def aload(self) -> Lifecycle:
        """`load()` for trio: a contended lock is waited for in a worker thread."""
        self._record = await self._alocked(self._read, offload=False)
        return self._record.copy()

    async def atransform(
        self, fn: Callable[[Lifecycle], object], *, limiter: object = None
    ) -> Lifecycle:
        """`transform()` for trio; `fn` may run in a worker thread.

        A contended lock is waited for in a worker thread that notices cancellation
        within milliseconds and never holds the lock once cancelled. A durable write
        runs in the thread as well, since fsync can take milliseconds on a disk.
        """
        self._record = await self._alocked(
            lambda dir_fd: self._transform(dir_fd, fn), offload=self.durable, limiter=limiter
        )
        return self._record.copy()

    async def aupdate(
        self, *, started_at: Timestamp | None = None, create_error: bool | None = None
    ) -> Lifecycle:
        """`update()` for trio."""
        return await self.atransform(_setter(started_at, create_error))

    async def adelete(self) -> bool:
        """`delete()` for trio, cancellable while waiting for the lock."""
        existed = await self._alocked(
            self._delete, offload=self.durable, if_missing=_nothing_deleted
        )
        self._record = Lifecycle()
        return existed

    def _open_path(self) -> int:
        return os.open(self._state_dir, _DIR_FLAGS)

    def _open(self) -> int:
        try:
            return self._open_dir()
        except OSError as error:
            missing = isinstance(error, FileNotFoundError)
            kind = _MissingStateDirError if missing else LifecycleStoreError
            raise kind.from_os_error(
                "cannot open state directory", self._state_dir, error
            ) from error

    def _open_unless_missing(self, missing_ok: bool) -> int | None:
        """A descriptor of the state directory; None if it is missing and that is fine."""
        try:
            return self._open()
        except _MissingStateDirError:
            if missing_ok:
                return None
            raise

    def _lock(self, dir_fd: int, check_cancelled: Callable[[], None] | None = None) -> None:
        try:
            locking.lock(dir_fd, timeout=self.lock_timeout, check_cancelled=check_cancelled)
        except TimeoutError as error:
            raise LockTimeoutError(
                f"cannot lock {self._state_dir}: still held by another process"
                f" after {self.lock_timeout} s",
                path=self._state_dir,
                errno=errno.ETIMEDOUT,
            ) from error
        except OSError as error:
            raise LifecycleStoreError.from_os_error(
                "cannot lock", self._state_dir, error
            ) from error

    def _locked(self, op: Callable[[int], T], if_missing: Callable[[], T] | None = None) -> T:
        dir_fd = self._open_unless_missing(if_missing is not None)
        if dir_fd is None:
            assert if_missing is not None
            return if_missing()
        try:
            self._lock(dir_fd)
            return op(dir_fd)
        finally:
            os.close(dir_fd)

    async def _alocked(
        self,
        op: Callable[[int], T],
        *,
        offload: bool,
        if_missing: Callable[[], T] | None = None,
        limiter: object = None,
    ) -> T:
        import trio  # noqa: PLC0415 - only the trio variants need trio; `store` alone does not

        await trio.lowlevel.checkpoint_if_cancelled()
        dir_fd = self._open_unless_missing(if_missing is not None)
        if dir_fd is None:
            assert if_missing is not None
            return if_missing()
        try:
            try:
                free = locking.try_lock(dir_fd)
            except OSError as error:
                raise LifecycleStoreError.from_os_error(
                    "cannot lock", self._state_dir, error
                ) from error
            if free and not offload:
                return op(dir_fd)
            if free:
                return await trio.to_thread.run_sync(op, dir_fd, limiter=limiter)  # type: ignore[arg-type]

            def wait_then_run() -> T:
                self._lock(dir_fd, check_cancelled=trio.from_thread.check_cancelled)
                return op(dir_fd)

            return await trio.to_thread.run_sync(wait_then_run)
        finally:
            os.close(dir_fd)

    def _read(self, dir_fd: int) -> Lifecycle:
        return self._read_with_stat(dir_fd, want_stat=False)[0]

    def _read_with_stat(
        self, dir_fd: int, *, want_stat: bool
    ) -> tuple[Lifecycle, os.stat_result | None]:
        try:
            fd = os.open(RECORD_NAME, RECORD_READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return Lifecycle(), None
        except OSError as error:
            raise LifecycleStoreError.from_os_error(
                "cannot read", self._record_path, error
            ) from error
        try:
            return read_record(fd, self._record_path, want_stat=want_stat)
        finally:
            os.close(fd)

    def _transform(self, dir_fd: int, fn: Callable[[Lifecycle], object]) -> Lifecycle:
        record = self._read(dir_fd)
        try:
            fn(record)
        except Exception as error:
            raise LifecycleStoreError(
                f"transform of {self._record_path} failed, nothing written: {error}",
                path=self._record_path,
            ) from error
        try:
            data = encode(record)
        except (TypeError, ValueError) as error:
            raise LifecycleStoreError(
                f"cannot write {self._record_path}: {error}",
                path=self._record_path,
                errno=errno.EINVAL,
            ) from error
        try:
            atomic.replace_file(
                dir_fd, RECORD_NAME, data, durable=self.durable, owner=_owner_for(dir_fd)
            )
        except OSError as error:
            raise LifecycleStoreError.from_os_error(
                "cannot write", self._record_path, error
            ) from error
        return record

    def _delete(self, dir_fd: int) -> bool:
        try:
            return atomic.remove_file(dir_fd, RECORD_NAME, durable=self.durable)
        except OSError as error:
            raise LifecycleStoreError.from_os_error(
                "cannot delete", self._record_path, error
            ) from error


class _MissingStateDirError(LifecycleStoreError):
    """The state directory does not exist (ENOENT); `delete` takes that as done."""


def _nothing_deleted() -> bool:
    return False


def read_record(
    fd: int, path: str, *, want_stat: bool = False
) -> tuple[Lifecycle, os.stat_result | None]:
    """Decode the record open on `fd` (and fstat it if asked); `path` names it in errors.

    Raise `RecordCorruptError` when nerdctl could not read it either, and
    `LifecycleStoreError` (with the errno) when reading fails. `fd` stays open.
    """
    try:
        stat = os.fstat(fd) if want_stat else None
        data = os.read(fd, _READ_CHUNK)
        if len(data) == _READ_CHUNK:
            data += _read_rest(fd, path)
    except OSError as error:
        raise LifecycleStoreError.from_os_error("cannot read", path, error) from error
    try:
        return decode(data), stat
    except ValueError as error:
        raise RecordCorruptError(f"corrupt record {path}: {error}", path=path) from error


def _read_rest(fd: int, path: str) -> bytes:
    chunks = []
    total = _READ_CHUNK
    while chunk := os.read(fd, _READ_CHUNK):
        total += len(chunk)
        if total > _MAX_RECORD_BYTES:
            raise RecordCorruptError(
                f"corrupt record {path}: larger than {_MAX_RECORD_BYTES} bytes", path=path
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _setter(started_at: Timestamp | None, create_error: bool | None) -> Callable[[Lifecycle], None]:
    def assign(record: Lifecycle) -> None:
        if started_at is not None:
            record.started_at = started_at
        if create_error is not None:
            record.create_error = create_error

    return assign


def _owner_for(dir_fd: int) -> tuple[int, int] | None:
    """The owner a new record must get: its directory's, when we are root and differ.

    A root daemon writing into a rootless nerdctl's state directory would otherwise
    leave a root-owned 0600 record that nerdctl can no longer read.
    """
    if os.geteuid() != 0:
        return None
    stat = os.fstat(dir_fd)
    if stat.st_uid == 0 and stat.st_gid == os.getegid():
        return None
    return stat.st_uid, stat.st_gid
