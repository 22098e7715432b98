"""The kernel's caches never show a stale value: outside changes at once, stat within 100 ms."""

from __future__ import annotations

import collections
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Store, Timestamp
from tests.conftest import LIFECYCLEFS, Mount, lifecyclefs
from tests.processes import notify_service, stop
from tests.workers import nerdctl_bump

T0 = Timestamp.parse("2024-01-02T03:04:05.123456789Z")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A depth-2 tree: default/c1 started at T0, default/c2 never started."""
    root = tmp_path / "containers"
    Store(root / "default" / "c1", create=True).update(started_at=T0)
    Store(root / "default" / "c2", create=True)
    return root


def within(seconds: float, check: Callable[[], bool]) -> bool:
    """Whether `check` holds within `seconds` (tried every millisecond)."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def test_a_cat_of_an_unchanged_value_is_answered_from_the_page_cache(
    source: Path, mountpoint: Path, tmp_path: Path
) -> None:
    command = [LIFECYCLEFS, "mount", "--debug", "--depth", "2", str(source), str(mountpoint)]
    with notify_service(command, tmp_path / "notify") as daemon:
        for _ in range(10):
            assert (mountpoint / "default" / "c1" / "started_at").read_text() == f"{T0}\n"
        errors = stop(daemon, signal.SIGTERM)
    requests = collections.Counter(re.findall(r"opcode: ([A-Z_]+)", errors))
    # Every cat opens (the open checks the record); only the first one reads.
    assert (requests["OPEN"], requests["READ"]) == (10, 1), requests


@pytest.mark.parametrize(
    "writer",
    [
        lambda state: Store(state).update(started_at=T0.shifted(seconds=1)),
        lambda state: nerdctl_bump(str(state)),
        lambda state: lifecyclefs("set", str(state), f"started_at={T0.shifted(seconds=1)}"),
        lambda state: (state / "lifecycle.json").write_bytes(
            b'{"started_at":"2024-01-02T03:04:06.123456789Z","create_error":false}'
        ),
    ],
    ids=["library", "nerdctl protocol", "command line", "in place"],
)
def test_a_cached_value_changed_outside_is_seen_by_the_next_cat(
    mount: Callable[..., Mount], source: Path, writer: Callable[[Path], object]
) -> None:
    mnt = mount(source, "--depth", "2").path
    value = mnt / "default" / "c1" / "started_at"
    for _ in range(3):  # read it into the page cache, and read it from there
        assert value.read_text() == f"{T0}\n"
    writer(source / "default" / "c1")
    # Same length on purpose: a cache keyed on the size would miss the change.
    assert value.read_text() == f"{T0.shifted(seconds=1)}\n"


def test_a_change_through_another_mount_is_seen(mount: Callable[..., Mount], source: Path) -> None:
    first, second = mount(source, "--depth", "2").path, mount(source, "--depth", "2").path
    assert (first / "default" / "c1" / "create_error").read_text() == "false\n"
    (second / "default" / "c1" / "create_error").write_text("true\n")
    assert (first / "default" / "c1" / "create_error").read_text() == "true\n"


def test_stat_and_ls_see_an_outside_change_within_100_ms(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source, "--depth", "2").path
    value, record = mnt / "default" / "c1" / "started_at", mnt / "default" / "c1" / "lifecycle.json"
    before = value.stat(), record.stat()
    Store(source / "default" / "c1").update(started_at=Timestamp.parse("2024-01-02T03:04:05Z"))
    expected_size = len("2024-01-02T03:04:05Z\n")
    start = time.monotonic()
    assert within(1.0, lambda: value.stat().st_size == expected_size), "stat never caught up"
    assert time.monotonic() - start < 0.1
    assert record.stat().st_mtime_ns != before[1].st_mtime_ns
    listing = subprocess.run(
        ["ls", "-l", str(mnt / "default" / "c1")], capture_output=True, text=True, check=True
    )
    assert f" {expected_size} " in next(
        line for line in listing.stdout.splitlines() if line.endswith("started_at")
    )


def test_a_container_removed_outside_is_gone_from_stat(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source, "--depth", "2").path
    assert (mnt / "default" / "c2").stat()
    os.rmdir(source / "default" / "c2")
    assert within(1.0, lambda: not (mnt / "default" / "c2").exists())
    assert sorted(os.listdir(mnt / "default")) == ["c1"]


def test_a_container_made_outside_is_listed_within_100_ms(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source, "--depth", "2").path
    assert sorted(os.listdir(mnt / "default")) == ["c1", "c2"]  # the listing is cached now
    Store(source / "default" / "c3", create=True)
    assert within(0.1, lambda: "c3" in os.listdir(mnt / "default"))
    assert (mnt / "default" / "c3" / "started_at").read_text() == ""


def test_permissions_changed_outside_are_seen_within_100_ms(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source, "--depth", "2").path
    value = mnt / "default" / "c1" / "create_error"
    assert value.stat().st_mode & 0o777 == 0o600
    os.chmod(source / "default" / "c1" / "lifecycle.json", 0o640)
    start = time.monotonic()
    assert within(1.0, lambda: value.stat().st_mode & 0o777 == 0o640)
    assert time.monotonic() - start < 0.1


def test_our_write_updates_every_file_of_the_container(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source, "--depth", "2").path
    container = mnt / "default" / "c1"
    sizes = {name: (container / name).stat().st_size for name in ("lifecycle.json", "create_error")}
    (container / "create_error").write_text("true\n")
    # "true" is one byte shorter than "false": every file that shows it shrinks at once.
    assert (container / "lifecycle.json").stat().st_size == sizes["lifecycle.json"] - 1
    assert (container / "create_error").stat().st_size == sizes["create_error"] - 1
    assert (container / "lifecycle.json").read_bytes() == (
        source / "default" / "c1" / "lifecycle.json"
    ).read_bytes()


def test_the_container_directory_shows_our_write_within_100_ms(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source, "--depth", "2").path
    container, backing = mnt / "default" / "c1", source / "default" / "c1"
    os.utime(backing, ns=(10**9, 10**9))  # so that the write's rename surely moves it
    assert within(1.0, lambda: container.stat().st_mtime_ns == 10**9)
    (container / "create_error").write_text("true\n")
    start = time.monotonic()
    changed = backing.stat().st_mtime_ns
    assert changed != 10**9
    assert within(1.0, lambda: container.stat().st_mtime_ns == changed), "stat never caught up"
    assert time.monotonic() - start < 0.1


@pytest.mark.parametrize("just_changed", [False, True], ids=["quiet", "just changed"])
def test_a_file_held_open_rereads_the_new_value_from_the_start(
    mount: Callable[..., Mount], source: Path, just_changed: bool
) -> None:
    """Alike when it was opened quiet (page cache) and a moment after a change (not)."""
    mnt = mount(source, "--depth", "2").path
    value, state = mnt / "default" / "c1" / "create_error", Store(source / "default" / "c1")
    assert value.read_text() == "false\n"  # the container is watched from now on
    if just_changed:
        state.update(create_error=True)
    before = b"true\n" if just_changed else b"false\n"
    fd = os.open(value, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == before
        state.update(create_error=not just_changed)
        after = b"false\n" if just_changed else b"true\n"
        assert within(1.0, lambda: os.pread(fd, 100, 0) == after)
    finally:
        os.close(fd)


def test_poll_wakes_when_the_value_changes(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source, "--depth", "2").path
    fd = os.open(mnt / "default" / "c2" / "started_at", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b""  # never started
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        assert poller.poll(100) == [], "poll reported a change before there was one"
        woken: list[list[tuple[int, int]]] = []
        waiter = threading.Thread(target=lambda: woken.append(poller.poll(10_000)))
        waiter.start()
        lifecyclefs("set", str(source / "default" / "c2"), "started_at=now")
        waiter.join(timeout=15)
        assert woken, "poll did not return"
        assert woken[0], "poll did not wake"
        assert woken[0][0][1] & select.POLLPRI
        os.lseek(fd, 0, os.SEEK_SET)
        started = os.read(fd, 100).decode()
        assert started == Store(source / "default" / "c2").load().started_at.format() + "\n"
        assert poller.poll(100) == [], "poll woke again with nothing new"
    finally:
        os.close(fd)
