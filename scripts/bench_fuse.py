"""Filesystem benchmark: lifecyclefs against a minimal pyfuse3 filesystem and direct access.

Run through `scripts/bench`. The floor is a pyfuse3 filesystem that serves constant
bytes at the same path depth with the same options (default_permissions, 1 s entry
and attribute timeouts, direct_io, no flush/getxattr/access handlers). Variants are
interleaved round by round and the median printed; FUSE latency depends on whether
daemon and client share a core, so the cat comparison runs both ways.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchlib import side_by_side

from store import Store, Timestamp
from store.values import render_started_at

REPO = Path(__file__).resolve().parent.parent
LIFECYCLEFS = str(Path(sys.executable).with_name("lifecyclefs"))
CONSTANT = b"2024-01-02T03:04:05.123456789Z\n"


def serve_floor(mountpoint: str) -> None:
    """The floor: `c1/started_at` with constant bytes; prints `ready` once live."""
    import pyfuse3  # noqa: PLC0415 - only the floor daemon needs it
    import trio  # noqa: PLC0415 - only the floor daemon needs it

    root, directory, file = pyfuse3.ROOT_INODE, pyfuse3.ROOT_INODE + 1, pyfuse3.ROOT_INODE + 2

    def attrs(inode: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.st_mode = 0o40700 if inode != file else 0o100600
        entry.st_nlink = 1
        entry.st_size = len(CONSTANT) if inode == file else 0
        entry.entry_timeout = entry.attr_timeout = 1.0
        return entry

    class Floor(pyfuse3.Operations):
        supports_dot_lookup = False

        async def lookup(
            self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
        ) -> pyfuse3.EntryAttributes:
            if (parent_inode, name) == (root, b"c1"):
                return attrs(directory)
            if (parent_inode, name) == (directory, b"started_at"):
                return attrs(file)
            raise pyfuse3.FUSEError(errno.ENOENT)

        async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
            return attrs(inode)

        async def open(
            self, inode: int, flags: int, ctx: pyfuse3.RequestContext
        ) -> pyfuse3.FileInfo:
            return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return CONSTANT[off : off + size]

        async def release(self, fh: int) -> None:
            return None

    pyfuse3.init(Floor(), mountpoint, set(pyfuse3.default_options) | {"fsname=floor"})

    async def run() -> None:
        async with trio.open_nursery() as nursery:

            async def announce() -> None:
                await trio.to_thread.run_sync(os.stat, os.path.join(mountpoint, "c1"))
                print("ready", flush=True)

            nursery.start_soon(announce)
            await pyfuse3.main()

    try:
        trio.run(run)
    finally:
        pyfuse3.close(unmount=False)


@contextmanager
def floor_mount(mountpoint: Path) -> Iterator[int]:
    """The floor filesystem mounted on `mountpoint`; yields its daemon's pid."""
    daemon = subprocess.Popen(
        [sys.executable, __file__, "--floor", str(mountpoint)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert daemon.stdout is not None
        if daemon.stdout.readline() != "ready\n":
            raise RuntimeError("the floor filesystem did not start")
        yield daemon.pid
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        daemon.wait(timeout=30)


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
        pidfd = os.pidfd_open(pid)
        subprocess.run([LIFECYCLEFS, "umount", str(mountpoint)], check=True)
        select.select([pidfd], [], [], 30)  # the daemon exits right after the unmount
        os.close(pidfd)


def cat(path: str) -> None:
    """open + read + close, the way `cat` does it (minus the process)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 4096)
    finally:
        os.close(fd)


def write_value(path: str, value: bytes) -> None:
    """open + write + close, the way `echo value > path` does it."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


def median_seconds(command: Callable[[], object], rounds: int) -> float:
    """Median wall time of `command`."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        command()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_mib(pid: int) -> float:
    """The resident set size of process `pid`, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@contextmanager
def pinned(pids: list[int], cpu: int | None) -> Iterator[None]:
    """Run the block with this process and `pids` on one CPU (None: leave them be)."""
    if cpu is None:
        yield
        return
    everyone = [0, *pids]
    before = {pid: os.sched_getaffinity(pid) for pid in everyone}
    for pid in everyone:
        for task in os.listdir(f"/proc/{pid if pid else os.getpid()}/task"):
            os.sched_setaffinity(int(task), {cpu})
    try:
        yield
    finally:
        for pid, cpus in before.items():
            for task in os.listdir(f"/proc/{pid if pid else os.getpid()}/task"):
                os.sched_setaffinity(int(task), cpus)


def bench_small_files(work: Path, count: int, rounds: int) -> None:
    """cat and write of one value file: ours against the floor and against the store."""
    source = work / "source"
    Store(source / "c1", create=True).update(started_at=Timestamp.parse(CONSTANT.decode().strip()))
    mounts = {name: work / name for name in ("floor", "ours", "ours-nodurable")}
    for path in mounts.values():
        path.mkdir()
    with (
        floor_mount(mounts["floor"]) as floor_pid,
        lifecyclefs_mount(source, mounts["ours"]) as our_pid,
        lifecyclefs_mount(source, mounts["ours-nodurable"], "-o", "nodurable"),
    ):
        floor_file = str(mounts["floor"] / "c1" / "started_at")
        our_file = str(mounts["ours"] / "c1" / "started_at")
        record = str(source / "c1" / "lifecycle.json")
        print(f"\n## cat of started_at: open + read + close, {count} x {rounds} rounds (median)")
        print(f"{'':<44}{'floor µs':>10}{'ours µs':>10}{'ratio':>8}{'direct µs':>11}")
        for label, cpu in (("daemon and client free to move", None), ("pinned to one CPU", 0)):
            with pinned([floor_pid, our_pid], cpu):
                figures = side_by_side(
                    {
                        "floor": lambda: cat(floor_file),
                        "ours": lambda: cat(our_file),
                        "direct": lambda: cat(record),
                    },
                    count,
                    rounds,
                )
            print(
                f"{label:<44}{figures['floor']:>10.1f}{figures['ours']:>10.1f}"
                f"{figures.ratio('ours', 'floor'):>7.2f}x{figures['direct']:>11.1f}"
            )

        store, fast_store = Store(source / "c1"), Store(source / "c1", durable=False)
        flips = {"n": 0}

        def flip() -> bytes:
            flips["n"] += 1
            return b"true\n" if flips["n"] % 2 else b"false\n"

        write_count = max(50, count // 10)
        figures = side_by_side(
            {
                "mount": lambda: write_value(str(mounts["ours"] / "c1" / "create_error"), flip()),
                "store": lambda: store.update(create_error=flips["n"] % 2 == 0),
                "mount nodurable": lambda: write_value(
                    str(mounts["ours-nodurable"] / "c1" / "create_error"), flip()
                ),
                "store nodurable": lambda: fast_store.update(create_error=flips["n"] % 2 == 0),
            },
            write_count,
            rounds,
        )
        print(f"\n## write of create_error: echo true > ... , {write_count} x {rounds} rounds")
        print(f"{'':<44}{'mount µs':>10}{'store µs':>10}{'ratio':>8}")
        for label, suffix in (("durable (fsync, the default)", ""), ("-o nodurable", " nodurable")):
            ours, direct = f"mount{suffix}", f"store{suffix}"
            print(
                f"{label:<44}{figures[ours]:>10.1f}{figures[direct]:>10.1f}"
                f"{figures.ratio(ours, direct):>7.2f}x"
            )


def bench_big_tree(work: Path, containers: int, rounds: int) -> None:
    """ls -l and reading every started_at of a big tree, through the mount and directly."""
    source = work / "big"
    stamp = Timestamp.now()
    for index in range(containers):
        Store(source / f"c{index:05d}", create=True, durable=False).update(started_at=stamp)
    mountpoint = work / "big-mnt"
    mountpoint.mkdir()
    names = sorted(os.listdir(source))

    def read_all_through(root: Path) -> None:
        for name in names:
            cat(str(root / name / "started_at"))

    def read_all_directly() -> None:
        for name in names:
            render_started_at(Store(source / name).snapshot())

    def ls(root: Path) -> None:
        subprocess.run(["ls", "-l", str(root)], stdout=subprocess.DEVNULL, check=True)

    with lifecyclefs_mount(source, mountpoint) as pid:
        ls(mountpoint)
        figures = {
            "ls mount": median_seconds(lambda: ls(mountpoint), rounds),
            "ls direct": median_seconds(lambda: ls(source), rounds),
            "read mount": median_seconds(lambda: read_all_through(mountpoint), rounds),
            "read direct": median_seconds(read_all_directly, rounds),
        }
        rss = rss_mib(pid)
    print(f"\n## {containers} containers (median of {rounds})")
    print(f"{'':<44}{'mount s':>10}{'direct s':>10}{'ratio':>8}")
    for label, key in (("ls -l of the tree", "ls"), ("read every started_at", "read")):
        ours, direct = figures[f"{key} mount"], figures[f"{key} direct"]
        print(f"{label:<44}{ours:>10.3f}{direct:>10.3f}{ours / direct:>7.2f}x")
    print(f"{'daemon RSS after that':<44}{rss:>10.1f} MiB (target: under 64 MiB)")


def main(tmpfs: Path, count: int, rounds: int, containers: int) -> None:
    """Run the filesystem benchmark with its state trees on `tmpfs`."""
    work = Path(tempfile.mkdtemp(prefix="lifecyclefs-bench-", dir=tmpfs))
    try:
        print("\n# Filesystem benchmark (state trees on tmpfs)")
        bench_small_files(work, count, rounds)
        bench_big_tree(work, containers, max(3, rounds // 2))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__" and sys.argv[1:2] == ["--floor"]:
    serve_floor(sys.argv[2])
