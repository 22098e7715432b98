"""Store: load, transform and delete as a Python caller sees them."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Lifecycle, LifecycleStoreError, LockTimeoutError, Store, Timestamp
from store.atomic import TEMP_NAME
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
