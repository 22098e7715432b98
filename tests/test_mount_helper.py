"""Standard mounting: `mount -t fuse.lifecyclefs`, fstab lines, and the helper's call.

fuse3's mount helper runs `lifecyclefs SOURCE MOUNTPOINT -o OPTIONS`; these tests go
through util-linux mount(8) and /sbin/mount.fuse3 for real, in a private mount
namespace (tests/namespace.py), with a scratch fstab, never /etc/fstab.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusefs.mount import lifecyclefs_mounts
from store import Store, Timestamp
from tests.conftest import LIFECYCLEFS, lifecyclefs, wait_for_exit
from tests.namespace import Namespace, private_mount_namespace
from tests.processes import notify_service, stop

STARTED = "2024-01-02T03:04:05.123456789+01:00"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """nerdctl's layout: containers/<namespace>/<id>, one started container."""
    root = tmp_path / "containers"
    Store(root / "default" / "c1", create=True).update(started_at=Timestamp.parse(STARTED))
    return root


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    """A private mount namespace where mount(8) finds `lifecyclefs`."""
    with private_mount_namespace() as made:
        yield made


def findmnt(namespace: Namespace, mountpoint: Path) -> list[str]:
    """`findmnt` lines (type and options) of what is mounted on `mountpoint` in there."""
    result = namespace.run("findmnt", "-n", "-o", "FSTYPE,OPTIONS", str(mountpoint))
    return result.stdout.splitlines()


def test_mount_t_fuse_lifecyclefs_mounts_and_umounts(
    namespace: Namespace, source: Path, mountpoint: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    result = namespace.run(
        "mount",
        "-t",
        "fuse.lifecyclefs",
        str(source),
        str(mountpoint),
        "-o",
        f"depth=2,allow_other,pid_file={pid_file}",
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    pid = int(pid_file.read_text())
    ((line),) = findmnt(namespace, mountpoint)
    fstype, options = line.split()
    assert fstype == "fuse.lifecyclefs"
    assert "allow_other" in options.split(",")
    shown = namespace.run("cat", str(mountpoint / "default" / "c1" / "started_at"))
    assert shown.stdout == f"{STARTED}\n"
    assert str(mountpoint) not in lifecyclefs_mounts(), "the test's namespace is private"

    result = namespace.run(LIFECYCLEFS, "umount", str(mountpoint))
    assert (result.returncode, result.stderr) == (0, "")
    assert wait_for_exit(pid, timeout=10)
    assert findmnt(namespace, mountpoint) == []


def test_an_fstab_line_mounts_with_its_options(
    namespace: Namespace, source: Path, mountpoint: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# a scratch fstab, as an operator writes /etc/fstab\n"
        f"{source} {mountpoint} fuse.lifecyclefs"
        f" depth=2,nofail,_netdev,x-systemd.requires=containerd.service,ro,noatime,nodev,"
        f"pid_file={pid_file} 0 0\n"
    )
    result = namespace.run("mount", "--fstab", str(fstab), str(mountpoint))
    assert (result.returncode, result.stderr) == (0, "")
    pid = int(pid_file.read_text())
    ((line),) = findmnt(namespace, mountpoint)
    assert {"ro", "noatime", "nodev"} <= set(line.split()[1].split(","))
    value = mountpoint / "default" / "c1" / "create_error"
    assert namespace.run("cat", str(value)).stdout == "false\n"
    refused = namespace.run("sh", "-c", f"echo true > {value}")
    assert "Read-only file system" in refused.stderr

    # mount -a at boot and again later: the line already mounted is left alone.
    result = namespace.run("mount", "-a", "--fstab", str(fstab))
    assert (result.returncode, result.stderr) == (0, "")
    assert len(findmnt(namespace, mountpoint)) == 1

    result = namespace.run("umount", str(mountpoint))
    assert (result.returncode, result.stderr) == (0, "")
    assert wait_for_exit(pid, timeout=10)
    assert findmnt(namespace, mountpoint) == []


HELPER_ONLY = "nofail,_netdev,defaults,x-gvfs-hide,comment=x,noauto,auto,user,users,nouser"
GENERIC = "rw,dev,suid,noexec,atime,noatime,relatime,lazytime,sync,async,dirsync,nosymfollow"


def test_the_helpers_call_mounts_and_takes_every_option_as_o(
    source: Path, mountpoint: Path, tmp_path: Path
) -> None:
    pid_file, log_file = tmp_path / "pid", tmp_path / "log"
    ours = f"depth=2,lock_timeout=3,nodurable,pid_file={pid_file},log_file={log_file}"
    # Exactly what /sbin/mount.fuse3 runs, with what mount(8) would have kept to itself.
    result = lifecyclefs(str(source), str(mountpoint), "-o", f"{GENERIC},{HELPER_ONLY},{ours}")
    assert (result.returncode, result.stderr) == (0, "")
    pid = int(pid_file.read_text())
    try:
        mounted = subprocess.run(
            ["findmnt", "-n", "-o", "OPTIONS", str(mountpoint)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert {"rw", "noexec", "noatime"} <= set(mounted.split(","))
        assert not {"nodev", "nosuid"} & set(mounted.split(","))
        assert (mountpoint / "default" / "c1" / "started_at").read_text() == f"{STARTED}\n"
        assert f"serving {source} on {mountpoint}" in log_file.read_text()
    finally:
        lifecyclefs("umount", str(mountpoint))
    assert wait_for_exit(pid, timeout=10)


@pytest.mark.parametrize("option", ["foreground", "debug"])
def test_foreground_and_debug_as_o_options(
    source: Path, mountpoint: Path, tmp_path: Path, option: str
) -> None:
    command = [LIFECYCLEFS, str(source), str(mountpoint), "-o", f"depth=2,{option}"]
    with notify_service(command, tmp_path / "notify") as daemon:
        assert (mountpoint / "default" / "c1" / "create_error").read_text() == "false\n"
        errors = stop(daemon, signal.SIGTERM)
    assert daemon.returncode == 0, errors
    assert "SIGTERM: unmounting" in errors
    assert ("opcode: OPEN" in errors) == (option == "debug")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("depth=0", "-o depth= needs a whole number of levels, at least 1, not '0'"),
        ("depth=two", "-o depth= needs a whole number of levels, at least 1, not 'two'"),
        ("depth=", "-o depth= needs a whole number of levels, at least 1"),
        ("pid_file", "-o pid_file= needs a file name"),
        ("ro=yes", "mount option 'ro' takes no value"),
        ("nofail,noexec,frobnicate", "unknown mount option 'frobnicate'"),
        ("lock_timeout=-1", "-o lock_timeout= needs a finite number of seconds (0: for ever)"),
    ],
)
def test_bad_o_options_are_one_line_and_exit_1(
    source: Path, mountpoint: Path, options: str, message: str
) -> None:
    for command in (["mount", str(source), str(mountpoint)], [str(source), str(mountpoint)]):
        result = lifecyclefs(*command, "-o", options, check=False)
        assert result.returncode == 1
        assert result.stderr.startswith(f"lifecyclefs: {message}")
        assert result.stderr.count("\n") == 1
    assert str(source / "c1") not in lifecyclefs_mounts()


def test_the_last_of_ro_and_rw_wins(source: Path, mountpoint: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    lifecyclefs(str(source), str(mountpoint), "-o", f"ro,depth=2,rw,pid_file={pid_file}")
    pid = int(pid_file.read_text())
    try:
        (mountpoint / "default" / "c1" / "create_error").write_text("true\n")
    finally:
        lifecyclefs("umount", str(mountpoint))
    assert wait_for_exit(pid, timeout=10)
    assert Store(source / "default" / "c1").load().create_error is True


def test_a_misspelt_command_is_still_a_usage_error(source: Path) -> None:
    result = lifecyclefs("frobnicate", check=False)
    assert result.returncode == 2
    assert "usage error" in result.stderr
    # Two operands, as the mount helper passes: still the typo it is, nothing mounted.
    result = lifecyclefs("gett", str(source / "c1"), check=False)
    assert result.returncode == 2
    assert "invalid choice: 'gett'" in result.stderr
    assert str(source / "c1") not in lifecyclefs_mounts()
