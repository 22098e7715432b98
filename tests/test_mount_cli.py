"""`lifecyclefs mount` and `umount`: live on return, clean on signals, clear on errors."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fusefs.mount import lifecyclefs_mounts, unescape_mount_field
from fusefs.mountlock import lock_path
from store import Store, Timestamp
from tests.conftest import LIFECYCLEFS, Mount, lifecyclefs, wait_for_exit
from tests.processes import notify_service, stop


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A depth-1 tree with one started container."""
    root = tmp_path / "source"
    Store(root / "c1", create=True).update(started_at=Timestamp(0))
    return root


def test_mount_is_live_when_the_command_returns(
    source: Path, mountpoint: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    # The caller's stdout is a pipe: the command must return without the daemon holding it.
    result = subprocess.run(
        [LIFECYCLEFS, "mount", str(source), str(mountpoint), "--pid-file", str(pid_file)],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == b""
    assert result.stderr == b""
    pid = int(pid_file.read_text())
    try:
        assert str(mountpoint) in lifecyclefs_mounts()
        assert (mountpoint / "c1" / "started_at").read_text() == "1970-01-01T00:00:00Z\n"
    finally:
        lifecyclefs("umount", str(mountpoint))
    assert wait_for_exit(pid, timeout=10)
    assert str(mountpoint) not in lifecyclefs_mounts()
    assert not pid_file.exists()


def test_python_dash_m_fusefs_is_the_same_command(source: Path, mountpoint: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fusefs", "umount", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"lifecyclefs: {mountpoint} is not a lifecyclefs mount\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_foreground_mount_unmounts_cleanly_on_signal(
    source: Path, mountpoint: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    command = [LIFECYCLEFS, "mount", "-f", str(source), str(mountpoint)]
    with notify_service(command, tmp_path / "notify") as daemon:
        assert (mountpoint / "c1" / "create_error").read_text() == "false\n"
        errors = stop(daemon, signum)
    assert daemon.returncode == 0, errors
    assert str(mountpoint) not in lifecyclefs_mounts()
    assert f"{signum.name}: unmounting" in errors


def test_umount_clears_a_mount_whose_daemon_died(mount: Callable[..., Mount], source: Path) -> None:
    live = mount(source)
    os.kill(live.pid, signal.SIGKILL)
    assert wait_for_exit(live.pid, timeout=10)
    with pytest.raises(OSError, match="not connected"):
        os.listdir(live.path)
    lifecyclefs("umount", str(live.path))
    assert str(live.path) not in lifecyclefs_mounts()
    assert os.listdir(live.path) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{tmp}/missing", "{mnt}"], "source {tmp}/missing is not a directory"),
        (["{src}", "{tmp}/missing"], "mount point {tmp}/missing is not a directory"),
        (["{src}", "{src}/c1"], "mount point {src}/c1 is not empty"),
        (["{src}", "{full}"], "mount point {full} is not empty"),
        (["{tmp}", "{mnt}"], "mount point {mnt} is inside source {tmp}"),
        (["-o", "bogus", "{src}", "{mnt}"], "unknown mount option 'bogus'"),
        (["-o", "lock_timeout=soon", "{src}", "{mnt}"], "-o lock_timeout= needs a finite number"),
        (["-o", "lock_timeout=nan", "{src}", "{mnt}"], "-o lock_timeout= needs a finite number"),
    ],
)
def test_mount_errors_are_one_line_and_exit_1(
    source: Path, mountpoint: Path, tmp_path: Path, arguments: list[str], message: str
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").touch()
    names = {"tmp": tmp_path, "src": source, "mnt": mountpoint, "full": full}
    result = lifecyclefs("mount", *(a.format(**names) for a in arguments), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"lifecyclefs: {message.format(**names)}")
    assert result.stderr.count("\n") == 1
    assert str(mountpoint) not in lifecyclefs_mounts()


def test_busy_mount_point_is_refused(mount: Callable[..., Mount], source: Path) -> None:
    live = mount(source)
    result = lifecyclefs("mount", str(source), str(live.path), check=False)
    assert result.returncode == 1
    assert (
        result.stderr == f"lifecyclefs: mount point {live.path} is busy: a filesystem is mounted\n"
    )


def mount_in_private_namespace(setup: str, source: Path, mountpoint: Path) -> tuple[int, str]:
    """`lifecyclefs mount` in a private mount namespace prepared by the shell `setup`."""
    script = f'{setup} && exec "$0" mount "$1" "$2"'
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    result = subprocess.run(
        [*unshare, LIFECYCLEFS, str(source), str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stderr


def test_missing_dev_fuse_is_refused_before_forking(source: Path, mountpoint: Path) -> None:
    status, errors = mount_in_private_namespace("mount -n -t tmpfs none /dev", source, mountpoint)
    assert status == 1
    assert errors == "lifecyclefs: no /dev/fuse on this machine: load the fuse kernel module\n"


def test_a_mount_refused_by_the_kernel_is_one_line_too(source: Path, mountpoint: Path) -> None:
    # /dev/fuse is /dev/null there: libfuse's mount fails after the checks passed.
    setup = "mount -n --bind /dev/null /dev/fuse"
    status, errors = mount_in_private_namespace(setup, source, mountpoint)
    assert status == 1
    assert errors == (
        f"lifecyclefs: cannot mount on {mountpoint}: fuse: mount failed: Invalid argument\n"
    )


def test_usage_errors_exit_2(source: Path, mountpoint: Path) -> None:
    for arguments in (["mount", str(source)], ["frobnicate"], ["mount", "--depth", "x"]):
        result = lifecyclefs(*arguments, check=False)
        assert result.returncode == 2
        assert "usage error" in result.stderr
    result = lifecyclefs("mount", "--depth", "0", str(source), str(mountpoint), check=False)
    assert result.returncode == 1
    assert result.stderr == "lifecyclefs: --depth must be at least 1\n"


def test_umount_of_something_else_is_refused(mountpoint: Path) -> None:
    result = lifecyclefs("umount", str(mountpoint), check=False)
    assert result.returncode == 1
    assert result.stderr == f"lifecyclefs: {mountpoint} is not a lifecyclefs mount\n"


def test_debug_logs_every_request_in_the_foreground(
    source: Path, mountpoint: Path, tmp_path: Path
) -> None:
    command = [LIFECYCLEFS, "mount", "--debug", str(source), str(mountpoint)]
    with notify_service(command, tmp_path / "notify") as daemon:
        assert (mountpoint / "c1" / "create_error").read_text() == "false\n"
        errors = stop(daemon, signal.SIGTERM)
    assert daemon.returncode == 0
    assert "opcode: OPEN" in errors
    assert "opcode: READ" in errors


def test_a_symlinked_source_is_resolved_once_at_mount(
    mount: Callable[..., Mount], source: Path, tmp_path: Path
) -> None:
    # A data root moved to another disk, reached through a symlink.
    link = tmp_path / "data-root"
    link.symlink_to(source)
    live = mount(link)
    assert (live.path / "c1" / "started_at").read_text() == "1970-01-01T00:00:00Z\n"
    # Pointing the link elsewhere later changes nothing for the mount.
    elsewhere = tmp_path / "elsewhere"
    Store(elsewhere / "c2", create=True).update(create_error=True)
    link.unlink()
    link.symlink_to(elsewhere)
    assert os.listdir(live.path) == ["c1"]


def test_a_source_whose_path_holds_a_comma_or_a_backslash_mounts(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    # libfuse splits its options at commas: the path must reach it escaped.
    source = tmp_path / "data,root\\x"
    Store(source / "c1", create=True).update(started_at=Timestamp(0))
    live = mount(source)
    assert (live.path / "c1" / "started_at").read_text() == "1970-01-01T00:00:00Z\n"
    with open("/proc/self/mountinfo") as file:
        sources = [
            unescape_mount_field(line.partition(" - ")[2].split(" ")[1])
            for line in file
            if unescape_mount_field(line.split(" ")[4]) == str(live.path)
        ]
    assert sources == [str(source)]


def test_the_daemon_raises_its_descriptor_limit_to_the_hard_limit(
    source: Path, mountpoint: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    command = [LIFECYCLEFS, "mount", str(source), str(mountpoint), "--pid-file", str(pid_file)]
    subprocess.run(["prlimit", "--nofile=64:4096", *command], check=True, timeout=30)
    pid = int(pid_file.read_text())
    try:
        limits = subprocess.run(
            ["prlimit", f"--pid={pid}", "--nofile", "--raw", "--noheadings", "-o", "SOFT,HARD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert limits == ["4096", "4096"]
    finally:
        lifecyclefs("umount", str(mountpoint))
    assert wait_for_exit(pid, timeout=10)


def test_umount_right_after_the_daemon_died_with_a_file_held_open(
    mount: Callable[..., Mount], source: Path
) -> None:
    live = mount(source)
    held = open(live.path / "c1" / "started_at", "rb")  # noqa: SIM115 - held across the kill
    try:
        os.stat(live.path)  # the kernel now has the mount's attributes cached for a while
        os.kill(live.pid, signal.SIGKILL)
        assert wait_for_exit(live.pid, timeout=10)
        result = lifecyclefs("umount", str(live.path), check=False)
        assert (result.returncode, result.stderr) == (0, "")
        assert str(live.path) not in lifecyclefs_mounts()
        assert os.listdir(live.path) == []
        assert not os.path.exists(lock_path(str(live.path)))
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: its mount is gone
            held.close()


def start_together(commands: list[list[str]]) -> list[subprocess.Popen[str]]:
    """Start every command, each waiting on its stdin; release them all at one moment."""
    started = [
        subprocess.Popen(
            ["sh", "-c", 'read -r _ && exec "$@"', "sh", *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    for process in started:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    return started


def test_two_mounts_at_once_on_one_mountpoint_exactly_one_mounts(
    source: Path, mountpoint: Path, tmp_path: Path
) -> None:
    for attempt in range(6):
        pid_files = [tmp_path / f"pid-{attempt}-{index}" for index in range(2)]
        racers = start_together(
            [
                [LIFECYCLEFS, "mount", str(source), str(mountpoint), "--pid-file", str(pid_file)]
                for pid_file in pid_files
            ]
        )
        try:
            errors = [racer.communicate(timeout=60)[1] for racer in racers]
            outcomes = sorted(zip(errors, [racer.returncode for racer in racers], strict=True))
        finally:
            daemons = [int(pid_file.read_text()) for pid_file in pid_files if pid_file.exists()]
            mounted = lifecyclefs_mounts().count(str(mountpoint))
            for _ in range(mounted):
                lifecyclefs("umount", str(mountpoint))
            for daemon in daemons:
                assert wait_for_exit(daemon, timeout=10)
        assert (mounted, len(daemons)) == (1, 1)
        (said, won), (complaint, lost) = outcomes
        assert (said, won) == ("", 0)
        assert lost == 1
        assert re.fullmatch(f"lifecyclefs: mount point {mountpoint} is busy: [^\n]*\n", complaint)
        assert not os.path.exists(lock_path(str(mountpoint)))
