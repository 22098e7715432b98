"""Faults beneath and around the mount: durability, a moved SOURCE, bounded logs, read-only."""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fusefs import mount as mount_module
from store import Store, Timestamp
from tests.conftest import Mount

T0 = Timestamp.parse("2024-01-02T03:04:05Z")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A depth-1 tree with c1 started at T0."""
    root = tmp_path / "source"
    Store(root / "c1", create=True).update(started_at=T0)
    return root


@contextmanager
def fsyncs_of(pid: int, log: Path) -> Iterator[Callable[[], int]]:
    """strace attached to process `pid` (every thread); yields a counter of its fsyncs."""
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(log), "-p", str(pid)],
        stderr=subprocess.PIPE,
    )
    try:
        # strace says nothing once attached; wait until it traces (it writes on attach -f).
        probe = f"/proc/{pid}/status"
        while "TracerPid:\t0" in Path(probe).read_text():
            if tracer.poll() is not None:
                raise AssertionError("strace could not attach")
        yield lambda: sum(
            1 for line in log.read_text().splitlines() if "fsync(" in line and "= 0" in line
        )
    finally:
        tracer.terminate()
        tracer.wait(timeout=30)


@pytest.mark.parametrize(("options", "durable"), [((), True), (("-o", "nodurable"), False)])
def test_the_mount_is_durable_unless_told_otherwise(
    mount: Callable[..., Mount],
    source: Path,
    tmp_path: Path,
    options: tuple[str, ...],
    durable: bool,
) -> None:
    live = mount(source, *options)
    value = live.path / "c1" / "create_error"
    value.write_text("false\n")  # the mount's threads exist before strace attaches
    with fsyncs_of(live.pid, tmp_path / "strace.log") as fsyncs:
        value.write_text("true\n")
        counted = fsyncs()
    assert Store(source / "c1").load().create_error is True
    # Durable: the record's data, then its directory (the rename).
    assert counted == (2 if durable else 0)


def test_writes_stop_once_source_is_moved(
    mount: Callable[..., Mount], source: Path, tmp_path: Path
) -> None:
    live = mount(source)
    assert (live.path / "c1" / "started_at").read_text() == f"{T0}\n"
    source.rename(tmp_path / "moved")
    for _ in range(3):
        with pytest.raises(OSError, match="Stale file handle") as caught:
            (live.path / "c1" / "create_error").write_text("true\n")
        assert caught.value.errno == errno.ESTALE
    with pytest.raises(OSError, match="Stale file handle"):
        (live.path / "new").mkdir()
    for path in (live.path / "c1" / "started_at", live.path / "c1"):  # record, directory
        with pytest.raises(OSError, match="Stale file handle"):
            path.chmod(0o750)
    assert Store(tmp_path / "moved" / "c1").load().create_error is False
    assert stat.S_IMODE((tmp_path / "moved" / "c1" / "lifecycle.json").stat().st_mode) == 0o600
    logged = [line for line in live.log_lines() if "moved, removed or unmounted" in line]
    assert len(logged) == 1


def test_writes_stop_once_source_is_replaced(
    mount: Callable[..., Mount], source: Path, tmp_path: Path
) -> None:
    live = mount(source)
    source.rename(tmp_path / "old")
    Store(source / "c1", create=True)  # a new tree where the old one was
    with pytest.raises(OSError, match="Stale file handle"):
        (live.path / "c1" / "create_error").write_text("true\n")
    assert not (source / "c1" / "lifecycle.json").exists()


def test_log_lines_stay_short_whatever_users_write(
    mount: Callable[..., Mount], source: Path
) -> None:
    live = mount(source)
    name = "c" * 250
    Store(source / name, create=True)
    (source / name / "lifecycle.json").write_text("{" + '"x":1,' * 2000)
    for _ in range(50):
        fd = os.open(live.path / "c1" / "started_at", os.O_WRONLY)
        try:
            with pytest.raises(OSError, match="Invalid argument"):
                os.write(fd, b"9" * 4000)
        finally:
            os.close(fd)
        with pytest.raises(OSError, match="Input/output error"):
            (live.path / name / "started_at").read_text()
    lines = live.log_lines()
    assert lines, "the corrupt record was not logged"
    assert max(len(line) for line in lines) <= 2100
    assert sum("corrupt record" in line for line in lines) == 1
    assert not any("9999999999" in line for line in lines), "a refused value was logged"


def test_a_read_only_mount_shows_no_write_permission(
    mount: Callable[..., Mount], source: Path
) -> None:
    os.chmod(source / "c1", 0o755)
    mnt = mount(source, "-o", "ro").path
    for path in (mnt, mnt / "c1", mnt / "c1" / "create_error", mnt / "c1" / "started_at"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0, path
    assert stat.S_IMODE((mnt / "c1").stat().st_mode) == 0o555


def test_a_filesystem_mounted_inside_source_is_never_entered(
    mount: Callable[..., Mount], source: Path, tmp_path: Path
) -> None:
    inner = source / "c2"
    inner.mkdir()
    subprocess.run(
        ["mount", "-n", "-t", "tmpfs", "-o", "size=64k", "lifecyclefs-test", str(inner)],
        check=True,
    )
    try:
        Store(inner, create=True).update(started_at=T0)  # a record on the other filesystem
        mnt = mount(source).path
        assert (mnt / "c1" / "started_at").read_text() == f"{T0}\n"
        with pytest.raises(OSError, match=r"Invalid cross-device|No such file"):
            (mnt / "c2" / "started_at").read_text()
        with pytest.raises(OSError, match=r"Invalid cross-device|No such file"):
            (mnt / "c2" / "create_error").write_text("true\n")
        assert Store(inner).load().create_error is False
    finally:
        subprocess.run(["umount", "-n", str(inner)], check=True)


def test_writes_stop_once_sources_filesystem_is_unmounted(
    tiny_tmpfs: Path, mount: Callable[..., Mount]
) -> None:
    live = mount(tiny_tmpfs)
    Store(tiny_tmpfs / "c1", create=True).update(started_at=T0)
    assert (live.path / "c1" / "started_at").read_text() == f"{T0}\n"
    subprocess.run(["umount", "-n", "--lazy", str(tiny_tmpfs)], check=True)
    try:
        with pytest.raises(OSError, match="Stale file handle"):
            (live.path / "c1" / "create_error").write_text("true\n")
    finally:
        # The fixture unmounts it again: give it something mounted there.
        subprocess.run(
            ["mount", "-n", "-t", "tmpfs", "-o", "size=64k", "lifecyclefs-test", str(tiny_tmpfs)],
            check=True,
        )


def test_a_record_over_64_kib_is_file_too_large_through_the_mount(
    mount: Callable[..., Mount], source: Path
) -> None:
    record = source / "c1" / "lifecycle.json"
    record.write_text('{"create_error":true,"pad":"' + "x" * 70_000 + '"}')
    mnt = mount(source).path
    for name in ("started_at", "lifecycle.json"):
        with pytest.raises(OSError, match="too large") as caught:
            (mnt / "c1" / name).read_text()
        assert caught.value.errno == errno.EFBIG
    with pytest.raises(OSError, match="too large"):
        (mnt / "c1" / "create_error").write_text("false\n")
    assert record.read_text().startswith('{"create_error":true,"pad":"xxx')


def test_no_log_record_is_longer_than_its_bound() -> None:
    """Whatever ends up in a message (a traceback, a user's name), one record stays short."""
    formatter = mount_module._BoundedFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("lifecyclefs", logging.ERROR, __file__, 1, "x" * 10_000, (), None)
    text = formatter.format(record)
    assert 2_000 < len(text) <= 2_048, "the README: log lines are cut at 2,048 characters"
    assert text.startswith("ERROR xxx")
    assert text.endswith("chars, cut]")
