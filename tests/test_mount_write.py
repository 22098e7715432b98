"""Writing through a mount: sysfs rules, one locked transform per value, clear errnos."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Lifecycle, Store, Timestamp
from tests.conftest import Mount, fill
from tests.processes import lock_held_elsewhere

T0 = Timestamp.parse("2024-01-02T03:04:05.5Z")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A depth-1 tree with one container, c1, started at T0."""
    root = tmp_path / "source"
    Store(root / "c1", create=True).update(started_at=T0)
    return root


def sh(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **env},
    )


def record_of(source: Path) -> Lifecycle:
    return Store(source / "c1").load()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ('echo true > "$F"', True),
        ('printf 1 > "$F"', True),
        ('printf "false\\n" | tee "$F" > /dev/null', False),
        ('echo 0 | head -c 2 > "$F"', False),
    ],
)
def test_shell_writes_set_create_error(
    mount: Callable[..., Mount], source: Path, command: str, expected: bool
) -> None:
    mnt = mount(source).path
    Store(source / "c1").update(create_error=not expected)
    result = sh(command, F=str(mnt / "c1" / "create_error"))
    assert result.returncode == 0, result.stderr
    assert record_of(source) == Lifecycle(T0, expected)
    assert (mnt / "c1" / "create_error").read_text() == f"{str(expected).lower()}\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-07T08:09:10+02:00\n", "2025-06-07T08:09:10+02:00"),
        ("2025-06-07T08:09:10.000000500Z", "2025-06-07T08:09:10.0000005Z"),
        ("2025-06-07T08:09:10-00:00\n", "2025-06-07T08:09:10Z"),
    ],
)
def test_started_at_takes_rfc3339_and_keeps_the_offset(
    mount: Callable[..., Mount], source: Path, value: str, expected: str
) -> None:
    mnt = mount(source).path
    with open(mnt / "c1" / "started_at", "w") as file:
        file.write(value)
    assert record_of(source).started_at == Timestamp.parse(expected)
    assert (mnt / "c1" / "started_at").read_text() == expected + "\n"
    assert record_of(source).create_error is False


def test_started_at_now_and_empty(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    before = Timestamp.now()
    assert sh('echo now > "$F"', F=str(mnt / "c1" / "started_at")).returncode == 0
    after = Timestamp.now()
    assert before.unix_ns <= record_of(source).started_at.unix_ns <= after.unix_ns
    assert sh('echo > "$F"', F=str(mnt / "c1" / "started_at")).returncode == 0
    assert record_of(source).started_at.is_unset
    assert (mnt / "c1" / "started_at").read_text() == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("create_error", "yes"),
        ("create_error", "TRUE"),
        ("create_error", "true\n\n"),
        ("started_at", "2024-01-02 03:04:05Z"),
        ("started_at", "2024-01-02T03:04:05"),
        ("started_at", "2024-01-02T03:04:05+24:00"),
        ("started_at", "yesterday"),
        ("started_at", "\udcff"),
    ],
)
def test_invalid_value_is_einval_and_changes_nothing(
    mount: Callable[..., Mount], source: Path, name: str, value: str
) -> None:
    mnt = mount(source).path
    before = (source / "c1" / "lifecycle.json").read_bytes()
    fd = os.open(mnt / "c1" / name, os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="Invalid argument") as caught:
            os.write(fd, value.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)
    assert caught.value.errno == errno.EINVAL
    assert (source / "c1" / "lifecycle.json").read_bytes() == before


def test_shell_sees_a_bad_value_as_an_error(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    result = sh('echo bad > "$F"', F=str(mnt / "c1" / "create_error"))
    assert result.returncode == 1
    assert result.stderr.strip().endswith("write error: Invalid argument")
    assert record_of(source) == Lifecycle(T0)


def test_oversized_value_and_other_offsets_are_refused(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source).path
    before = (source / "c1" / "lifecycle.json").read_bytes()
    fd = os.open(mnt / "c1" / "started_at", os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="too large") as too_big:
            os.write(fd, b"1" * 5000)
        assert too_big.value.errno == errno.EFBIG
        with pytest.raises(OSError, match="Illegal seek") as elsewhere:
            os.pwrite(fd, b"now\n", 3)
        assert elsewhere.value.errno == errno.ESPIPE
    finally:
        os.close(fd)
    result = sh('echo true >> "$F"', F=str(mnt / "c1" / "create_error"))
    assert result.returncode != 0
    assert (source / "c1" / "lifecycle.json").read_bytes() == before


def test_truncation_leaves_the_record_as_it_was(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    before = (source / "c1" / "lifecycle.json").read_bytes()
    path = mnt / "c1" / "started_at"
    assert sh(': > "$F"', F=str(path)).returncode == 0
    os.truncate(path, 0)
    with open(path, "w"):
        pass
    assert subprocess.run(["truncate", "-s", "0", str(path)], check=False).returncode == 0
    assert (source / "c1" / "lifecycle.json").read_bytes() == before
    assert path.read_text() == f"{T0}\n"


def test_lifecycle_json_is_read_only(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    with pytest.raises(PermissionError):
        (mnt / "c1" / "lifecycle.json").write_text("{}")
    assert stat.S_IMODE((mnt / "c1" / "lifecycle.json").stat().st_mode) == 0o400


def test_read_only_mount_refuses_every_change(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source, "-o", "ro").path
    with pytest.raises(OSError, match="Read-only file system") as caught:
        (mnt / "c1" / "create_error").write_text("true\n")
    assert caught.value.errno == errno.EROFS
    with pytest.raises(OSError, match="Read-only"):
        (mnt / "c9").mkdir()
    assert (mnt / "c1" / "started_at").read_text() == f"{T0}\n"
    assert stat.S_IMODE((mnt / "c1" / "started_at").stat().st_mode) == 0o400


def test_write_waits_for_a_held_lock_then_lands(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    done = threading.Event()

    def write() -> None:
        (mnt / "c1" / "create_error").write_text("true\n")
        done.set()

    with lock_held_elsewhere(source / "c1"):
        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(timeout=0.3), "the write did not wait for the lock"
        assert (mnt / "c1" / "create_error").read_text() == "false\n"
    writer.join(timeout=10)
    assert done.is_set()
    assert record_of(source) == Lifecycle(T0, True)


def test_write_gives_up_with_ebusy_after_the_lock_timeout(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source, "-o", "lock_timeout=0.2").path
    with lock_held_elsewhere(source / "c1"):
        result = sh('echo true > "$F"', F=str(mnt / "c1" / "create_error"))
    assert result.returncode != 0
    assert "busy" in result.stderr
    assert record_of(source).create_error is False


def test_without_a_lock_timeout_a_write_gives_up_after_ten_seconds(
    mount: Callable[..., Mount], source: Path
) -> None:
    """The default `-o lock_timeout` is the README's 10 s: then EBUSY, nothing written."""
    mnt = mount(source).path
    fd = os.open(mnt / "c1" / "create_error", os.O_WRONLY | os.O_TRUNC)
    try:
        with lock_held_elsewhere(source / "c1"):
            start = time.monotonic()
            with pytest.raises(OSError, match="busy") as caught:
                os.write(fd, b"true\n")
            waited = time.monotonic() - start
    finally:
        os.close(fd)
    assert caught.value.errno == errno.EBUSY
    assert 9.5 <= waited < 30, f"gave up after {waited:.1f} s"
    assert record_of(source).create_error is False


def test_mkdir_creates_a_0700_state_directory(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    (mnt / "c2").mkdir(mode=0o755)
    assert stat.S_IMODE((source / "c2").stat().st_mode) == 0o700
    assert (mnt / "c2" / "started_at").read_text() == ""
    assert sh('echo now > "$F"', F=str(mnt / "c2" / "started_at")).returncode == 0
    assert not Store(source / "c2").load().started_at.is_unset
    with pytest.raises(FileExistsError):
        (mnt / "c2").mkdir()
    with pytest.raises(PermissionError):
        (mnt / "c2" / "sub").mkdir()


@pytest.mark.parametrize(
    "operation",
    [
        lambda mnt: (mnt / "c1" / "lifecycle.json").unlink(),
        lambda mnt: (mnt / "c1").rmdir(),
        lambda mnt: (mnt / "c1").rename(mnt / "c9"),
        lambda mnt: (mnt / "c1" / "link").symlink_to("started_at"),
        lambda mnt: (mnt / "new").write_text("x"),
        lambda mnt: os.link(mnt / "c1" / "started_at", mnt / "c1" / "again"),
        lambda mnt: (mnt / "c1" / "started_at").rename(mnt / "c1" / "other"),
        lambda mnt: os.mknod(mnt / "c1" / "fifo", 0o600 | stat.S_IFIFO),
    ],
    ids=[
        "unlink lifecycle.json",
        "rmdir",
        "rename",
        "symlink",
        "create outside a container",
        "link",
        "rename a value file",
        "mknod",
    ],
)
def test_unsupported_operations_are_eperm(
    mount: Callable[..., Mount], source: Path, operation: Callable[[Path], object]
) -> None:
    live = mount(source)
    with pytest.raises(PermissionError) as caught:
        operation(live.path)
    assert caught.value.errno == errno.EPERM
    assert sorted(os.listdir(live.path / "c1")) == ["create_error", "lifecycle.json", "started_at"]
    assert record_of(source) == Lifecycle(T0)
    assert not any("internal error" in line for line in live.log_lines())


def test_full_filesystem_is_enospc_through_the_mount(
    tiny_tmpfs: Path, mount: Callable[..., Mount]
) -> None:
    source = tiny_tmpfs / "source"
    Store(source / "c1", create=True).update(started_at=T0)
    before = (source / "c1" / "lifecycle.json").read_bytes()
    live = mount(source)
    filler = fill(tiny_tmpfs)
    try:
        result = sh('echo true > "$F"', F=str(live.path / "c1" / "create_error"))
        assert result.returncode == 1
        assert result.stderr.strip().endswith("No space left on device")
        assert (source / "c1" / "lifecycle.json").read_bytes() == before
        assert sorted(os.listdir(source / "c1")) == ["lifecycle.json"]
    finally:
        filler.unlink()
    assert sh('echo true > "$F"', F=str(live.path / "c1" / "create_error")).returncode == 0
