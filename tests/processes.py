"""Other processes a test needs: a lock holder like nerdctl, cleaned up whatever happens."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def lock_held_elsewhere(directory: Path) -> Iterator[None]:
    """While inside, util-linux flock(1), another process, holds `directory`'s lock.

    That is nerdctl's lock: flock(LOCK_EX) on the directory itself. The holder lets go
    when the block ends and is always reaped.
    """
    holder = subprocess.Popen(
        ["flock", str(directory), "-c", "echo locked; read -r _ || :"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        if holder.wait(timeout=10) != 0:
            raise AssertionError(f"flock(1) holder exited with {holder.returncode}")


def changes_made_in(
    directory: Path, command: list[str], calls: str, log: Path, stdin: bytes = b""
) -> list[str]:
    """The system calls among `calls` that `command` made in `directory`, in order.

    Traced with strace(1); each shown without pid, descriptor numbers or "= 0", and
    `directory` written D: `fsync(<D/.temp.lifecycle.json>`.
    """
    subprocess.run(
        ["strace", "-f", "-qq", "-y", "-e", f"trace={calls}", "-o", str(log), *command],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return [
        re.sub(r"^\d+ +|\d+(?=<)|\) += 0$", "", line).replace(str(directory), "D")
        for line in log.read_text().splitlines()
        if str(directory) in line
    ]


REPO = Path(__file__).resolve().parent.parent


def spawn_worker(kind: str, target: Path, count: int) -> subprocess.Popen[str]:
    """Start `python -m tests.workers KIND TARGET COUNT` and wait until it is ready."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.workers", kind, str(target), str(count)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    if worker.stdout.readline() != "ready\n":
        worker.kill()
        worker.wait()
        raise AssertionError(f"worker {kind} did not start")
    return worker


def run_workers(jobs: list[tuple[str, Path, int]], timeout: float = 120) -> None:
    """Run one worker per (kind, target, count), all released at the same moment.

    Every worker must exit 0; any left running (a failure) is killed and reaped.
    """
    workers: list[subprocess.Popen[str]] = []
    try:
        workers.extend(spawn_worker(kind, target, count) for kind, target, count in jobs)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            assert worker.wait(timeout=timeout) == 0, f"worker {worker.args!r} failed"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            for stream in (worker.stdin, worker.stdout):
                if stream is not None:
                    stream.close()


def stop(process: subprocess.Popen[str], signum: int) -> str:
    """Send `signum`, wait for the process to exit, and return its stderr."""
    process.send_signal(signum)
    _, errors = process.communicate(timeout=30)
    return errors


@contextmanager
def notify_service(command: list[str], socket_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Run `command` as systemd runs a Type=notify service: yield once it sends READY=1.

    Its stderr is captured (`stop` returns it); it is killed if still running after.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(socket_path))
        systemd.settimeout(30)
        service = subprocess.Popen(
            command,
            env={**os.environ, "NOTIFY_SOCKET": str(socket_path)},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert systemd.recv(64) == b"READY=1"
            yield service
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()
