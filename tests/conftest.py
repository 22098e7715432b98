"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from fusefs.mount import lifecyclefs_mounts
from fusefs.mountlock import lock_directory

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden" / "nerdctl-v2.0.3"
OCI_STATE = DATA / "oci-state"


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for the test, always unmounted afterwards."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    # -n: mount(8) then keeps no record in /run/mount (nor makes that directory).
    options = ["-n", "-t", "tmpfs", "-o", "size=64k,mode=0700"]
    subprocess.run(["mount", *options, "lifecyclefs-test", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", "-n", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-n", "--lazy", str(mountpoint)], check=True)
            pytest.fail(f"{mountpoint} was busy at the end of the test")


def write_forever(file: BinaryIO) -> None:
    while True:
        file.write(b"\0" * 4096)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as file, pytest.raises(OSError, match="No space left"):
        write_forever(file)
    return filler


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An empty container state directory, 0700 as nerdctl makes it."""
    path = tmp_path / "state" / "default" / "c1"
    path.mkdir(parents=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


LIFECYCLEFS = str(Path(sys.executable).with_name("lifecyclefs"))
"""The installed console script, as users and OCI hooks run it."""


def lifecyclefs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `lifecyclefs ARGS...` and return what it did (raise if `check` and it failed)."""
    result = subprocess.run(
        [LIFECYCLEFS, *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"lifecyclefs {' '.join(args)}: {result.stderr.strip()}")
    return result


def lifecyclefs_to_a_gone_reader(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `lifecyclefs ARGS...` with stdout a pipe nobody reads (`... | head -0`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [LIFECYCLEFS, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@dataclass
class Mount:
    """A live lifecyclefs mount made by the `mount` fixture."""

    source: Path
    path: Path
    pid: int
    log: Path

    def log_lines(self) -> list[str]:
        """What the daemon has logged so far."""
        return self.log.read_text().splitlines()


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait for process `pid` (not necessarily our child) to end; say whether it did."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(pidfd)


def force_unmount(mountpoint: Path) -> None:
    """Detach a mount whatever state its daemon is in (test cleanup of last resort)."""
    subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, check=False)


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    """An empty directory to mount on by hand, never left mounted."""
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    if str(path) in lifecyclefs_mounts():
        force_unmount(path)
        pytest.fail(f"{path} was left mounted")


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """Mount a source tree: `mount(source, "--depth", "2", "-o", "ro")`.

    Every mount is unmounted and its daemon gone when the test ends, pass or fail; a
    daemon that does not exit after the unmount is killed and the test fails.
    """
    made: list[Mount] = []

    def make(source: Path, *options: str) -> Mount:
        index = len(made)
        mountpoint = tmp_path / f"mnt{index}"
        mountpoint.mkdir()
        pid_file, log_file = tmp_path / f"mnt{index}.pid", tmp_path / f"mnt{index}.log"
        lifecyclefs(
            "mount",
            str(source),
            str(mountpoint),
            "--pid-file",
            str(pid_file),
            "--log-file",
            str(log_file),
            *options,
        )
        made.append(Mount(source, mountpoint, int(pid_file.read_text()), log_file))
        return made[-1]

    yield make
    stragglers = []
    for live in made:
        if str(live.path) in lifecyclefs_mounts():
            lifecyclefs("umount", str(live.path), check=False)
        if not wait_for_exit(live.pid, timeout=10):
            os.kill(live.pid, signal.SIGKILL)
            stragglers.append(live.pid)
        if str(live.path) in lifecyclefs_mounts():
            force_unmount(live.path)
            stragglers.append(live.pid)
    assert not stragglers, f"daemons that did not stop on unmount: {stragglers}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite: no lifecyclefs mount of ours is left, even after failures.

    Nor a mount point's lock file; the lock directory goes if the suite made it.
    """
    locks = Path(lock_directory())
    locks_existed = locks.exists()
    yield
    base = str(tmp_path_factory.getbasetemp())
    leftovers = [path for path in lifecyclefs_mounts() if path.startswith(base)]
    for path in leftovers:
        force_unmount(Path(path))
    assert not leftovers, f"mounts left behind: {leftovers}"
    left_locks = sorted(locks.iterdir()) if locks.exists() else []
    if not locks_existed and not left_locks and locks.exists():
        locks.rmdir()
    assert not left_locks, f"lock files left behind: {left_locks}"
