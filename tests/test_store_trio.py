"""The trio variants: same results, a contended lock waited for off the event loop."""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from store import Lifecycle, LifecycleStoreError, LockTimeoutError, Store, Timestamp, locking
from store.fsinfo import fsync_is_free
from tests.processes import lock_held_elsewhere

T = TypeVar("T")

T0 = Timestamp.parse("2024-01-02T03:04:05.5+02:00")


def set_started(record: Lifecycle) -> None:
    record.started_at = T0


def lock_is_free(state_dir: Path) -> bool:
    probe = subprocess.run(["flock", "--nonblock", str(state_dir), "true"], check=False)
    return probe.returncode == 0


@pytest.mark.parametrize("durable", [True, False])
async def test_async_operations_match_the_sync_ones(state_dir: Path, durable: bool) -> None:
    store = Store(state_dir, durable=durable)
    assert await store.aload() == Lifecycle()
    written = await store.atransform(set_started)
    assert written.started_at == T0
    assert Store(state_dir).load() == written
    assert await store.adelete() is True
    assert await store.adelete() is False
    assert not (state_dir / "lifecycle.json").exists()


async def test_contended_transform_waits_without_blocking_the_loop(state_dir: Path) -> None:
    done = trio.Event()

    async def write() -> None:
        await Store(state_dir).atransform(set_started)
        done.set()

    async with trio.open_nursery() as nursery:
        with lock_held_elsewhere(state_dir):
            nursery.start_soon(write)
            ticks = 0
            with trio.move_on_after(0.3):
                while True:
                    await trio.sleep(0.01)
                    ticks += 1
            assert not done.is_set()
            assert ticks >= 10, "the event loop stalled while the lock was contended"
        with trio.fail_after(10):
            await done.wait()
    assert Store(state_dir).load().started_at == T0


async def test_cancelled_wait_leaves_no_lock_and_writes_nothing(state_dir: Path) -> None:
    store = Store(state_dir)
    with lock_held_elsewhere(state_dir):
        with trio.move_on_after(0.1) as scope:
            await store.atransform(set_started)
        assert scope.cancelled_caught
    assert lock_is_free(state_dir)
    assert not (state_dir / "lifecycle.json").exists()
    assert await store.aload() == Lifecycle()


async def test_async_lock_timeout_says_so(state_dir: Path) -> None:
    store = Store(state_dir, lock_timeout=0.05)
    with lock_held_elsewhere(state_dir), pytest.raises(LockTimeoutError, match=r"after 0\.05 s"):
        await store.aload()
    assert lock_is_free(state_dir)


class RunSyncSpy:
    """Stands in for trio.to_thread.run_sync and records the limiter of every call."""

    def __init__(self) -> None:
        self.limiters: list[object] = []
        self.real = trio.to_thread.run_sync

    async def __call__(self, fn: Callable[[], T], *, limiter: object = None) -> T:
        self.limiters.append(limiter)
        return await self.real(fn, limiter=limiter)  # type: ignore[arg-type]


@pytest.fixture
def disk_dir() -> Iterator[Path]:
    """A state directory on a filesystem where fsync costs something (not tmpfs)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as root:
        path = Path(root)
        fd = os.open(path, os.O_RDONLY)
        try:
            on_disk = not fsync_is_free(fd)
        finally:
            os.close(fd)
        assert on_disk, "/var/tmp must be on a disk filesystem for these tests"
        yield path


@pytest.fixture
def run_sync(monkeypatch: pytest.MonkeyPatch) -> RunSyncSpy:
    spy = RunSyncSpy()
    monkeypatch.setattr(trio.to_thread, "run_sync", spy)
    return spy


async def test_fsync_on_a_disk_runs_in_a_thread_of_the_given_limiter(
    disk_dir: Path, run_sync: RunSyncSpy
) -> None:
    limiter = trio.CapacityLimiter(1)
    store = Store(disk_dir)
    await store.atransform(set_started, limiter=limiter)
    await store.aupdate(create_error=True, limiter=limiter)
    await store.adelete(limiter=limiter)
    await store.aupdate(create_error=True)
    assert run_sync.limiters == [limiter, limiter, limiter, None]
    await store.aload()
    assert len(run_sync.limiters) == 4, "a load never needs a thread"


@pytest.mark.parametrize("durable", [True, False])
async def test_on_tmpfs_or_without_fsync_everything_runs_on_the_loop(
    tiny_tmpfs: Path, disk_dir: Path, run_sync: RunSyncSpy, durable: bool
) -> None:
    where = tiny_tmpfs if durable else disk_dir
    store = Store(where / "c1", create=True, durable=durable)
    await store.atransform(set_started)
    await store.aupdate(create_error=True)
    assert await store.aload() == Lifecycle(T0, True)
    assert await store.adelete() is True
    assert run_sync.limiters == []


async def test_waiting_for_the_lock_takes_no_thread(disk_dir: Path, run_sync: RunSyncSpy) -> None:
    limiter = trio.to_thread.current_default_thread_limiter()
    done = trio.Event()

    async def write() -> None:
        await Store(disk_dir).atransform(set_started)
        done.set()

    async with trio.open_nursery() as nursery:
        with lock_held_elsewhere(disk_dir):
            nursery.start_soon(write)
            for _ in range(20):
                await trio.sleep(0.01)
                assert limiter.borrowed_tokens == 0
                assert run_sync.limiters == []
            assert not done.is_set()
        with trio.fail_after(10):
            await done.wait()
    assert run_sync.limiters == [None]  # the durable write itself, on this disk


async def test_the_wait_retries_on_the_loop_at_growing_but_bounded_delays(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[tuple[float, float]] = []
    real_sleep = trio.sleep
    start = trio.current_time()

    async def recording_sleep(seconds: float) -> None:
        delays.append((seconds, trio.current_time() - start))
        await real_sleep(seconds)

    monkeypatch.setattr(trio, "sleep", recording_sleep)
    store = Store(state_dir, lock_timeout=0.5)
    with lock_held_elsewhere(state_dir), pytest.raises(LockTimeoutError):
        await store.aload()
    assert delays[0][0] == pytest.approx(50e-6)
    assert len(delays) > 5
    for (delay, waited), (next_delay, _) in itertools.pairwise(delays):
        assert next_delay <= max(2 * delay, 50e-6) + 1e-9
        assert next_delay <= max(50e-6, 0.1 * (waited + delay) + 0.01)
        assert next_delay <= 0.05


@given(delay=st.floats(0, 1), waited=st.floats(0, 3600))
def test_the_delays_start_small_double_and_stay_bounded(delay: float, waited: float) -> None:
    following = locking.next_delay(delay, waited)
    assert 50e-6 <= following <= 0.05
    assert following <= max(2 * delay, 50e-6)
    assert following <= max(50e-6, waited / 10) * (1 + 1e-9)


async def test_a_cancelled_wait_ends_promptly(state_dir: Path) -> None:
    store = Store(state_dir)
    with lock_held_elsewhere(state_dir):
        started = trio.current_time()
        with trio.move_on_after(0.2) as scope:
            await store.atransform(set_started)
        assert scope.cancelled_caught
        assert trio.current_time() - started < 1.0
    assert lock_is_free(state_dir)


async def test_cancelled_while_waiting_for_a_thread_leaves_no_lock(disk_dir: Path) -> None:
    limiter = trio.CapacityLimiter(1)
    await limiter.acquire()  # every thread of this limiter is taken
    try:
        with trio.move_on_after(0.2) as scope:
            await Store(disk_dir).atransform(set_started, limiter=limiter)
        assert scope.cancelled_caught
    finally:
        limiter.release()
    assert lock_is_free(disk_dir)
    assert not (disk_dir / "lifecycle.json").exists()


async def test_a_failing_function_leaves_no_lock(state_dir: Path, tiny_tmpfs: Path) -> None:
    def fail(record: Lifecycle) -> None:
        raise RuntimeError("boom")

    for where in (state_dir, tiny_tmpfs):
        with pytest.raises(LifecycleStoreError, match="boom"):
            await Store(where).atransform(fail)
        assert lock_is_free(where)
