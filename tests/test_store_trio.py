"""The trio variants: same results, a contended lock waited for off the event loop."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from store import Lifecycle, LockTimeoutError, Store, Timestamp
from tests.processes import lock_held_elsewhere

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
