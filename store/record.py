"""`Store`: one container's lifecycle record, loaded and changed under nerdctl's lock.

The lock is held for as little work as possible: the directory is opened before it is
taken; a load decodes after releasing it; a transform releases it as soon as the new
record is renamed into place, and only then fsyncs the directory and closes the old
record (on ext4, closing the last descriptor of a replaced file is what frees it, which
waits for its data to reach the disk).
"""

from __future__ import annotations

import errno
import os
import stat as stat_module

from store import atomic, locking
from store.codec import Lifecycle, decode, encode
from store.errors import (
    LifecycleStoreError,
    LockTimeoutError,
    RecordCorruptError,
    RecordTooLargeError,
)
from store.timestamp import Timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Final, TypeAlias, TypeVar

    import trio

    T = TypeVar("T")
    _Fields: TypeAlias = tuple[Timestamp, bool, tuple[tuple[str, object], ...]]

_UNSET_FIELDS: Final[_Fields] = (Timestamp.UNSET, False, ())

RECORD_NAME: Final = "lifecycle.json"
DIR_MODE: Final = 0o700
MAX_RECORD_BYTES: Final = 65_536
"""The largest record read: a bigger one is refused (`RecordTooLargeError`) unparsed.
nerdctl's own records are under 100 bytes."""
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
RECORD_READ_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
"""How a record is opened for reading (O_NONBLOCK: a FIFO planted there must not hang)."""
_FIRST_READ: Final = 4096

DirOpener: TypeAlias = "Callable[[], int]"
"""Opens the state directory and returns a new descriptor (read-only, O_DIRECTORY)."""

_open = os.open
_close = os.close
_read = os.read
_trio: ModuleType | None = None


class Store:
    """The lifecycle record of one container, in `<state_dir>/lifecycle.json`.

    Every `load`, `transform` and `delete` takes `flock(LOCK_EX)` on the state directory,
    as nerdctl does, so both can work on one directory at the same moment; every write
    is an atomic rename, and a rewritten record keeps its owner, mode and POSIX ACL.
    `started_at` and `create_error` show the record as the last operation of this
    object saw it. Failures raise `LifecycleStoreError`; a path that no system call can
    take (a NUL, a lone surrogate) raises it at construction, with errno EINVAL.

    `durable` (the default) fsyncs each write and its directory; `durable=False` costs
    what nerdctl's writes cost. `lock_timeout` bounds each wait for the lock (None:
    wait as long as it takes; 0: do not wait); NaN, infinity or a negative number is a
    ValueError. Reading never creates anything: the directory is made only by
    `create=True` or `create()`. `open_dir` replaces how the directory is opened (the
    filesystem uses it to stay inside its source tree).
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
        self._state_dir = _usable_path(state_dir)
        self._record_path = os.path.join(self._state_dir, RECORD_NAME)
        self.durable = durable
        self.lock_timeout = lock_timeout
        self._open_dir = open_dir
        self._seen: _Fields = _UNSET_FIELDS
        self._fsync_free: bool | None = None
        self._default_acl: bool | None = None
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
    def lock_timeout(self) -> float | None:
        """How long a wait for the lock may last: None for ever, 0 not at all."""
        return self._lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float | None) -> None:
        self._lock_timeout = locking.checked_timeout(seconds)

    @property
    def record(self) -> Lifecycle:
        """A copy of the record as last loaded or written by this object."""
        return Lifecycle(*self._seen)

    @property
    def started_at(self) -> Timestamp:
        """When the container started, as last seen; `Timestamp.UNSET` if it has not."""
        return self._seen[0]

    @property
    def create_error(self) -> bool:
        """Whether hook processing failed at create time, as last seen."""
        return self._seen[1]

    def create(self) -> None:
        """Create the state directory (mode 0700, parents too) unless it exists."""
        try:
            os.makedirs(self._state_dir, mode=DIR_MODE, exist_ok=True)
        except OSError as error:
            raise LifecycleStoreError.from_os_error(
                "cannot create state directory", self._state_dir, error
            ) from error

    # The synchronous API ---------------------------------------------------------------

    def load(self) -> Lifecycle:
        """Read the record under the lock and return it; a missing record is all unset."""
        return self._saw(self._load_locked(self._locked_dir()))

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
        record_fd = -1
        try:
            try:
                record_fd = _open(RECORD_NAME, RECORD_READ_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                record, record_stat = Lifecycle(), None
            except OSError as error:
                raise self._read_error(error) from error
            else:
                record, record_stat = read_record(record_fd, self._record_path, want_stat=True)
        finally:
            _close(dir_fd)
            if record_fd >= 0:
                _close(record_fd)
        return self._saw(record), record_stat

    def transform(self, fn: Callable[[Lifecycle], object]) -> Lifecycle:
        """Under the lock: load, let `fn` change the record, write it atomically.

        `fn` gets a fresh record to modify in place; what it returns is ignored. If it
        raises, nothing is written and `LifecycleStoreError` is raised from its
        exception. Returns the record as written.
        """
        return self._saw(self._transform_locked(self._locked_dir(), fn))

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
        try:
            dir_fd = self._locked_dir()
        except _MissingStateDirError:
            existed = False
        else:
            existed = self._delete_locked(dir_fd)
        self._seen = _UNSET_FIELDS
        return existed

    # The trio API -----------------------------------------------------------------------
    #
    # A contended lock is waited for on the trio loop itself: LOCK_NB is retried with
    # trio.sleep between tries (see store.locking), so no thread is taken by a waiter
    # and a cancellation ends the wait at once. Once locked, the operation runs inline,
    # unless it fsyncs on a filesystem where fsync costs something: that runs in
    # trio.to_thread.run_sync(limiter=limiter), trio's default limiter for None.

    async def aload(self) -> Lifecycle:
        """`load()` for trio: waits on the loop, cancellable; never uses a thread."""
        return self._saw(await self._alocked(self._load_locked, fsyncs=False, limiter=None))

    async def atransform(
        self, fn: Callable[[Lifecycle], object], *, limiter: trio.CapacityLimiter | None = None
    ) -> Lifecycle:
        """`transform()` for trio: waits for the lock on the loop, cancellably.

        `fn` runs on the loop, or in a worker thread of `limiter` when this store is
        durable and fsync is not free where the record lives. A cancelled wait never
        leaves the lock held and writes nothing.
        """
        return self._saw(
            await self._alocked(
                lambda dir_fd: self._transform_locked(dir_fd, fn), fsyncs=True, limiter=limiter
            )
        )

    async def aupdate(
        self,
        *,
        started_at: Timestamp | None = None,
        create_error: bool | None = None,
        limiter: trio.CapacityLimiter | None = None,
    ) -> Lifecycle:
        """`update()` for trio."""
        return await self.atransform(_setter(started_at, create_error), limiter=limiter)

    async def achange_record_file(
        self, change: Callable[[int], object], *, limiter: trio.CapacityLimiter | None = None
    ) -> None:
        """Under the lock, let `change` alter the record file itself through a descriptor.

        What the filesystem does for chmod, chown and setfacl on the record: `change`
        gets a read-only descriptor of `lifecycle.json` to fchmod, fchown or set the
        ACL of (the contents stay as they are). A missing record is first written unset,
        as a transform would write it. With `durable`, the change is on disk when this
        returns. OSError from `change` becomes `LifecycleStoreError` with its errno.
        """
        await self._alocked(
            lambda dir_fd: self._change_locked(dir_fd, change), fsyncs=True, limiter=limiter
        )

    async def adelete(self, *, limiter: trio.CapacityLimiter | None = None) -> bool:
        """`delete()` for trio, cancellable while waiting for the lock."""
        try:
            existed = await self._alocked(self._delete_locked, fsyncs=True, limiter=limiter)
        except _MissingStateDirError:
            existed = False
        self._seen = _UNSET_FIELDS
        return existed

    def _saw(self, record: Lifecycle) -> Lifecycle:
        """Remember `record`'s fields as the last seen, and return it (the caller's own)."""
        self._seen = (record.started_at, record.create_error, record.extra)
        return record

    # Opening and locking ----------------------------------------------------------------

    def _open(self) -> int:
        try:
            if self._open_dir is None:
                return _open(self._state_dir, _DIR_FLAGS)
            return self._open_dir()
        except OSError as error:
            missing = isinstance(error, FileNotFoundError)
            kind = _MissingStateDirError if missing else LifecycleStoreError
            raise kind.from_os_error(
                "cannot open state directory", self._state_dir, error
            ) from error

    def _locked_dir(self) -> int:
        """A new descriptor of the state directory, holding its lock."""
        dir_fd = self._open()
        try:
            locking.lock(dir_fd, self._lock_timeout)
        except BaseException as error:
            _close(dir_fd)
            if isinstance(error, TimeoutError):
                raise self._timeout_error() from error
            if isinstance(error, OSError):
                raise self._lock_error(error) from error
            raise
        return dir_fd

    def _timeout_error(self) -> LockTimeoutError:
        return LockTimeoutError(
            f"cannot lock {self._state_dir}: still held by another process"
            f" after {self._lock_timeout} s",
            path=self._state_dir,
            errno=errno.ETIMEDOUT,
        )

    def _lock_error(self, error: OSError) -> LifecycleStoreError:
        return LifecycleStoreError.from_os_error("cannot lock", self._state_dir, error)

    async def _alocked(
        self, op: Callable[[int], T], *, fsyncs: bool, limiter: trio.CapacityLimiter | None
    ) -> T:
        trio = _trio or _import_trio()
        await trio.lowlevel.checkpoint_if_cancelled()
        dir_fd = self._open()
        try:
            if not locking.try_lock(dir_fd):
                await self._wait_for_lock(trio, dir_fd)
        except BaseException as error:
            _close(dir_fd)
            if isinstance(error, OSError):
                raise self._lock_error(error) from error
            raise
        if fsyncs and self.durable and not self._fsync_is_free(dir_fd):
            return await _in_thread(trio, op, dir_fd, limiter)
        return op(dir_fd)

    async def _wait_for_lock(self, trio: ModuleType, dir_fd: int) -> None:
        try:
            for pause in locking.pauses(self._lock_timeout):
                await trio.sleep(pause)
                if locking.try_lock(dir_fd):
                    return
        except TimeoutError as error:
            raise self._timeout_error() from error

    def _fsync_is_free(self, dir_fd: int) -> bool:
        if self._fsync_free is None:
            from store.fsinfo import fsync_is_free  # noqa: PLC0415 - ctypes, only here

            self._fsync_free = fsync_is_free(dir_fd)
        return self._fsync_free

    # The operations, each on a locked directory descriptor that it closes -------------

    def _load_locked(self, dir_fd: int) -> Lifecycle:
        record_fd = -1
        try:
            record_fd = _open(RECORD_NAME, RECORD_READ_FLAGS, dir_fd=dir_fd)
            # _read_capped and _decode, inlined: calling them cost 2% of a load (measured).
            data = _read(record_fd, _FIRST_READ)
            if len(data) == _FIRST_READ:
                data = _read_rest(record_fd, self._record_path, data)
        except FileNotFoundError:
            return Lifecycle()
        except OSError as error:
            raise self._read_error(error) from error
        finally:
            _close(dir_fd)
            if record_fd >= 0:
                _close(record_fd)
        try:
            return decode(data)
        except ValueError as error:
            raise _corrupt(self._record_path, error) from error

    def _transform_locked(self, dir_fd: int, fn: Callable[[Lifecycle], object]) -> Lifecycle:
        path = self._record_path
        record_fd = -1
        try:
            try:
                record_fd = _open(RECORD_NAME, RECORD_READ_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                record, old, acl = Lifecycle(), None, None
            except OSError as error:
                raise self._read_error(error) from error
            else:
                record, old = read_record(record_fd, path, want_stat=True)
                acl = _acl_of(record_fd, path)
            try:
                fn(record)
            except Exception as error:
                raise LifecycleStoreError(
                    f"transform of {path} failed, nothing written: {error}", path=path
                ) from error
            try:
                data = encode(record)
            except (TypeError, ValueError) as error:
                raise LifecycleStoreError(
                    f"cannot write {path}: {error}", path=path, errno=errno.EINVAL
                ) from error
            try:
                if old is None:
                    mode, owner = atomic.NEW_FILE_MODE, _new_record_owner(dir_fd)
                else:  # the replacement keeps what the record had
                    mode, owner = stat_module.S_IMODE(old.st_mode), (old.st_uid, old.st_gid)
                atomic.replace_file(
                    dir_fd,
                    RECORD_NAME,
                    data,
                    durable=self.durable,
                    mode=mode,
                    owner=owner,
                    acl=acl,
                    drop_inherited_acl=acl is None and self._has_default_acl(dir_fd),
                )
                if self.durable:
                    locking.unlock(dir_fd)  # others may go on while the rename reaches the disk
                    atomic.sync_directory(dir_fd)
            except OSError as error:
                raise LifecycleStoreError.from_os_error("cannot write", path, error) from error
        finally:
            _close(dir_fd)
            if record_fd >= 0:
                _close(record_fd)
        return record

    def _change_locked(self, dir_fd: int, change: Callable[[int], object]) -> None:
        record_fd = -1
        try:
            try:
                record_fd = _open(RECORD_NAME, RECORD_READ_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                atomic.replace_file(
                    dir_fd,
                    RECORD_NAME,
                    encode(Lifecycle()),
                    durable=self.durable,
                    owner=_new_record_owner(dir_fd),
                    drop_inherited_acl=self._has_default_acl(dir_fd),
                )
                if self.durable:
                    atomic.sync_directory(dir_fd)
                record_fd = _open(RECORD_NAME, RECORD_READ_FLAGS, dir_fd=dir_fd)
            change(record_fd)
            if self.durable:
                os.fsync(record_fd)
        except OSError as error:
            raise LifecycleStoreError.from_os_error(
                "cannot change", self._record_path, error
            ) from error
        finally:
            _close(dir_fd)
            if record_fd >= 0:
                _close(record_fd)

    def _delete_locked(self, dir_fd: int) -> bool:
        try:
            existed = atomic.remove_file(dir_fd, RECORD_NAME)
            if existed and self.durable:
                locking.unlock(dir_fd)
                atomic.sync_directory(dir_fd)
        except OSError as error:
            raise LifecycleStoreError.from_os_error(
                "cannot delete", self._record_path, error
            ) from error
        finally:
            _close(dir_fd)
        return existed

    def _has_default_acl(self, dir_fd: int) -> bool:
        # Looked up once per store: a directory rarely gains or loses a default ACL.
        if self._default_acl is None:
            self._default_acl = atomic.has_default_acl(dir_fd)
        return self._default_acl

    def _read_error(self, error: OSError) -> LifecycleStoreError:
        return LifecycleStoreError.from_os_error("cannot read", self._record_path, error)


class _MissingStateDirError(LifecycleStoreError):
    """The state directory does not exist (ENOENT); `delete` takes that as done."""


def _usable_path(state_dir: str | os.PathLike[str]) -> str:
    """`state_dir` as a str every system call takes; LifecycleStoreError (EINVAL) if none would."""
    problem: Exception | None = None
    try:
        path = os.fsdecode(state_dir)
        if b"\0" in os.fsencode(path):
            problem = ValueError("a path cannot hold a NUL character")
    except (TypeError, ValueError) as error:
        problem = error
    if problem is not None:
        shown = repr(state_dir)
        raise LifecycleStoreError(
            f"unusable state directory {shown}: {problem}", path=shown, errno=errno.EINVAL
        ) from problem
    return path


def _import_trio() -> ModuleType:
    global _trio  # noqa: PLW0603 - only the trio variants need trio; `store` alone does not
    import trio  # noqa: PLC0415

    _trio = trio
    return trio


async def _in_thread(
    trio: ModuleType, op: Callable[[int], T], dir_fd: int, limiter: trio.CapacityLimiter | None
) -> T:
    """`op(dir_fd)` in a worker thread; `dir_fd` is closed even if the thread never ran."""
    ran = False

    def run() -> T:
        nonlocal ran
        ran = True
        return op(dir_fd)

    try:
        result: T = await trio.to_thread.run_sync(run, limiter=limiter)
    finally:
        if not ran:  # cancelled while waiting for the limiter: we still hold the lock
            _close(dir_fd)
    return result


def read_record(
    fd: int, path: str, *, want_stat: bool = False
) -> tuple[Lifecycle, os.stat_result | None]:
    """Decode the record open on `fd` (and fstat it if asked); `path` names it in errors.

    Reads at most `MAX_RECORD_BYTES` + 1 bytes: a larger record raises
    `RecordTooLargeError` (EFBIG) before anything is parsed. Raise `RecordCorruptError`
    when nerdctl could not read it either, and `LifecycleStoreError` (with the errno)
    when reading fails. `fd` stays open; no lock is taken.
    """
    try:
        record_stat = os.fstat(fd) if want_stat else None
        data = _read_capped(fd, path)
    except OSError as error:
        raise LifecycleStoreError.from_os_error("cannot read", path, error) from error
    return _decode(data, path), record_stat


def _read_capped(fd: int, path: str) -> bytes:
    data = _read(fd, _FIRST_READ)
    if len(data) < _FIRST_READ:  # a regular file reads short only at its end
        return data
    return _read_rest(fd, path, data)


def _read_rest(fd: int, path: str, data: bytes) -> bytes:
    """`data`, the first bytes read from `fd`, and the rest, up to MAX_RECORD_BYTES."""
    chunks = [data]
    total = len(data)
    while chunk := os.read(fd, MAX_RECORD_BYTES + 1 - total):
        total += len(chunk)
        if total > MAX_RECORD_BYTES:
            raise RecordTooLargeError(
                f"record {path} is larger than {MAX_RECORD_BYTES} bytes; not read",
                path=path,
                errno=errno.EFBIG,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(data: bytes, path: str) -> Lifecycle:
    try:
        return decode(data)
    except ValueError as error:
        raise _corrupt(path, error) from error


def _corrupt(path: str, error: ValueError) -> RecordCorruptError:
    return RecordCorruptError(f"corrupt record {path}: {error}", path=path)


def _acl_of(record_fd: int, path: str) -> bytes | None:
    try:
        return atomic.access_acl(record_fd)
    except OSError as error:
        raise LifecycleStoreError.from_os_error("cannot read the ACL of", path, error) from error


def _new_record_owner(dir_fd: int) -> tuple[int, int] | None:
    """The owner a new record must get: its directory's, when we are root and differ.

    A root daemon writing into a rootless nerdctl's state directory would otherwise
    leave a root-owned 0600 record that nerdctl can no longer read.
    """
    if os.geteuid() != 0:
        return None
    dir_stat = os.fstat(dir_fd)
    if dir_stat.st_uid == 0 and dir_stat.st_gid == os.getegid():
        return None
    return dir_stat.st_uid, dir_stat.st_gid


def _setter(started_at: Timestamp | None, create_error: bool | None) -> Callable[[Lifecycle], None]:
    def assign(record: Lifecycle) -> None:
        if started_at is not None:
            record.started_at = started_at
        if create_error is not None:
            record.create_error = create_error

    return assign
