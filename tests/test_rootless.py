"""Rootless: an unprivileged user mounts, reads and writes its own state tree (issue 8.4).

Rootless nerdctl keeps its state under ~/.local/share/nerdctl/<hash>/containers. The
user here is `nobody`, through setpriv; its home is a directory of the test's that
nobody can reach (pytest's tmp_path is root's alone). A user's mount goes through
setuid fusermount3, which needs /dev/fuse open to users: udev makes it 0666, and these
machines have no udev, so the tests open it up for their run and put it back.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fusefs.mount import lifecyclefs_mounts
from store import Lifecycle, Store, Timestamp
from tests.conftest import LIFECYCLEFS, force_unmount, wait_for_exit

NOBODY = 65534
FUSE_CONF = Path("/etc/fuse.conf")
DEBIAN_FUSE_CONF = "# Allow non-root users to specify the allow_other option.\n#user_allow_other\n"


@pytest.fixture
def home() -> Iterator[Path]:
    """nobody's home for the test, with nothing of it left afterwards (mounts included)."""
    path = Path(tempfile.mkdtemp(prefix="lifecyclefs-nobody-"))
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        left = [mount for mount in lifecyclefs_mounts() if mount.startswith(f"{path}/")]
        for mount in left:
            force_unmount(Path(mount))
        shutil.rmtree(path)
        assert not left, f"mounts left behind: {left}"


@contextmanager
def dev_fuse_mode(mode: int) -> Iterator[None]:
    """/dev/fuse with `mode` while inside; its own mode back afterwards."""
    saved = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", mode)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", saved)


@pytest.fixture
def dev_fuse_open_to_users() -> Iterator[None]:
    """/dev/fuse 0666 for the test, as udev makes it."""
    with dev_fuse_mode(0o666):
        yield


@contextmanager
def fuse_conf(text: str) -> Iterator[None]:
    """/etc/fuse.conf holding `text` while inside; put back exactly afterwards."""
    saved = FUSE_CONF.read_bytes() if FUSE_CONF.exists() else None
    FUSE_CONF.write_text(text)
    try:
        yield
    finally:
        if saved is None:
            FUSE_CONF.unlink()
        else:
            FUSE_CONF.write_bytes(saved)


def as_nobody(
    home: Path, *command: str | Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run `command` as nobody, with a login's environment for `home`."""
    runtime = home / "run"
    if not runtime.exists():
        runtime.mkdir(mode=0o700)
        os.chown(runtime, NOBODY, NOBODY)
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i"]
        + [f"HOME={home}", f"XDG_RUNTIME_DIR={runtime}", "PATH=/usr/bin:/bin"]
        + [str(part) for part in command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def state_tree(home: Path) -> Path:
    """Rootless nerdctl's containers directory, made by nobody."""
    tree = home / ".local" / "share" / "nerdctl" / "1935db59" / "containers"
    assert as_nobody(home, "mkdir", "-p", tree / "default").returncode == 0
    return tree


def oci_state(state_dir: Path) -> str:
    """The OCI state a runtime gives a hook, for a container of `state_dir`."""
    return json.dumps(
        {"ociVersion": "1.0.2", "id": "c1", "status": "created", "bundle": "/nonexistent"}
        | {"annotations": {"nerdctl/state-dir": str(state_dir)}}
    )


def test_a_user_mounts_reads_writes_and_unmounts_its_own_state_tree(
    home: Path, dev_fuse_open_to_users: None
) -> None:
    c1 = state_tree(home) / "default" / "c1"
    before = Timestamp.now()
    hook = as_nobody(
        home, LIFECYCLEFS, "oci-hook", "--strict", "createRuntime", stdin=oci_state(c1)
    )
    assert (hook.returncode, hook.stderr) == (0, "")
    assert (c1.stat().st_uid, stat.S_IMODE(c1.stat().st_mode)) == (NOBODY, 0o700)
    started = Store(c1).load().started_at
    assert started.unix_ns >= before.unix_ns
    assert as_nobody(home, LIFECYCLEFS, "get", c1).stdout == f"{started}\nfalse\n"
    assert as_nobody(home, LIFECYCLEFS, "set", c1, "create_error=true").returncode == 0

    mnt = home / "mnt"
    assert as_nobody(home, "mkdir", mnt).returncode == 0
    tree, pid_file = c1.parent.parent, home / "pid"
    mounted = as_nobody(home, LIFECYCLEFS, "mount", "--depth=2", tree, mnt, "--pid-file", pid_file)
    assert (mounted.returncode, mounted.stderr) == (0, "")
    pid = int(pid_file.read_text())
    try:
        assert str(mnt) in lifecyclefs_mounts()
        value = mnt / "default" / "c1" / "create_error"
        assert as_nobody(home, "cat", value).stdout == "true\n"
        assert as_nobody(home, "sh", "-c", f"echo false > {value}").returncode == 0
        assert Store(c1).load().create_error is False
        with pytest.raises(PermissionError):
            os.listdir(mnt)  # a user's mount is the user's alone, root included
    finally:
        unmounted = as_nobody(home, LIFECYCLEFS, "umount", mnt)
    assert (unmounted.returncode, unmounted.stderr) == (0, "")
    assert wait_for_exit(pid, timeout=10)
    assert str(mnt) not in lifecyclefs_mounts()

    assert as_nobody(home, LIFECYCLEFS, "set", c1, "create_error=true").returncode == 0
    hook = as_nobody(home, LIFECYCLEFS, "oci-hook", "--strict", "poststop", stdin=oci_state(c1))
    assert (hook.returncode, hook.stderr) == (0, "")
    assert Store(c1).load() == Lifecycle(started, create_error=False)


def test_allow_other_for_a_user_needs_user_allow_other(
    home: Path, dev_fuse_open_to_users: None
) -> None:
    tree, mnt = state_tree(home), home / "mnt"
    assert as_nobody(home, "mkdir", mnt).returncode == 0
    with fuse_conf(DEBIAN_FUSE_CONF):
        refused = as_nobody(home, LIFECYCLEFS, "mount", "-o", "allow_other", tree, mnt)
    assert refused.returncode == 1
    assert refused.stderr == (
        "lifecyclefs: -o allow_other: a user may use it only when /etc/fuse.conf"
        " has a line user_allow_other\n"
    )
    assert str(mnt) not in lifecyclefs_mounts()


def test_with_user_allow_other_a_users_mount_serves_everyone(
    home: Path, dev_fuse_open_to_users: None
) -> None:
    tree, mnt = state_tree(home), home / "mnt"
    hook = as_nobody(
        home, LIFECYCLEFS, "oci-hook", "createRuntime", stdin=oci_state(tree / "default" / "c1")
    )
    assert hook.returncode == 0
    assert as_nobody(home, "mkdir", mnt).returncode == 0
    with fuse_conf(DEBIAN_FUSE_CONF + "user_allow_other\n"):
        options = f"depth=2,allow_other,pid_file={home}/pid"
        mounted = as_nobody(home, LIFECYCLEFS, "mount", "-o", options, tree, mnt)
        assert (mounted.returncode, mounted.stderr) == (0, "")
    pid = int((home / "pid").read_text())
    try:
        # root, another user, reads through it (as the record's owner allows root).
        assert (mnt / "default" / "c1" / "create_error").read_text() == "false\n"
    finally:
        assert as_nobody(home, LIFECYCLEFS, "umount", mnt).returncode == 0
    assert wait_for_exit(pid, timeout=10)


def test_a_dev_fuse_closed_to_users_is_one_clear_line(home: Path) -> None:
    tree, mnt = state_tree(home), home / "mnt"
    assert as_nobody(home, "mkdir", mnt).returncode == 0
    with dev_fuse_mode(0o600):
        refused = as_nobody(home, LIFECYCLEFS, "mount", tree, mnt)
    assert refused.returncode == 1
    assert refused.stderr == (
        "lifecyclefs: /dev/fuse is not open to users (udev makes it 0666; without udev root must)\n"
    )
