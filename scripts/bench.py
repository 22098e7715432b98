"""`scripts/bench`: print lifecyclefs's speed beside its floors, measured in one run."""

from __future__ import annotations

import argparse
from pathlib import Path

import bench_fuse
import bench_store


def main() -> None:
    """Parse the command line and run the chosen benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tmpfs", type=Path, default=Path("/dev/shm"), help="a tmpfs directory")
    parser.add_argument("--disk", type=Path, default=Path("/var/tmp"), help="a disk directory")
    parser.add_argument("--count", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (the median is shown)")
    parser.add_argument("--containers", type=int, default=10_000, help="size of the big tree")
    parser.add_argument("--only", choices=["store", "fuse"], help="run one part only")
    parser.add_argument(
        "--baseline",
        default=bench_store.BASELINE,
        help="the commit the store is compared with (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.only != "fuse":
        bench_store.main(args.tmpfs, args.disk, args.count, args.rounds, args.baseline)
    if args.only != "store":
        bench_fuse.main(args.tmpfs, args.count, args.rounds, args.containers)


if __name__ == "__main__":
    main()
