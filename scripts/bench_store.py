"""Store benchmark: load and transform against a bare loop of the same system calls.

Run through `scripts/bench`. Every figure is measured side by side in one run: the
variants are interleaved round by round and the median of the rounds is printed, so a
noisy neighbour slows all of them alike. nerdctl's Go figures (PROTOCOL.md, measured on
this kind of machine) are printed for reference only: no Go toolchain is needed here.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

from benchlib import side_by_side

from store import Lifecycle, Store, Timestamp, locking

NERDCTL_US = {"load": 25.0, "transform": 67.0}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def bare_load(state_dir: str) -> dict[str, object]:
    """The floor for load: open the directory, flock, read, json.loads, close."""
    dir_fd = os.open(state_dir, _DIR_FLAGS)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        fd = os.open("lifecycle.json", os.O_RDONLY, dir_fd=dir_fd)
        try:
            data: dict[str, object] = json.loads(os.read(fd, 65536))
        finally:
            os.close(fd)
        return data
    finally:
        os.close(dir_fd)


def bare_transform(state_dir: str, durable: bool) -> None:
    """The floor for transform: bare_load, json.dumps, write a temp file, rename."""
    dir_fd = os.open(state_dir, _DIR_FLAGS)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        fd = os.open("lifecycle.json", os.O_RDONLY, dir_fd=dir_fd)
        try:
            data = json.loads(os.read(fd, 65536))
        finally:
            os.close(fd)
        data["create_error"] = not data["create_error"]
        fd = os.open(
            ".temp.lifecycle.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=dir_fd
        )
        try:
            os.write(fd, json.dumps(data, separators=(",", ":")).encode())
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(".temp.lifecycle.json", "lifecycle.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if durable:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def toggle(record: Lifecycle) -> None:
    """A transform that changes one field."""
    record.create_error = not record.create_error


def _filelock_wait(
    fd: int, *, timeout: float | None = None, check_cancelled: Callable[[], None] | None = None
) -> None:
    from filelock import lock_descriptor  # noqa: PLC0415 - only this variant needs it

    lock_descriptor(fd, blocking=True)  # filelock's own wait: it sleeps 50 ms between tries


def _contend(
    kind: str, state_dir: str, count: int, barrier: Barrier, spans: multiprocessing.Queue[float]
) -> None:
    if kind == "filelock":
        locking.lock = _filelock_wait  # this forked worker's Store waits the filelock way
    store = Store(state_dir, durable=False, lock_timeout=3600 if kind == "polling" else None)
    barrier.wait()
    start = time.monotonic()
    for _ in range(count):
        if kind == "bare":
            bare_transform(state_dir, durable=False)
        else:
            store.transform(toggle)
    spans.put(start)
    spans.put(time.monotonic())


def contended_ops_per_second(kind: str, state_dir: str, processes: int, count: int) -> float:
    """Total transforms per second of `processes` processes on one directory."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    spans: multiprocessing.Queue[float] = context.Queue()
    workers = [
        context.Process(target=_contend, args=(kind, state_dir, count, barrier, spans))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    times = [spans.get(timeout=600) for _ in range(2 * processes)]
    for worker in workers:
        worker.join()
    return processes * count / (max(times) - min(times))


def bench_directory(label: str, root: Path, count: int, rounds: int) -> None:
    """Print load and transform figures for state directories under `root`."""
    state_dir = tempfile.mkdtemp(prefix="bench-", dir=root)
    try:
        store = Store(state_dir, durable=False)
        durable_store = Store(state_dir)
        store.update(started_at=Timestamp.now())
        figures = side_by_side(
            {
                "load": store.load,
                "bare load": lambda: bare_load(state_dir),
                "transform": lambda: store.transform(toggle),
                "bare transform": lambda: bare_transform(state_dir, durable=False),
            },
            count,
            rounds,
        )
        durable_count = max(20, count // 20)
        durable = side_by_side(
            {
                "transform durable": lambda: durable_store.transform(toggle),
                "bare transform durable": lambda: bare_transform(state_dir, durable=True),
            },
            durable_count,
            rounds,
        )
        print(f"\n## {label}: single process, {count} ops x {rounds} rounds (median)")
        print(f"{'operation':<24}{'µs/op':>10}{'ops/s':>10}{'bare µs':>10}{'ratio':>8}")
        for name, measured in (
            ("load", figures),
            ("transform", figures),
            ("transform durable", durable),
        ):
            ours, floor = measured[name], measured[f"bare {name}"]
            nerdctl = NERDCTL_US.get(name)
            note = f"   nerdctl ~{nerdctl:.0f} µs on tmpfs" if nerdctl else ""
            print(
                f"{name:<24}{ours:>10.1f}{1e6 / ours:>10.0f}{floor:>10.1f}"
                f"{measured.ratio(name, f'bare {name}'):>7.2f}x{note}"
            )
        print(f"\n## {label}: 8 processes transforming one directory (durable=False)")
        for kind, what, per_process in (
            ("kernel", "Store.transform (blocking flock, kernel-queued)", 500),
            ("bare", "bare loop", 500),
            ("polling", "Store.transform with lock_timeout (back-off polling)", 500),
            ("filelock", "Store.transform waiting with filelock.lock_descriptor", 20),
        ):
            rate = contended_ops_per_second(kind, state_dir, 8, per_process)
            print(f"{what:<56}{rate:>10.0f} ops/s  ({per_process} per process)")
    finally:
        for name in os.listdir(state_dir):
            os.unlink(os.path.join(state_dir, name))
        os.rmdir(state_dir)


def main(tmpfs: Path, disk: Path, count: int, rounds: int) -> None:
    """Run the store benchmark on a tmpfs and on a disk filesystem."""
    print("# Store benchmark (lifecycle.json, PROTOCOL.md's nerdctl figures for reference)")
    bench_directory(f"tmpfs ({tmpfs})", tmpfs, count, rounds)
    bench_directory(f"disk ({disk})", disk, count, rounds)
