"""Reading through a mount: fresh, consistent values, whatever changes them and however."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Lifecycle, Store, Timestamp
from store.codec import encode
from tests.conftest import Mount
from tests.processes import lock_held_elsewhere
from tests.workers import nerdctl_bump

T0 = Timestamp.parse("2024-01-02T04:04:05.123456789+01:00")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A depth-1 tree: c1 started at T0 with create_error set, c2 never started."""
    root = tmp_path / "source"
    Store(root / "c1", create=True).update(started_at=T0, create_error=True)
    Store(root / "c2", create=True)
    return root


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_cat_head_and_open_show_what_the_store_reads(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source).path
    record = Store(source / "c1").load()
    assert run("cat", str(mnt / "c1" / "started_at")).stdout == f"{record.started_at}\n"
    assert run("cat", str(mnt / "c1" / "create_error")).stdout == "true\n"
    assert run("head", "-c", "10", str(mnt / "c1" / "started_at")).stdout == "2024-01-02"
    assert (mnt / "c1" / "lifecycle.json").read_bytes() == encode(record)
    with open(mnt / "c1" / "started_at") as file:
        assert file.read() == "2024-01-02T04:04:05.123456789+01:00\n"
    assert (mnt / "c2" / "started_at").read_text() == ""
    assert (mnt / "c2" / "create_error").read_text() == "false\n"
    assert (mnt / "c2" / "lifecycle.json").read_bytes() == encode(Lifecycle())
    assert not (source / "c2" / "lifecycle.json").exists(), "reading created a record"


def test_stat_size_is_what_a_read_returns(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    for container in ("c1", "c2"):
        for name in ("started_at", "create_error", "lifecycle.json"):
            path = mnt / container / name
            assert path.stat().st_size == len(path.read_bytes()), path


def test_change_by_the_library_is_seen_by_the_next_read(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source).path
    started_at = mnt / "c1" / "started_at"
    assert started_at.read_text() == f"{T0}\n"
    # Same length on purpose: a page cache keyed on size and mtime would miss it.
    later = T0.shifted(seconds=1)
    Store(source / "c1").update(started_at=later)
    assert started_at.read_text() == f"{later}\n"
    assert started_at.stat().st_size == len(f"{later}\n")
    Store(source / "c1").update(started_at=Timestamp(0))
    assert started_at.read_text() == "1970-01-01T00:00:00Z\n"
    assert started_at.stat().st_size == len("1970-01-01T00:00:00Z\n")


def test_change_by_a_raw_nerdctl_style_writer_is_seen(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source).path
    assert (mnt / "c1" / "started_at").read_text() == f"{T0}\n"
    nerdctl_bump(str(source / "c1"))
    assert (mnt / "c1" / "started_at").read_text() == f"{T0.shifted(seconds=1)}\n"


def test_each_open_sees_one_consistent_snapshot(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    with open(mnt / "c1" / "lifecycle.json", "rb", buffering=0) as file:
        head = file.read(10)
        Store(source / "c1").delete()
        rest = file.read()
    assert head + rest == encode(Lifecycle(T0, True))
    assert (mnt / "c1" / "lifecycle.json").read_bytes() == encode(Lifecycle())


def test_reads_do_not_wait_for_a_held_lock(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    with lock_held_elsewhere(source / "c1"):
        result = subprocess.run(
            ["cat", str(mnt / "c1" / "started_at"), str(mnt / "c2" / "create_error")],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        assert result.stdout == f"{T0}\nfalse\n"
        assert sorted(os.listdir(mnt)) == ["c1", "c2"]


def test_corrupt_record_reads_as_eio_with_one_log_line(
    mount: Callable[..., Mount], source: Path
) -> None:
    live = mount(source)
    (source / "c1" / "lifecycle.json").write_bytes(b'{"started_at":"2024-01-')
    for _ in range(3):
        result = run("cat", str(live.path / "c1" / "started_at"))
        assert result.returncode == 1
        assert "Input/output error" in result.stderr
    with pytest.raises(OSError, match="Input/output error") as caught:
        (live.path / "c1" / "create_error").read_text()
    assert caught.value.errno == errno.EIO
    logged = [line for line in live.log_lines() if "corrupt record" in line]
    assert len(logged) == 1
    assert str(source / "c1" / "lifecycle.json") in logged[0]
    assert (live.path / "c2" / "create_error").read_text() == "false\n"


def test_container_removed_meanwhile_is_enoent(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    assert (mnt / "c2" / "create_error").read_text() == "false\n"
    os.rmdir(source / "c2")
    with pytest.raises(FileNotFoundError):
        (mnt / "c2" / "create_error").read_text()
    assert sorted(os.listdir(mnt)) == ["c1"]
