"""Worker processes for the concurrency tests: `python -m tests.workers KIND STATE_DIR N`.

Each worker prints `ready`, waits for a line on stdin (so that all of them start
contending at once), does its N operations, and exits 0.

- `bump`: N `Store.transform`s, each adding exactly one second to `started_at`.
- `nerdctl-bump`: the same through nerdctl's raw protocol (flock the directory, read,
  write `.temp.lifecycle.json` with O_TRUNC, rename), as a stand-in for nerdctl itself.
- `write-file`: N writes to a value file through a mount (STATE_DIR is the file's path),
  alternating `true` and `false`, each in its own open, write and close.
- `count`: loops forever adding one second and printing the new count after each commit
  (for the SIGKILL test); N is ignored.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys

from store import Lifecycle, Store, Timestamp

ONE_SECOND = 1_000_000_000


def bump(record: Lifecycle) -> None:
    """Add exactly one second to `started_at`, counting an unset time from the epoch."""
    start = Timestamp(0) if record.started_at.is_unset else record.started_at
    record.started_at = start.shifted(seconds=1)


def nerdctl_bump(state_dir: str) -> None:
    """One +1 s transform the way nerdctl v2.0.3's Go code does it (no fsync)."""
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        try:
            with open(os.path.join(state_dir, "lifecycle.json"), "rb") as file:
                data = json.loads(file.read())
        except FileNotFoundError:
            data = {}
        started = Timestamp.parse(data.get("started_at") or "0001-01-01T00:00:00Z")
        record = Lifecycle(started, bool(data.get("create_error")))
        bump(record)
        data["started_at"] = record.started_at.format()
        data["create_error"] = record.create_error
        temp = os.path.join(state_dir, ".temp.lifecycle.json")
        with open(temp, "w") as file:
            file.write(json.dumps(data, separators=(",", ":")))
        os.rename(temp, os.path.join(state_dir, "lifecycle.json"))
    finally:
        os.close(dir_fd)


def main(argv: list[str]) -> int:
    """Run the worker named by argv[1] on argv[2], argv[3] times."""
    kind, state_dir, count = argv[1], argv[2], int(argv[3])
    store = Store(state_dir, durable=kind == "count")
    print("ready", flush=True)
    sys.stdin.readline()
    if kind == "bump":
        for _ in range(count):
            store.transform(bump)
    elif kind == "nerdctl-bump":
        for _ in range(count):
            nerdctl_bump(state_dir)
    elif kind == "write-file":
        for index in range(count):
            with open(state_dir, "w") as file:
                file.write("true\n" if index % 2 == 0 else "false\n")
    elif kind == "count":
        while True:
            written = store.transform(bump)
            print(written.started_at.unix_ns // ONE_SECOND, flush=True)
    else:
        print(f"unknown worker kind {kind!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
