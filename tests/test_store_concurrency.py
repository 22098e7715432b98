"""Many writers on one state directory: processes, threads, nerdctl's raw protocol, crashes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from store import Lifecycle, Store, Timestamp
from tests.processes import lock_held_elsewhere, run_workers, spawn_worker
from tests.workers import ONE_SECOND, bump

T0 = Timestamp.parse("2024-01-02T03:04:05Z")


def seconds_since_epoch(state_dir: Path) -> int:
    started_at = Store(state_dir).load().started_at
    assert started_at.unix_ns % ONE_SECOND == 0
    return started_at.unix_ns // ONE_SECOND


def test_eight_processes_lose_no_update(state_dir: Path) -> None:
    run_workers([("bump", state_dir, 300)] * 8)
    assert seconds_since_epoch(state_dir) == 8 * 300


def test_store_and_nerdctl_protocol_writers_lose_no_update(state_dir: Path) -> None:
    run_workers([("bump", state_dir, 300), ("nerdctl-bump", state_dir, 300)] * 4)
    assert seconds_since_epoch(state_dir) == 8 * 300


def test_eight_threads_lose_no_update(state_dir: Path) -> None:
    shared = Store(state_dir, durable=False)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(store: Store) -> None:
        try:
            start.wait()
            for _ in range(300):
                store.transform(bump)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    stores = [shared] * 4 + [Store(state_dir, durable=False) for _ in range(4)]
    threads = [threading.Thread(target=work, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert seconds_since_epoch(state_dir) == 8 * 300


def test_lock_held_by_another_process_blocks_transform(state_dir: Path) -> None:
    finished = threading.Event()

    def transform() -> None:
        Store(state_dir).update(started_at=T0)
        finished.set()

    with lock_held_elsewhere(state_dir):
        writer = threading.Thread(target=transform)
        writer.start()
        assert not finished.wait(timeout=0.3), "transform ran while the lock was held"
        assert not (state_dir / "lifecycle.json").exists()
    writer.join(timeout=10)
    assert finished.is_set()
    assert Store(state_dir).load().started_at == T0


def test_our_lock_blocks_another_process(state_dir: Path) -> None:
    inside = threading.Event()
    release = threading.Event()

    def hold(record: Lifecycle) -> None:
        record.started_at = T0
        inside.set()
        assert release.wait(timeout=30)

    writer = threading.Thread(target=lambda: Store(state_dir).transform(hold))
    writer.start()
    try:
        assert inside.wait(timeout=10)
        probe = subprocess.run(["flock", "--nonblock", str(state_dir), "true"], check=False)
        assert probe.returncode == 1, "flock(1) got the lock while we held it"
        reader = subprocess.Popen(
            ["flock", str(state_dir), "cat", str(state_dir / "lifecycle.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        with pytest.raises(subprocess.TimeoutExpired):
            reader.wait(timeout=0.3)
    finally:
        release.set()
        writer.join(timeout=10)
    output, _ = reader.communicate(timeout=10)
    assert reader.returncode == 0
    assert output == b'{"started_at":"2024-01-02T03:04:05Z","create_error":false}'


def test_writer_killed_at_random_moments_never_corrupts_the_record(state_dir: Path) -> None:
    rng = random.Random(20241130)
    Store(state_dir).update(started_at=Timestamp(0))
    for _ in range(100):
        before = seconds_since_epoch(state_dir)
        worker = spawn_worker("count", state_dir, 0)
        try:
            assert worker.stdin is not None
            assert worker.stdout is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
            lines = [worker.stdout.readline() for _ in range(rng.randrange(1, 30))]
            worker.send_signal(signal.SIGKILL)
            reported = [int(line) for line in "".join(lines).split() + worker.stdout.read().split()]
        finally:
            worker.kill()
            worker.wait()
            for stream in (worker.stdin, worker.stdout):
                if stream is not None:
                    stream.close()
        assert worker.returncode == -signal.SIGKILL
        assert reported[0] == before + 1
        committed = reported[-1]
        after = seconds_since_epoch(state_dir)  # raises if the record is not valid
        assert after in (committed, committed + 1), (before, committed, after)
    assert set(os.listdir(state_dir)) <= {"lifecycle.json", ".temp.lifecycle.json"}
