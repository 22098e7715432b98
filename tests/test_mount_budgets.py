"""What one user may hold of the daemon, and how long tools' temporary files live.

These bounds keep one user from starving the others (see `fusefs.budgets`); each is
checked here at its limit, with the errno a user then sees.
"""

from __future__ import annotations

import errno
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyfuse3 import FUSEError

from fusefs.budgets import Budgets
from fusefs.tempfiles import TempFiles
from store import Store
from tests.conftest import Mount

ALICE, BOB = 1000, 1001
C1 = (b"c1",)

# The README's figures, spelled out here: a changed limit fails these tests.
OPEN_FILES = 16_384
PINNED_BYTES = 8 << 20
WAITING = 256
THREADS = 4
TEMP_FILES = 64
TEMP_BYTES = 1 << 20
TEMP_FILE_BYTES = 64 << 10
TEMPS_PER_CONTAINER = 16
IDLE_SECONDS = 30
UNLINKED_SECONDS = 5


def errno_of(caught: pytest.ExceptionInfo[FUSEError]) -> int:
    return caught.value.errno


def test_open_handles_are_bounded_per_user() -> None:
    held = Budgets()
    for _ in range(OPEN_FILES):
        held.open_handle(ALICE, 0)
    with pytest.raises(FUSEError) as caught:
        held.open_handle(ALICE, 0)
    assert errno_of(caught) == errno.EMFILE
    held.open_handle(BOB, 0)  # another user is not affected
    held.close_handle(ALICE, 0)
    held.open_handle(ALICE, 0)


def test_memory_pinned_by_handles_is_bounded_per_user() -> None:
    held = Budgets()
    big = PINNED_BYTES // 4
    for _ in range(3):
        held.open_handle(ALICE, big)
    with pytest.raises(FUSEError) as caught:
        held.open_handle(ALICE, big)
    assert errno_of(caught) == errno.ENOMEM
    held.open_handle(BOB, big)


def test_waiting_requests_are_bounded_per_user() -> None:
    held = Budgets()
    waits = [held.waiting(ALICE) for _ in range(WAITING)]
    for wait in waits:
        wait.__enter__()
    with pytest.raises(FUSEError) as caught, held.waiting(ALICE):
        pass
    assert errno_of(caught) == errno.EBUSY
    with held.waiting(BOB) as threads:
        assert threads.total_tokens == THREADS
    waits[0].__exit__(None, None, None)
    with held.waiting(ALICE):
        pass


def test_temporary_files_are_bounded_per_user_and_per_container() -> None:
    temps = TempFiles(Budgets())
    containers = [(b"c%d" % index,) for index in range(TEMP_FILES)]
    for container in containers:
        temps.create(container, b"t", ALICE, ALICE, 0o600)
    with pytest.raises(FUSEError) as per_user:
        temps.create((b"more",), b"t", ALICE, ALICE, 0o600)
    assert errno_of(per_user) == errno.EDQUOT
    for index in range(TEMPS_PER_CONTAINER - 1):
        temps.create(containers[0], b"u%d" % index, BOB, BOB, 0o600)
    with pytest.raises(FUSEError) as per_container:
        temps.create(containers[0], b"v", BOB, BOB, 0o600)
    assert errno_of(per_container) == errno.ENOSPC


def test_temporary_bytes_are_bounded_per_user() -> None:
    temps = TempFiles(Budgets())
    chunk = b"x" * TEMP_FILE_BYTES
    for index in range(TEMP_BYTES // TEMP_FILE_BYTES):
        temps.write(temps.create((b"c%d" % index,), b"t", ALICE, ALICE, 0o600), 0, chunk)
    last = temps.create((b"last",), b"t", ALICE, ALICE, 0o600)
    with pytest.raises(FUSEError) as caught:
        temps.write(last, 0, b"x")
    assert errno_of(caught) == errno.EDQUOT
    with pytest.raises(FUSEError) as too_big:
        temps.write(temps.create((b"bob",), b"t", BOB, BOB, 0o600), TEMP_FILE_BYTES, b"x")
    assert errno_of(too_big) == errno.EFBIG


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The monotonic clock, moved by hand: [now]."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    return now


def test_a_closed_temporary_file_goes_after_its_idle_time(clock: list[float]) -> None:
    temps = TempFiles(Budgets())
    open_one, closed = (
        temps.create(C1, b"open", ALICE, ALICE, 0o600),
        temps.create(C1, b"closed", ALICE, ALICE, 0o600),
    )
    temps.opened(open_one)
    temps.opened(closed)
    temps.closed(closed)
    clock[0] += IDLE_SECONDS - 1
    assert temps.expired() == []
    clock[0] += 2
    assert temps.expired() == [closed]
    assert temps.get(C1, b"closed") is None
    assert temps.get(C1, b"open") is open_one, "a file still open went"


def test_an_unlinked_value_files_name_is_free_for_a_moment_only(clock: list[float]) -> None:
    temps = TempFiles(Budgets())
    temps.unlink_value_file(C1, b"started_at", ALICE)
    assert temps.value_file_unlinked(C1, b"started_at", ALICE)
    assert not temps.value_file_unlinked(C1, b"started_at", BOB)
    clock[0] += UNLINKED_SECONDS - 1
    assert temps.value_file_unlinked(C1, b"started_at", ALICE)
    clock[0] += 2
    assert not temps.value_file_unlinked(C1, b"started_at", ALICE), "it did not come back"


def test_open_files_of_the_mount_stop_at_the_limit_with_emfile(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    source = tmp_path / "containers"
    Store(source / "c1", create=True).update(create_error=True)
    live = mount(source)
    value, record = live.path / "c1" / "create_error", live.path / "c1" / "lifecycle.json"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Room for more than the mount's limit, so that EMFILE can only come from the mount.
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES + 256, hard))
    held: list[int] = []
    try:
        held.extend(os.open(value, os.O_RDONLY) for _ in range(OPEN_FILES))
        for path in (value, record):  # an unchanged value and a file read without the cache
            with pytest.raises(OSError, match="Too many open files") as caught:
                held.append(os.open(path, os.O_RDONLY))  # kept, to be closed, if it opens
            assert caught.value.errno == errno.EMFILE
        os.close(held.pop())
        held.append(os.open(value, os.O_RDONLY))
        assert os.read(held[-1], 100) == b"true\n"
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    # Every handle given back: the writer does not wait, and the value reads anew.
    value.write_text("false\n")
    assert value.read_text() == "false\n"
