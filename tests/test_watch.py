"""`lifecyclefs watch`: the real command, its stdout read line by line through a pipe."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from store import Store, Timestamp
from store.atomic import TEMP_NAME
from tests.conftest import LIFECYCLEFS
from tests.processes import lock_held_elsewhere

RECORD = "lifecycle.json"
LINE_TIMEOUT = 10.0
"""How long a line may take (the promise is 100 ms; the machines are shared and slow)."""
BUFFERED_ENVIRONMENT = {
    name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"
}
"""A user's environment: Python buffers a pipe, so only the command's flushes show lines."""
T1 = Timestamp.parse("2024-01-02T04:04:05.123456789+01:00")


@dataclass
class Watch:
    """A running `lifecyclefs watch`, its stdout read through a pipe."""

    process: subprocess.Popen[bytes]
    pending: bytes = b""
    seen: list[dict[str, object]] = field(default_factory=list)

    def line(self, timeout: float = LINE_TIMEOUT) -> dict[str, object]:
        """The next line, as JSON; fail when none comes within `timeout`."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.process.stdout], [], [], max(remaining, 0))
            if not readable:
                raise AssertionError(f"no line within {timeout} s; so far: {self.seen}")
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"watch exited ({self.process.wait()}): {self.stop()}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        self.seen.append(json.loads(line))
        return self.seen[-1]

    def lines(self, count: int) -> list[dict[str, object]]:
        """The next `count` lines."""
        return [self.line() for _ in range(count)]

    def stop(self, signum: int | None = signal.SIGTERM) -> tuple[int, bytes, bytes]:
        """Signal it (unless `signum` is None) and wait for it to exit: its exit status,
        the stdout not read yet and its stderr."""
        if signum is not None and self.process.poll() is None:
            self.process.send_signal(signum)
        out, errors = self.process.communicate(timeout=30)
        return self.process.returncode, self.pending + out, errors


@pytest.fixture
def watch() -> Iterator[Callable[..., Watch]]:
    """Start `lifecyclefs watch ARGS...`; every one started is gone when the test ends."""
    started: list[Watch] = []

    def start(*arguments: str) -> Watch:
        process = subprocess.Popen(
            [LIFECYCLEFS, "watch", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=BUFFERED_ENVIRONMENT,
        )
        started.append(Watch(process))
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            os.kill(running.process.pid, signal.SIGCONT)  # in case a test left it stopped
            running.process.kill()
        running.process.wait(timeout=30)
        for stream in (running.process.stdout, running.process.stderr):
            if stream is not None:
                stream.close()


def state(
    path: str, started_at: str | None = None, create_error: bool = False
) -> dict[str, object]:
    return {"path": path, "started_at": started_at, "create_error": create_error}


def removed(path: str) -> dict[str, object]:
    return {"path": path, "removed": True}


def nerdctl_write(state_dir: Path, data: bytes) -> None:
    """Replace the record as nerdctl does: `.temp.lifecycle.json`, O_TRUNC, 0600, rename."""
    fd = os.open(state_dir / TEMP_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(state_dir / TEMP_NAME, state_dir / RECORD)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """containers/<namespace>/<id>: default/c1 never started, default/c2 with no record."""
    tree = tmp_path / "containers"
    Store(tree / "default" / "c1", create=True).update(create_error=False)
    Store(tree / "default" / "c2", create=True)
    return tree


def started(watch: Callable[..., Watch], source: Path) -> Watch:
    """A watch of `source` at depth 2 that has printed the state it starts from."""
    running = watch("--initial", "--depth", "2", str(source))
    assert running.line() == state("default/c1")
    return running


def test_every_kind_of_change_is_one_line(watch: Callable[..., Watch], source: Path) -> None:
    running = started(watch, source)
    c1, c2 = source / "default" / "c1", source / "default" / "c2"

    nerdctl_write(c1, b'{"started_at":"2024-01-02T04:04:05.123456789+01:00","create_error":false}')
    assert running.line() == state("default/c1", "2024-01-02T04:04:05.123456789+01:00")

    (c1 / RECORD).write_bytes(b'{"started_at":"2024-01-02T03:04:05Z","create_error":true}')
    assert running.line() == state("default/c1", "2024-01-02T03:04:05Z", create_error=True)

    Store(c2).update(started_at=T1)
    assert running.line() == state("default/c2", str(T1))

    (c1 / RECORD).unlink()
    assert running.line() == removed("default/c1")

    Store(source / "default" / "c3", create=True).update(create_error=True)
    assert running.line() == state("default/c3", create_error=True)
    shutil.rmtree(source / "default" / "c3")
    assert running.line() == removed("default/c3")

    shutil.rmtree(c2)
    assert running.line() == removed("default/c2")

    status, rest, errors = running.stop()
    assert (status, rest, errors) == (0, b"", b"")


def test_new_namespaces_and_containers_are_watched_as_they_appear(
    watch: Callable[..., Watch], source: Path
) -> None:
    running = started(watch, source)
    # makedirs and the first write follow each other closely: the new directories'
    # watches come after the record is there, and the record must not be missed.
    Store(source / "k8s.io" / "p1", create=True).update(create_error=True)
    assert running.line() == state("k8s.io/p1", create_error=True)
    Store(source / "k8s.io" / "p1").update(started_at=T1)
    assert running.line() == state("k8s.io/p1", str(T1), create_error=True)
    (source / "k8s.io" / "p2").mkdir()
    nerdctl_write(source / "k8s.io" / "p2", b"{}")
    assert running.line() == state("k8s.io/p2")
    os.rename(source / "k8s.io", source / "moby")
    assert sorted(running.lines(4), key=json.dumps) == sorted(
        [
            removed("k8s.io/p1"),
            removed("k8s.io/p2"),
            state("moby/p1", str(T1), create_error=True),
            state("moby/p2"),
        ],
        key=json.dumps,
    )
    assert running.stop()[:2] == (0, b"")


def test_the_same_state_is_never_printed_twice_in_a_row(
    watch: Callable[..., Watch], source: Path
) -> None:
    running = started(watch, source)
    c1 = source / "default" / "c1"
    same = (c1 / RECORD).read_bytes()
    nerdctl_write(c1, same)
    (c1 / RECORD).write_bytes(same)
    Store(c1).update(create_error=False)
    nerdctl_write(c1, b'{"create_error":false}')  # other bytes, the same state
    (c1 / TEMP_NAME).write_bytes(b"{")  # a temp file is not the record
    (c1 / "hostname").write_text("c1\n")  # nor is any other file of nerdctl's
    (source / "default" / ".hidden").mkdir()
    Store(source / "default" / ".hidden").update(create_error=True)
    Store(c1).update(create_error=True)
    assert running.line() == state("default/c1", create_error=True)
    status, rest, _ = running.stop()
    assert (status, rest) == (0, b"")


def test_a_change_shows_while_its_writer_still_holds_the_lock(
    watch: Callable[..., Watch], source: Path
) -> None:
    running = started(watch, source)
    c1 = source / "default" / "c1"
    with lock_held_elsewhere(c1):  # as nerdctl holds it while it writes
        nerdctl_write(c1, b'{"started_at":"2024-01-02T03:04:05Z","create_error":true}')
        assert running.line() == state("default/c1", "2024-01-02T03:04:05Z", create_error=True)


def test_a_corrupt_record_is_a_line_too(watch: Callable[..., Watch], source: Path) -> None:
    running = started(watch, source)
    c1 = source / "default" / "c1"
    (c1 / RECORD).write_bytes(b'{"started_at":')
    line = running.line()
    assert line.keys() == {"path", "error"}
    assert line["path"] == "default/c1"
    assert str(line["error"]).startswith(f"corrupt record {c1}/{RECORD}: not valid JSON")
    Store(c1).delete()
    assert running.line() == removed("default/c1")


def test_a_queue_overflow_reads_the_tree_again(watch: Callable[..., Watch], source: Path) -> None:
    Store(source / "default" / "c3").create()
    Store(source / "default" / "c3").update(create_error=True)
    running = started(watch, source)
    assert running.line() == state("default/c3", create_error=True)
    pid = running.process.pid
    os.kill(pid, signal.SIGSTOP)
    assert os.WIFSTOPPED(os.waitpid(pid, os.WUNTRACED)[1])
    try:
        # Each transform queues three events (the temp file's close and rename, the
        # record's rename): far more than the kernel's queue holds.
        queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        c1 = Store(source / "default" / "c1", durable=False)
        for count in range(queue // 3 + 1000):
            c1.update(create_error=count % 2 == 0)
        c1.update(started_at=T1, create_error=True)
        # Events past the overflow are lost: only reading the tree again finds these.
        shutil.rmtree(source / "default" / "c2")
        Store(source / "default" / "c3").delete()
        Store(source / "k8s.io" / "p1", create=True).update(started_at=T1)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert sorted(running.lines(3), key=json.dumps) == sorted(
        [
            state("default/c1", str(T1), create_error=True),
            removed("default/c3"),
            state("k8s.io/p1", str(T1)),
        ],
        key=json.dumps,
    )
    # Nothing was printed twice: the next line is the next change.
    Store(source / "k8s.io" / "p1").update(create_error=True)
    assert running.line() == state("k8s.io/p1", str(T1), create_error=True)
    assert running.stop()[:2] == (0, b"")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_it_exits_0_and_says_nothing(
    watch: Callable[..., Watch], source: Path, signum: int
) -> None:
    running = started(watch, source)
    assert running.stop(signum) == (0, b"", b"")


def test_a_reader_that_leaves_ends_it_quietly(watch: Callable[..., Watch], source: Path) -> None:
    running = started(watch, source)
    assert running.process.stdout is not None
    running.process.stdout.close()  # `lifecyclefs watch | head -1`
    Store(source / "default" / "c1").update(create_error=True)
    assert running.process.wait(timeout=30) == 0
    assert running.process.stderr is not None
    assert running.process.stderr.read() == b""


def inotify_watches(pid: int) -> int:
    """How many inotify watches process `pid` holds (from /proc/PID/fdinfo)."""
    total = 0
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            total += fdinfo.read_text().count("inotify wd:")
        except FileNotFoundError:
            continue  # closed meanwhile
    return total


def test_without_initial_only_changes_are_printed(
    watch: Callable[..., Watch], source: Path
) -> None:
    running = watch("--depth", "2", str(source))
    # Nothing is printed until something changes: wait for the watches instead
    # (SOURCE, default, c1, c2), c1's being the first container's.
    deadline = time.monotonic() + LINE_TIMEOUT
    while inotify_watches(running.process.pid) < 4:
        assert time.monotonic() < deadline, "the watches were never set up"
        time.sleep(0.01)
    Store(source / "default" / "c1").update(create_error=True)
    assert running.line() == state("default/c1", create_error=True)
    assert running.stop()[:2] == (0, b"")


def test_depth_1_paths_are_names(watch: Callable[..., Watch], tmp_path: Path) -> None:
    Store(tmp_path / "c1", create=True).update(started_at=T1)
    running = watch("--initial", str(tmp_path))
    assert running.line() == state("c1", str(T1))
    Store(tmp_path / "c1").update(create_error=True)
    assert running.line() == state("c1", str(T1), create_error=True)


def test_source_removed_is_one_line_and_exit_1(watch: Callable[..., Watch], tmp_path: Path) -> None:
    Store(tmp_path / "src" / "c1", create=True).update(create_error=True)
    running = watch("--initial", str(tmp_path / "src"))
    assert running.line() == state("c1", create_error=True)
    shutil.rmtree(tmp_path / "src")
    assert running.line() == removed("c1")
    status, rest, errors = running.stop(None)
    assert (status, rest) == (1, b"")
    assert errors == f"lifecyclefs: {tmp_path}/src was removed\n".encode()


def test_a_missing_source_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [LIFECYCLEFS, "watch", str(tmp_path / "gone")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"lifecyclefs: cannot open {tmp_path}/gone: No such file or directory\n"
