"""Filesystem benchmark: lifecyclefs against minimal pyfuse3 filesystems and direct access.

Run through `scripts/bench`. The floors are pyfuse3 filesystems that do nothing but
answer, at the same path depth and with the same options (default_permissions, entry
and attribute timeouts of an hour as ours where inotify watches, no flush or access
handlers): the *cache* floor serves constant bytes and answers every open with
`keep_cache` (what a `cat` of an unchanged value costs at best), the *direct* floor
serves them with direct_io (what every `cat` cost before), the *write* floor accepts
every write. Variants are interleaved round by round and the median printed; FUSE
latency depends on whether daemon and client share a core, so cat runs both ways.
The requests each operation sends are counted from a `--debug` mount's log.
"""

from __future__ import annotations

import collections
import errno
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchlib import LIFECYCLEFS, lifecyclefs_mount, rss_mib, side_by_side

from store import Store, Timestamp
from store.values import render_started_at

REPO = Path(__file__).resolve().parent.parent
CONSTANT = b"2024-01-02T03:04:05.123456789Z\n"
FLOORS = ("cache", "direct", "write", "write-acl")
TARGETS = {"cat": 1.2, "write": 1.5, "read all": 12.0, "ls": 1.5}


def serve_floor(kind: str, mountpoint: str) -> None:
    """A floor filesystem: `c1/started_at`; prints `ready` once live."""
    import pyfuse3  # noqa: PLC0415 - only the floor daemons need it
    import trio  # noqa: PLC0415 - only the floor daemons need it

    root, directory, file = pyfuse3.ROOT_INODE, pyfuse3.ROOT_INODE + 1, pyfuse3.ROOT_INODE + 2

    def attrs(inode: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.st_mode = 0o40700 if inode != file else 0o100600
        entry.st_nlink = 1
        entry.st_size = len(CONSTANT) if inode == file else 0
        entry.entry_timeout = entry.attr_timeout = 3600.0
        return entry

    class Floor(pyfuse3.Operations):
        supports_dot_lookup = False
        enable_acl = kind == "write-acl"

        async def lookup(
            self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
        ) -> pyfuse3.EntryAttributes:
            if (parent_inode, name) == (root, b"c1"):
                return attrs(directory)
            if parent_inode == directory and name in (b"started_at", b"create_error"):
                return attrs(file)
            raise pyfuse3.FUSEError(errno.ENOENT)

        async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
            return attrs(inode)

        async def open(
            self, inode: int, flags: int, ctx: pyfuse3.RequestContext
        ) -> pyfuse3.FileInfo:
            direct = kind != "cache" or flags & os.O_ACCMODE != os.O_RDONLY
            return pyfuse3.FileInfo(fh=inode, direct_io=direct, keep_cache=not direct)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return CONSTANT[off : off + size]

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            return len(buf)

        async def release(self, fh: int) -> None:
            return None

        if kind == "write-acl":

            async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
                if name.startswith(b"system.posix_acl_"):
                    raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
                raise pyfuse3.FUSEError(errno.EOPNOTSUPP)

    pyfuse3.init(Floor(), mountpoint, set(pyfuse3.default_options) | {f"fsname={kind}-floor"})

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
def floor_mount(kind: str, mountpoint: Path) -> Iterator[int]:
    """A floor filesystem mounted on `mountpoint`; yields its daemon's pid."""
    daemon = subprocess.Popen(
        [sys.executable, __file__, "--floor", kind, str(mountpoint)],
        stdout=subprocess.PIPE,
        text=True,
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
def debug_mount(source: Path, mountpoint: Path, log: Path) -> Iterator[Callable[[], list[str]]]:
    """lifecyclefs with --debug; yields a function returning the opcodes logged since."""
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [LIFECYCLEFS, "mount", "--debug", str(source), str(mountpoint)], stderr=out
        )
    seen = 0

    def since() -> list[str]:
        nonlocal seen
        time.sleep(0.2)  # the daemon writes its log after answering
        text = log.read_bytes().decode(errors="replace")
        opcodes = re.findall(r"opcode: ([A-Z_]+)", text)
        new, seen = opcodes[seen:], len(opcodes)
        return new

    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise RuntimeError("the --debug mount did not come up")
            time.sleep(0.05)
        yield since
    finally:
        subprocess.run([LIFECYCLEFS, "umount", str(mountpoint)], check=False)
        daemon.wait(timeout=30)


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


def verdict(ratio: float, target: float) -> str:
    """`(target ≤ Nx: met)` or `(target ≤ Nx: NOT met)`."""
    return f"(target ≤ {target}x: {'met' if ratio <= target else 'NOT met'})"


def bench_requests(work: Path) -> None:
    """The requests the daemon serves for each everyday operation, once caches are warm."""
    source = work / "requests-source"
    Store(source / "c1", create=True).update(started_at=Timestamp.now())
    mountpoint = work / "requests-mnt"
    mountpoint.mkdir()
    value = mountpoint / "c1" / "started_at"
    write = f"echo true > {mountpoint}/c1/create_error"
    burst = 20
    commands = {  # name: (command, how many operations it makes)
        "cat started_at": (["cat", str(value)], 1),
        "stat started_at": (["stat", str(value)], 1),
        "ls -l of a container": (["ls", "-l", str(mountpoint / "c1")], 1),
        "echo true > create_error": (["sh", "-c", write], 1),
        f"the same, {burst} back to back": (
            ["sh", "-c", f"for i in $(seq {burst}); do {write}; done"],
            burst,
        ),
    }
    print("\n## Requests the daemon serves per operation (warm caches; RELEASE is not waited for)")
    with debug_mount(source, mountpoint, work / "requests.log") as since:
        for name, (command, operations) in commands.items():
            for _ in range(3):  # warm: the first run looks things up, the second reads
                subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
            since()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
            counts = collections.Counter(since())
            waited = sum(n for opcode, n in counts.items() if opcode != "RELEASE") / operations
            shown = ", ".join(
                f"{opcode} {n / operations:.3g}" for opcode, n in sorted(counts.items())
            )
            print(f"{name:<32}{waited:>5.3g} waited for   ({shown})")


def bench_small_files(work: Path, count: int, rounds: int) -> None:
    """cat and write of one value file: ours against the floors, and against the store."""
    source, other = work / "source", work / "source-nodurable"
    for tree in (source, other):  # one each: a mount's writes would be news to the other
        Store(tree / "c1", create=True).update(
            started_at=Timestamp.parse(CONSTANT.decode().strip())
        )
    names = (*(f"{kind}-floor" for kind in FLOORS), "ours", "ours-nodurable")
    mounts = {name: work / name for name in names}
    for path in mounts.values():
        path.mkdir()
    with (
        floor_mount("cache", mounts["cache-floor"]) as cache_pid,
        floor_mount("direct", mounts["direct-floor"]) as direct_pid,
        floor_mount("write", mounts["write-floor"]),
        floor_mount("write-acl", mounts["write-acl-floor"]),
        lifecyclefs_mount(source, mounts["ours"]) as our_pid,
        lifecyclefs_mount(other, mounts["ours-nodurable"], "-o", "nodurable"),
    ):
        files = {name: str(mounts[name] / "c1" / "started_at") for name in names}
        record = str(source / "c1" / "lifecycle.json")
        print(f"\n## cat of started_at: open + read + close, {count} x {rounds} rounds (median)")
        print(f"{'':<34}{'cache fl.':>10}{'direct fl.':>11}{'ours':>8}{'ratio':>8}{'direct':>9}")
        for label, cpu in (("daemon and client free to move", None), ("pinned to one CPU", 0)):
            with pinned([cache_pid, direct_pid, our_pid], cpu):
                figures = side_by_side(
                    {
                        "cache": lambda: cat(files["cache-floor"]),
                        "direct floor": lambda: cat(files["direct-floor"]),
                        "ours": lambda: cat(files["ours"]),
                        "record": lambda: cat(record),
                    },
                    count,
                    rounds,
                )
            ratio = figures.ratio("ours", "cache")
            print(
                f"{label:<34}{figures['cache']:>9.1f}µ{figures['direct floor']:>10.1f}µ"
                f"{figures['ours']:>7.1f}µ{ratio:>7.2f}x{figures['record']:>8.1f}µ"
                f"  {verdict(ratio, TARGETS['cat'])}"
            )

        store, fast_store = Store(source / "c1"), Store(other / "c1", durable=False)
        flips = {"n": 0}

        def flip() -> bytes:
            flips["n"] += 1
            return b"true\n" if flips["n"] % 2 else b"false\n"

        def through(mount_name: str) -> Callable[[], None]:
            path = str(mounts[mount_name] / "c1" / "create_error")
            return lambda: write_value(path, flip())

        write_count = max(50, count // 10)
        figures = side_by_side(
            {
                "floor": through("write-floor"),
                "acl floor": through("write-acl-floor"),
                "mount nodurable": through("ours-nodurable"),
                "mount": through("ours"),
                "store nodurable": lambda: fast_store.update(create_error=flips["n"] % 2 == 0),
                "store": lambda: store.update(create_error=flips["n"] % 2 == 0),
            },
            write_count,
            rounds,
        )
        fsyncs = figures["store"] - figures["store nodurable"]
        extra = figures["mount"] - figures["mount nodurable"]
        ratio = figures.ratio("mount nodurable", "floor")
        acl_ratio = figures.ratio("mount nodurable", "acl floor")
        print(f"\n## write of create_error: echo true > ..., {write_count} x {rounds} rounds")
        print(f"write floor                       {figures['floor']:>8.1f} µs")
        print(
            f"write floor enforcing ACLs        {figures['acl floor']:>8.1f} µs"
            "  (the kernel then asks for security.capability at every O_TRUNC)"
        )
        print(
            f"ours, -o nodurable                {figures['mount nodurable']:>8.1f} µs"
            f"  {ratio:.2f}x the floor {verdict(ratio, TARGETS['write'])},"
            f" {acl_ratio:.2f}x the ACL floor"
        )
        print(
            f"ours, durable (default)           {figures['mount']:>8.1f} µs"
            f"  +{extra:.1f} µs over nodurable; the two fsyncs cost Store.update +{fsyncs:.1f} µs"
        )
        print(
            f"Store.update, durable / not       {figures['store']:>8.1f} / "
            f"{figures['store nodurable']:.1f} µs"
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
        read_all_through(mountpoint)
        figures = {
            "ls mount": median_seconds(lambda: ls(mountpoint), rounds),
            "ls direct": median_seconds(lambda: ls(source), rounds),
            "read mount": median_seconds(lambda: read_all_through(mountpoint), rounds),
            "read direct": median_seconds(read_all_directly, rounds),
        }
        rss = rss_mib(pid)
    print(f"\n## {containers} containers, caches warm (median of {rounds})")
    print(f"{'':<34}{'mount s':>10}{'direct s':>10}{'ratio':>8}")
    for label, key, target in (
        ("ls -l of the level", "ls", TARGETS["ls"]),
        ("read every started_at", "read", TARGETS["read all"]),
    ):
        ours, direct = figures[f"{key} mount"], figures[f"{key} direct"]
        ratio = ours / direct
        print(f"{label:<34}{ours:>10.3f}{direct:>10.3f}{ratio:>7.2f}x  {verdict(ratio, target)}")
    print(f"{'daemon RSS after that':<34}{rss:>10.1f} MiB (target: under 64 MiB)")


def main(tmpfs: Path, count: int, rounds: int, containers: int) -> None:
    """Run the filesystem benchmark with its state trees on `tmpfs`."""
    work = Path(tempfile.mkdtemp(prefix="lifecyclefs-bench-", dir=tmpfs))
    try:
        print("\n# Filesystem benchmark (state trees on tmpfs)")
        bench_requests(work)
        bench_small_files(work, count, rounds)
        bench_big_tree(work, containers, max(3, rounds // 2))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__" and sys.argv[1:2] == ["--floor"]:
    serve_floor(sys.argv[2], sys.argv[3])
