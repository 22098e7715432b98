"""Store: load, transform and delete as a Python caller sees them."""

from __future__ import annotations

import errno
import math
import os
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from store import (
    MAX_RECORD_BYTES,
    Lifecycle,
    LifecycleStoreError,
    LockTimeoutError,
    RecordCorruptError,
    RecordTooLargeError,
    Store,
    Timestamp,
    read_record,
)
from store.atomic import TEMP_NAME
from store.codec import encode
from tests.processes import lock_held_elsewhere

T0 = Timestamp.parse("2024-01-02T03:04:05.123456789Z")


def set_started(value: Timestamp) -> Callable[[Lifecycle], None]:
    def update(record: Lifecycle) -> None:
        record.started_at = value

    return update


def test_missing_record_loads_as_unset(state_dir: Path) -> None:
    store = Store(state_dir)
    assert store.load() == Lifecycle()
    assert store.started_at is Timestamp.UNSET
    assert store.create_error is False
    assert os.listdir(state_dir) == []


def test_reading_never_creates_the_state_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    store = Store(missing)
    with pytest.raises(LifecycleStoreError, match="cannot open state directory") as caught:
        store.load()
    assert caught.value.errno == errno.ENOENT
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    with pytest.raises(LifecycleStoreError):
        store.snapshot()
    assert not missing.exists()


def test_create_makes_the_directory_0700(tmp_path: Path) -> None:
    path = tmp_path / "containers" / "default" / "c1"
    store = Store(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    store.create()
    store.transform(set_started(T0))
    assert Store(path).load().started_at == T0


def test_transform_writes_a_0600_record_and_updates_the_fields(state_dir: Path) -> None:
    store = Store(state_dir)
    written = store.transform(set_started(T0))
    assert written.started_at == T0
    assert store.started_at == T0
    record = state_dir / "lifecycle.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert os.listdir(state_dir) == ["lifecycle.json"]


def test_record_is_0600_whatever_the_umask(state_dir: Path) -> None:
    previous = os.umask(0o277)
    try:
        Store(state_dir).transform(set_started(T0))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((state_dir / "lifecycle.json").stat().st_mode) == 0o600


def test_failing_function_writes_nothing_and_is_wrapped(state_dir: Path) -> None:
    store = Store(state_dir)
    store.transform(set_started(T0))
    before = (state_dir / "lifecycle.json").read_bytes()

    def fail(record: Lifecycle) -> None:
        record.create_error = True
        raise RuntimeError("boom")

    with pytest.raises(LifecycleStoreError, match="boom") as caught:
        store.transform(fail)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert (state_dir / "lifecycle.json").read_bytes() == before
    assert store.create_error is False
    assert os.listdir(state_dir) == ["lifecycle.json"]


def test_a_value_that_cannot_be_written_is_refused(state_dir: Path) -> None:
    store = Store(state_dir)
    with pytest.raises(LifecycleStoreError, match="create_error must be a bool") as caught:
        store.transform(lambda record: setattr(record, "create_error", "yes"))
    assert caught.value.errno == errno.EINVAL
    too_late = Timestamp.parse("9999-12-31T23:59:59Z").shifted(seconds=1)
    with pytest.raises(LifecycleStoreError, match="10000"):
        store.transform(set_started(too_late))
    assert os.listdir(state_dir) == []


def test_deleted_record_leaves_no_stale_values(state_dir: Path) -> None:
    store = Store(state_dir)
    store.update(create_error=True)
    (state_dir / "lifecycle.json").unlink()  # as another process would
    store.transform(set_started(T0))
    assert Store(state_dir).load() == Lifecycle(started_at=T0, create_error=False)


def test_delete_removes_only_the_record(state_dir: Path) -> None:
    (state_dir / "hostname").write_text("c1\n")
    store = Store(state_dir)
    store.transform(set_started(T0))
    assert store.delete() is True
    assert store.started_at is Timestamp.UNSET
    assert os.listdir(state_dir) == ["hostname"]
    assert store.delete() is False


def test_delete_of_a_missing_directory_is_not_an_error(tmp_path: Path) -> None:
    assert Store(tmp_path / "gone").delete() is False


def test_stale_temp_file_does_not_leak_into_the_record(state_dir: Path) -> None:
    stale = state_dir / TEMP_NAME
    stale.write_bytes(b'{"started_at":"1999-01-01T00:00:00Z","create_error":true} and junk')
    os.chmod(stale, 0o644)
    Store(state_dir).transform(set_started(T0))
    record = state_dir / "lifecycle.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert Store(state_dir).load() == Lifecycle(started_at=T0)
    assert sorted(os.listdir(state_dir)) == ["lifecycle.json"]


def test_symlinked_temp_name_is_not_followed(state_dir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (state_dir / TEMP_NAME).symlink_to(victim)
    Store(state_dir).transform(set_started(T0))
    assert victim.read_text() == "untouched"
    assert Store(state_dir).load().started_at == T0


def test_symlinked_record_is_refused(state_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"create_error":true}')
    (state_dir / "lifecycle.json").symlink_to(outside)
    with pytest.raises(LifecycleStoreError, match="cannot read") as caught:
        Store(state_dir).load()
    assert caught.value.errno == errno.ELOOP


def test_fifo_as_record_does_not_hang_a_reader(state_dir: Path) -> None:
    os.mkfifo(state_dir / "lifecycle.json")
    with pytest.raises(LifecycleStoreError, match="empty"):
        Store(state_dir).snapshot()


def test_non_durable_store_writes_the_same_bytes(state_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    Store(state_dir).transform(set_started(T0))
    Store(other, durable=False).transform(set_started(T0))
    assert (other / "lifecycle.json").read_bytes() == (state_dir / "lifecycle.json").read_bytes()


def test_lock_timeout_says_so(state_dir: Path) -> None:
    with lock_held_elsewhere(state_dir):
        store = Store(state_dir, lock_timeout=0.05)
        with pytest.raises(LockTimeoutError, match=r"after 0\.05 s") as caught:
            store.transform(set_started(T0))
        assert caught.value.errno == errno.ETIMEDOUT
        assert isinstance(caught.value, LifecycleStoreError)
    assert os.listdir(state_dir) == []
    Store(state_dir, lock_timeout=0.05).transform(set_started(T0))


def test_snapshot_reads_while_another_process_holds_the_lock(state_dir: Path) -> None:
    Store(state_dir).transform(set_started(T0))
    with lock_held_elsewhere(state_dir):
        record, record_stat = Store(state_dir).snapshot_stat()
    assert record.started_at == T0
    assert record_stat is not None
    assert record_stat.st_size == len((state_dir / "lifecycle.json").read_bytes())


def test_record_of_a_root_writer_belongs_to_the_directory_owner(state_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this suite runs as root (it mounts filesystems)")
    os.chown(state_dir, 1234, 5678)
    Store(state_dir).transform(set_started(T0))
    record = (state_dir / "lifecycle.json").stat()
    assert (record.st_uid, record.st_gid) == (1234, 5678)


# The size cap: records are read at most MAX_RECORD_BYTES + 1 bytes, and refused past it.


def padded_record(size: int) -> bytes:
    """A valid record of exactly `size` bytes: nerdctl's keys and a big extra key."""
    head = b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_a_record_of_exactly_the_cap_loads_and_transforms(state_dir: Path) -> None:
    path = state_dir / "lifecycle.json"
    path.write_bytes(padded_record(MAX_RECORD_BYTES))
    store = Store(state_dir)
    assert len(encode(store.load())) == MAX_RECORD_BYTES
    store.update(create_error=True)
    assert path.read_bytes() == padded_record(MAX_RECORD_BYTES).replace(b"false", b"true")
    assert Store(state_dir).snapshot().create_error is True


def test_a_60_kib_record_is_read_whole(state_dir: Path) -> None:
    data = padded_record(60 * 1024)
    (state_dir / "lifecycle.json").write_bytes(data)
    record = Store(state_dir).transform(lambda record: None)
    assert encode(record) == data


@pytest.mark.parametrize("size", [MAX_RECORD_BYTES + 1, MAX_RECORD_BYTES + 4096, 1 << 30])
def test_a_record_over_the_cap_is_refused_unparsed(state_dir: Path, size: int) -> None:
    path = state_dir / "lifecycle.json"
    with open(path, "wb") as file:
        file.write(b"not even JSON")
        file.truncate(size)  # sparse: a gigabyte costs nothing here, unless read whole
    for operation in (Store(state_dir).load, Store(state_dir).snapshot):
        with pytest.raises(RecordTooLargeError) as caught:
            operation()
        assert caught.value.errno == errno.EFBIG
        assert str(path) in str(caught.value)
        assert str(MAX_RECORD_BYTES) in str(caught.value)
        assert isinstance(caught.value, LifecycleStoreError)
        assert not isinstance(caught.value, RecordCorruptError)
    with pytest.raises(RecordTooLargeError):
        Store(state_dir).update(create_error=True)
    assert path.stat().st_size == size
    assert os.listdir(state_dir) == ["lifecycle.json"]


def test_read_record_reads_at_most_one_byte_past_the_cap(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = state_dir / "lifecycle.json"
    path.write_bytes(padded_record(MAX_RECORD_BYTES) + b" " * 100_000)
    asked: list[int] = []
    real_read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        asked.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", counting_read)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(RecordTooLargeError):
            read_record(fd, str(path))
    finally:
        os.close(fd)
    assert sum(asked) <= MAX_RECORD_BYTES + 1


# What a Store refuses at construction.


@pytest.mark.parametrize("path", ["/tmp/a\0b", "/tmp/\ud800", b"/tmp/\0"])
def test_a_path_no_system_call_takes_is_refused_with_einval(path: str) -> None:
    with pytest.raises(LifecycleStoreError, match="unusable state directory") as caught:
        Store(path)
    assert caught.value.errno == errno.EINVAL
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_path_of_undecodable_bytes_is_usable(tmp_path: Path) -> None:
    name = os.fsencode(str(tmp_path)) + b"/\xff\xfe"
    os.mkdir(name)
    Store(name).update(create_error=True)  # type: ignore[arg-type]
    assert Store(os.fsdecode(name)).load().create_error is True


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -math.inf, -1.0, -1e-9])
def test_a_lock_timeout_that_is_not_finite_seconds_is_refused(
    state_dir: Path, seconds: float
) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        Store(state_dir, lock_timeout=seconds)
    store = Store(state_dir, lock_timeout=1)
    with pytest.raises(ValueError, match="lock_timeout"):
        store.lock_timeout = seconds
    assert store.lock_timeout == 1


def test_a_lock_timeout_of_zero_means_do_not_wait(state_dir: Path) -> None:
    with lock_held_elsewhere(state_dir), pytest.raises(LockTimeoutError):
        Store(state_dir, lock_timeout=0).load()
    assert Store(state_dir, lock_timeout=0).load() == Lifecycle()


# Every operation takes nerdctl's lock.


@pytest.mark.parametrize("operation", ["load", "delete", "transform"])
def test_every_operation_waits_for_the_lock(state_dir: Path, operation: str) -> None:
    Store(state_dir).update(started_at=T0)
    store = Store(state_dir)
    run: Callable[[], object] = {
        "load": store.load,
        "delete": store.delete,
        "transform": lambda: store.update(create_error=True),
    }[operation]
    finished = threading.Event()

    def act() -> None:
        run()
        finished.set()

    with lock_held_elsewhere(state_dir):
        worker = threading.Thread(target=act)
        worker.start()
        assert not finished.wait(timeout=0.3), f"{operation} ran while the lock was held"
        assert (state_dir / "lifecycle.json").exists()
    worker.join(timeout=10)
    assert finished.is_set()


# Durability: durable means the data, then the directory; durable=False means no fsync.


class FsyncSpy:
    """Records what each os.fsync was on, and whether the lock was free at that moment."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.calls: list[tuple[str, bool, bytes]] = []
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        kind = "directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        free = lock_is_free(self.state_dir)
        record = self.state_dir / "lifecycle.json"
        self.calls.append((kind, free, record.read_bytes() if record.exists() else b""))
        self.real(fd)


def lock_is_free(state_dir: Path) -> bool:
    probe = subprocess.run(["flock", "--nonblock", str(state_dir), "true"], check=False)
    return probe.returncode == 0


def test_a_durable_transform_syncs_the_data_before_the_rename_then_the_directory(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(state_dir)
    store.update(create_error=True)
    before = (state_dir / "lifecycle.json").read_bytes()
    spy = FsyncSpy(state_dir)
    monkeypatch.setattr(os, "fsync", spy)
    store.update(create_error=False)
    after = (state_dir / "lifecycle.json").read_bytes()
    assert [(kind, content) for kind, _, content in spy.calls] == [
        ("file", before),  # the temp file's data, while the old record is still in place
        ("directory", after),  # then the rename
    ]
    assert spy.calls[0][1] is False, "the data must be synced under the lock"
    assert spy.calls[1][1] is True, "the directory is synced after the lock is released"


def test_a_durable_delete_syncs_the_directory(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(state_dir)
    store.update(create_error=True)
    spy = FsyncSpy(state_dir)
    monkeypatch.setattr(os, "fsync", spy)
    assert store.delete() is True
    assert [kind for kind, _, _ in spy.calls] == ["directory"]


def test_durable_false_never_fsyncs(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(state_dir, durable=False)
    spy = FsyncSpy(state_dir)
    monkeypatch.setattr(os, "fsync", spy)
    store.update(create_error=True)
    store.update(create_error=False)
    store.load()
    store.delete()
    assert spy.calls == []
