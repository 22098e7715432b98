"""Load and soak: many readers and writers at once through a live mount, and long churn.

`scripts/soak` prints the figures the README quotes:

- load: 16 writers and 16 readers through the mount, and 4 nerdctl-style raw writers
  (flock, read, temp file, rename, as nerdctl's Go code does, each pausing 1 ms between
  updates) on the same 8 containers, for 60 s. Raw writers add one second to
  `started_at` per update, mount writers flip `create_error`: any write that clobbered
  the other field would lose a second.
  Every read must parse. Prints errors, lost updates and read/write latencies.
- churn: for 10 minutes, containers are created (through the mount and directly),
  written, read, listed and removed, while the daemon's descriptors and memory are
  sampled: both must stay flat.

Both run against a real mount on tmpfs and leave nothing behind.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path

from benchlib import lifecyclefs_mount, rss_mib

from store import Store, Timestamp
from store.values import FIELDS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the suite's stand-in for nerdctl's writer, shared with it
from tests.workers import nerdctl_bump  # noqa: E402 - needs the path above

ONE_SECOND = 1_000_000_000


@dataclass
class Figures:
    """What one kind of worker did."""

    operations: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Figures) -> None:
        """Fold another worker's figures into these."""
        self.operations += other.operations
        self.errors += other.errors
        self.latencies += other.latencies

    def percentile(self, share: float) -> float:
        """The latency (µs) below which `share` of the operations finished."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1e6


def _worker(
    kind: str,
    index: int,
    paths: dict[str, str],
    stop: Event,
    out: multiprocessing.Queue[tuple[str, Figures]],
) -> None:
    rng = random.Random(index)
    figures = Figures()
    containers = json.loads(paths["containers"])
    while not stop.is_set():
        name = rng.choice(containers)
        start = time.perf_counter()
        try:
            if kind == "raw":
                nerdctl_bump(os.path.join(paths["source"], name))
                time.sleep(float(paths["raw_pause"]))
            elif kind == "writer":
                with open(os.path.join(paths["mount"], name, "create_error"), "w") as file:
                    file.write(rng.choice(["true\n", "false\n"]))
            else:
                file_name = rng.choice(["started_at", "create_error", "lifecycle.json"])
                with open(os.path.join(paths["mount"], name, file_name), "rb") as file:
                    content = file.read().decode()
                if file_name == "lifecycle.json":
                    json.loads(content)
                else:
                    FIELDS[file_name].parse(content)
        except Exception as error:  # counted, reported by the parent
            figures.errors.append(f"{kind}: {type(error).__name__}: {error}")
            continue
        figures.latencies.append(time.perf_counter() - start)
        figures.operations += 1
    out.put((kind, figures))


def daemon_sample(pid: int) -> tuple[int, float]:
    """(open descriptors, RSS in MiB) of process `pid`."""
    return len(os.listdir(f"/proc/{pid}/fd")), rss_mib(pid)


@dataclass
class LoadResult:
    """What a load run saw."""

    seconds: float
    by_kind: dict[str, Figures]
    expected_seconds: int
    found_seconds: int

    @property
    def lost_updates(self) -> int:
        """Raw writers' updates missing from the records at the end."""
        return self.expected_seconds - self.found_seconds

    @property
    def errors(self) -> list[str]:
        """Every error any worker saw."""
        return [error for figures in self.by_kind.values() for error in figures.errors]


def run_load(
    work: Path,
    seconds: float,
    *,
    writers: int,
    readers: int,
    raw: int,
    containers: int,
    raw_pause: float = 0.0,
) -> LoadResult:
    """Readers, mount writers and raw writers on one mount for `seconds`."""
    source, mountpoint = work / "load-source", work / "load-mnt"
    names = [f"c{index:02d}" for index in range(containers)]
    for name in names:
        Store(source / name, create=True, durable=False).update(started_at=Timestamp(0))
    mountpoint.mkdir()
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    out: multiprocessing.Queue[tuple[str, Figures]] = context.Queue()
    paths = {
        "source": str(source),
        "mount": str(mountpoint),
        "containers": json.dumps(names),
        "raw_pause": str(raw_pause),
    }
    kinds = ["writer"] * writers + ["reader"] * readers + ["raw"] * raw
    with lifecyclefs_mount(source, mountpoint, "--depth", "1"):
        processes = [
            context.Process(target=_worker, args=(kind, index, paths, stop, out))
            for index, kind in enumerate(kinds)
        ]
        start = time.monotonic()
        for process in processes:
            process.start()
        time.sleep(seconds)  # the run's length, not a synchronisation
        stop.set()
        collected = [out.get(timeout=120) for _ in kinds]
        elapsed = time.monotonic() - start
        for process in processes:
            process.join(timeout=60)
    by_kind: dict[str, Figures] = {kind: Figures() for kind in ("writer", "reader", "raw")}
    for kind, figures in collected:
        by_kind[kind].add(figures)
    found = sum(Store(source / name).load().started_at.unix_ns // ONE_SECOND for name in names)
    return LoadResult(elapsed, by_kind, by_kind["raw"].operations, found)


def print_load(result: LoadResult, writers: int, readers: int, raw: int) -> None:
    """The load figures, as the README quotes them."""
    print(
        f"\n## Load: {writers} writers + {readers} readers through the mount, {raw} nerdctl-style"
    )
    print(f"raw writers (1 ms apart), {result.seconds:.0f} s, 8 containers on tmpfs, durable mount")
    print(f"{'':<28}{'ops':>9}{'ops/s':>9}{'p50 µs':>9}{'p99 µs':>9}{'errors':>8}")
    for kind, label in (
        ("reader", "reads through the mount"),
        ("writer", "writes through the mount"),
        ("raw", "nerdctl-style writes"),
    ):
        figures = result.by_kind[kind]
        print(
            f"{label:<28}{figures.operations:>9}{figures.operations / result.seconds:>9.0f}"
            f"{figures.percentile(0.5):>9.0f}{figures.percentile(0.99):>9.0f}{len(figures.errors):>8}"
        )
    print(f"lost updates: {result.lost_updates}")
    for error in result.errors[:10]:
        print(f"  {error}")


def run_churn(
    work: Path, seconds: float, interval: float
) -> tuple[int, list[tuple[float, int, float]]]:
    """Containers made, written, read, listed and removed for `seconds`; daemon samples."""
    source, mountpoint = work / "churn-source", work / "churn-mnt"
    (source / "default").mkdir(parents=True)
    mountpoint.mkdir()
    rng = random.Random(7)
    samples: list[tuple[float, int, float]] = []
    with lifecyclefs_mount(source, mountpoint, "--depth", "2") as pid:
        start = time.monotonic()
        next_sample = start
        serial = 0
        while (now := time.monotonic()) - start < seconds:
            if now >= next_sample:
                samples.append((now - start, *daemon_sample(pid)))
                next_sample += interval
            serial += 1
            name = f"c{serial}"
            if rng.random() < 0.5:
                (mountpoint / "default" / name).mkdir()
            else:
                Store(source / "default" / name, create=True)
            (mountpoint / "default" / name / "started_at").write_text("now\n")
            (mountpoint / "default" / name / "started_at").read_text()
            os.listdir(mountpoint / "default")
            existing = sorted(os.listdir(source / "default"))
            if len(existing) > 200:
                for victim in rng.sample(existing, 100):
                    shutil.rmtree(source / "default" / victim, ignore_errors=True)
        shutil.rmtree(source / "default")
        (source / "default").mkdir()
        os.listdir(mountpoint / "default")
        samples.append((time.monotonic() - start, *daemon_sample(pid)))
    return serial, samples


def print_churn(made: int, samples: list[tuple[float, int, float]]) -> None:
    """The churn figures: the daemon's descriptors and memory over time."""
    print(f"\n## Churn: {made} containers made, written, read, listed and removed")
    print(f"in {samples[-1][0]:.0f} s (at most 200 at a time), through a mount of depth 2")
    print(f"{'at s':>8}{'fds':>6}{'RSS MiB':>9}")
    for at, descriptors, rss in samples:
        print(f"{at:>8.0f}{descriptors:>6}{rss:>9.1f}")
    fds = [sample[1] for sample in samples[1:]]
    sizes = [sample[2] for sample in samples[1:]]
    print(f"descriptors {min(fds)}..{max(fds)}, RSS {min(sizes):.1f}..{max(sizes):.1f} MiB")


def main() -> None:
    """Parse the command line, run the load and the churn, print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of the load run")
    parser.add_argument("--churn-seconds", type=float, default=600, help="length of the churn")
    parser.add_argument("--tmpfs", type=Path, default=Path("/dev/shm"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lifecyclefs-soak-", dir=args.tmpfs))
    try:
        if args.seconds > 0:
            result = run_load(
                work, args.seconds, writers=16, readers=16, raw=4, containers=8, raw_pause=0.001
            )
            print_load(result, 16, 16, 4)
        if args.churn_seconds > 0:
            interval = max(1.0, args.churn_seconds / 10)
            print_churn(*run_churn(work, args.churn_seconds, interval=interval))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
