"""One side of `scripts/bench`'s store comparison: the `store` found on PYTHONPATH.

`bench_store.py` runs this twice, once with our tree and once with the baseline commit's
first on PYTHONPATH, so that both sides run the same code against their own `store`:

- `python bench_store_worker.py serve`: reads one JSON request per line on stdin
  (`{"op": ..., "dir": ..., "count": ..., "round": ...}`) and answers one JSON line,
  `{"us": <µs per operation>}`;
- `python bench_store_worker.py contend DIR COUNT`: prints `ready`, waits for a line on
  stdin, does COUNT transforms that each add one second to `started_at`, then prints
  `{"start": ..., "end": ..., "cpu": ..., "switches": ...}`.

Only the API both versions share is used: `Store(path, durable=...)`, `load`,
`transform`, and `Lifecycle`'s two fields.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import sys
import time
from collections.abc import Callable

from store import Lifecycle, Store

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
EXTRA = b',"note":"kept"'
"""The key nerdctl does not know that the "extra key" records carry."""


def toggle(record: Lifecycle) -> None:
    """Flip `create_error`: a transform that changes one field."""
    record.create_error = not record.create_error


def bump(record: Lifecycle) -> None:
    """Add one second to `started_at` (the contention runs count them: no update lost)."""
    record.started_at = record.started_at.shifted(seconds=1)


def record_bytes(unique: int, *, extra: bool) -> bytes:
    """A record nerdctl could have written whose bytes no other `unique` gives."""
    seconds, nanos = divmod(unique, 1_000_000_000)
    minutes, seconds = divmod(seconds, 60)
    text = b'{"started_at":"2024-01-02T03:%02d:%02d.%09dZ","create_error":false' % (
        minutes % 60,
        seconds,
        nanos or 1,
    )
    return text + (EXTRA if extra else b"") + b"}"


def our_system_calls(state_dir: str) -> None:
    """This tree's transform of nerdctl's two keys reduced to its system calls: its floor."""
    dir_fd = os.open(state_dir, _DIR_FLAGS)
    fcntl.flock(dir_fd, fcntl.LOCK_EX)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    record_fd = os.open("lifecycle.json", flags, dir_fd=dir_fd)
    old = os.fstat(record_fd)
    data = os.read(record_fd, 4096)
    os.listxattr(record_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    temp_fd = os.open(".temp.lifecycle.json", flags, 0o600, dir_fd=dir_fd)
    os.fchown(temp_fd, old.st_uid, old.st_gid)
    os.fchmod(temp_fd, 0o600)
    os.write(temp_fd, data)
    os.close(temp_fd)
    os.rename(".temp.lifecycle.json", "lifecycle.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.close(dir_fd)
    os.close(record_fd)


def write_plainly(state_dir: str, data: bytes) -> None:
    """Write `lifecycle.json` without the store (setting up, not measured)."""
    with open(os.path.join(state_dir, "lifecycle.json"), "wb") as file:
        file.write(data)


def bare_transform(state_dir: str, *, durable: bool) -> None:
    """nerdctl's transform in plain Python, with or without its two fsyncs."""
    dir_fd = os.open(state_dir, _DIR_FLAGS)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        fd = os.open("lifecycle.json", os.O_RDONLY, dir_fd=dir_fd)
        try:
            data = json.loads(os.read(fd, 65536))
        finally:
            os.close(fd)
        data["create_error"] = not data["create_error"]
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = os.open(".temp.lifecycle.json", flags, 0o600, dir_fd=dir_fd)
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


class Server:
    """The state of one `serve` process: its stores, and a counter of unique records."""

    def __init__(self) -> None:
        self.unique = 1 + os.getpid() * 1_000_000
        self.stores: dict[tuple[str, bool], Store] = {}

    def store(self, state_dir: str, *, durable: bool) -> Store:
        """One Store per directory and durability, made once."""
        key = (state_dir, durable)
        if key not in self.stores:
            self.stores[key] = Store(state_dir, durable=durable)
        return self.stores[key]

    def fresh_dirs(self, root: str, count: int, *, extra: bool) -> list[str]:
        """`count` state directories under `root`, each holding a record never seen before."""
        dirs = []
        for index in range(count):
            state_dir = os.path.join(root, f"c{index}")
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            self.unique += 1
            write_plainly(state_dir, record_bytes(self.unique, extra=extra))
            dirs.append(state_dir)
        os.sync()  # no writeback of these during the measurement
        return dirs

    def handle(self, request: dict[str, object]) -> float:
        """Run one request; µs per operation."""
        op, state_dir, count = str(request["op"]), str(request["dir"]), int(str(request["count"]))
        timed: Callable[[], object]
        if op in ("load fresh", "load fresh, extra key"):
            stores = [
                self.store(path, durable=False)
                for path in self.fresh_dirs(state_dir, count, extra=op.endswith("key"))
            ]
            start = time.perf_counter()
            for store in stores:
                store.load()
            return (time.perf_counter() - start) / count * 1e6
        if op == "load again":
            timed = self.store(state_dir, durable=False).load
        elif op == "transform":
            store = self.store(state_dir, durable=False)
            timed = lambda: store.transform(toggle)  # noqa: E731 - one line each
        elif op == "transform durable":
            durable_store = self.store(state_dir, durable=True)
            timed = lambda: durable_store.transform(toggle)  # noqa: E731
        elif op == "system calls alone":
            timed = lambda: our_system_calls(state_dir)  # noqa: E731
        elif op == "bare transform":
            timed = lambda: bare_transform(state_dir, durable=False)  # noqa: E731
        elif op == "bare transform durable":
            timed = lambda: bare_transform(state_dir, durable=True)  # noqa: E731
        else:
            raise ValueError(f"unknown op {op!r}")
        start = time.perf_counter()
        for _ in range(count):
            timed()
        return (time.perf_counter() - start) / count * 1e6


def serve() -> None:
    """Answer requests on stdin until it closes."""
    server = Server()
    for line in sys.stdin:
        print(json.dumps({"us": server.handle(json.loads(line))}), flush=True)


def contend(state_dir: str, count: int) -> None:
    """One of the processes transforming one directory at once."""
    store = Store(state_dir, durable=False)
    print("ready", flush=True)
    sys.stdin.readline()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    for _ in range(count):
        store.transform(bump)
    end = time.monotonic()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    switches = after.ru_nvcsw + after.ru_nivcsw - before.ru_nvcsw - before.ru_nivcsw
    print(json.dumps({"start": start, "end": end, "cpu": cpu, "switches": switches}), flush=True)


def main(argv: list[str]) -> None:
    """`serve`, or `contend DIR COUNT`."""
    if argv[1] == "serve":
        serve()
    else:
        contend(argv[2], int(argv[3]))


if __name__ == "__main__":
    main(sys.argv)
