"""What the benchmarks and soak runs share: variants timed side by side, and a live mount."""

from __future__ import annotations

import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LIFECYCLEFS = str(Path(sys.executable).with_name("lifecyclefs"))


@dataclass(frozen=True)
class Figures:
    """µs per operation of each variant, one sample per round."""

    samples: dict[str, list[float]]

    def __getitem__(self, name: str) -> float:
        """The median µs/op of variant `name`."""
        return statistics.median(self.samples[name])

    def ratio(self, name: str, floor: str) -> float:
        """The median over rounds of `name`'s time divided by `floor`'s in the same round.

        Both were measured seconds apart, so a noisy neighbour that slows one round
        slows both sides of its ratio alike.
        """
        pairs = zip(self.samples[name], self.samples[floor], strict=True)
        return statistics.median(ours / base for ours, base in pairs)


def side_by_side(variants: dict[str, Callable[[], object]], count: int, rounds: int) -> Figures:
    """Time `count` calls of each variant per round, the variants interleaved.

    A tenth of `count` calls of each warms caches first.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for op in variants.values():
        for _ in range(max(1, count // 10)):
            op()
    for _ in range(rounds):
        for name, op in variants.items():
            start = time.perf_counter()
            for _ in range(count):
                op()
            samples[name].append((time.perf_counter() - start) / count * 1e6)
    return Figures(samples)


def wait_for_exit(pid: int) -> None:
    """Wait for process `pid` (not our child) to end."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    select.select([pidfd], [], [], 30)
    os.close(pidfd)


@contextmanager
def lifecyclefs_mount(source: Path, mountpoint: Path, *options: str) -> Iterator[int]:
    """lifecyclefs mounted on `mountpoint`; yields its daemon's pid."""
    pid_file = mountpoint.with_suffix(".pid")
    subprocess.run(
        [LIFECYCLEFS, "mount", str(source), str(mountpoint), "--pid-file", str(pid_file), *options],
        check=True,
    )
    pid = int(pid_file.read_text())
    try:
        yield pid
    finally:
        subprocess.run([LIFECYCLEFS, "umount", str(mountpoint)], check=True)
        wait_for_exit(pid)


def rss_mib(pid: int) -> float:
    """The resident set size of process `pid`, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
