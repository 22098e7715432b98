"""podman, for real, with the shipped hooks.d files (issue 8.3).

podman 4.3 (Debian 12) runs as root with runc, cgroupfs, a file events log, no network
and vfs storage under the test's own --root/--runroot/--tmpdir, and our
scripts/hooks.d files as its --hooks-dir (with the command's path the suite installed).
It runs the createRuntime hook through runc, and the poststop hook itself, with an
empty environment, from `podman container cleanup`. The container is a rootfs made
from Debian's busybox-static. Afterwards nothing is left: no container, process,
mount, cgroup, or runc state directory podman made.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from store import Lifecycle, Store, Timestamp
from tests.conftest import LIFECYCLEFS
from tests.oci_bundle import CGROUP, kill_and_wait, make_bundle

HOOKS_D = Path(__file__).resolve().parent.parent / "scripts" / "hooks.d"
INSTALLED = "/usr/local/bin/lifecyclefs"
RUNC_STATE = Path("/run/runc")
"""runc's default state directory: podman does not pass --root to `runc delete`."""


@dataclass
class Podman:
    """podman confined to one directory of the test's, and one cgroup parent."""

    top: Path
    cgroup_parent: str

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `podman GLOBAL-FLAGS ARGS...`; return what it did."""
        top = self.top
        flags = [
            f"--root={top}/root",
            f"--runroot={top}/runroot",
            f"--tmpdir={top}/tmp",
            f"--network-config-dir={top}/cni",
            f"--hooks-dir={top}/hooks.d",
            "--storage-driver=vfs",
            "--runtime=runc",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ]
        return subprocess.run(
            ["podman", *flags, *args], capture_output=True, text=True, timeout=120, check=False
        )

    def run_container(self, rootfs: Path, *args: str, options: list[str]) -> str:
        """`podman run --rm` a container of `rootfs`; return its output, raise if it failed."""
        result = self(
            "run",
            "--rm",
            "--network=none",
            f"--cgroup-parent={self.cgroup_parent}",
            "--ulimit=nofile=20000:20000",
            "--ulimit=nproc=32768:32768",
            *options,
            "--rootfs",
            str(rootfs),
            *args,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def install_hooks(directory: Path) -> None:
    """scripts/hooks.d as an operator installs it, the command where this suite put it."""
    directory.mkdir()
    for shipped in HOOKS_D.glob("*.json"):
        text = shipped.read_text()
        assert INSTALLED in text
        (directory / shipped.name).write_text(text.replace(INSTALLED, LIFECYCLEFS))


PODMAN_SHM_LOCK = Path("/dev/shm/libpod_lock")
"""The lock file podman makes in shared memory on first use (for every podman on the host)."""


@pytest.fixture
def podman() -> Iterator[Podman]:
    """podman for the test; afterwards nothing of it is left, or the test fails.

    Its directories are in a short one of their own: podman refuses a runroot path
    longer than 50 characters (sockets live there), and pytest's are longer.
    """
    top = Path(tempfile.mkdtemp(prefix="lifecyclefs-podman-"))
    install_hooks(top / "hooks.d")
    runc_state_existed = RUNC_STATE.exists()
    shm_lock_existed = PODMAN_SHM_LOCK.exists()
    made = Podman(top, f"/lifecyclefs-test-{uuid.uuid4().hex[:12]}")
    try:
        yield made
    finally:
        left = made("ps", "--all", "--quiet").stdout.split()
        made("rm", "--all", "--force", "--time=0")
        left += [f"process {pid}" for pid in stop_processes_using(top)]
        left += [f"cgroup {path}" for path in remove_cgroups(made.cgroup_parent) if path]
        if not runc_state_existed and RUNC_STATE.exists():
            left += [f"runc state {entry}" for entry in RUNC_STATE.iterdir()]
            if not left:
                RUNC_STATE.rmdir()
        with open("/proc/self/mounts") as mounts:
            left += [line for line in mounts if f" {top}/" in line]
        if not left:
            shutil.rmtree(top)
            if not shm_lock_existed:
                PODMAN_SHM_LOCK.unlink(missing_ok=True)
    assert left == []


def stop_processes_using(top: Path) -> list[int]:
    """Wait for processes whose command line names `top` (conmon, podman's cleanup) to end.

    They end on their own once the container is gone; any still running after 30 s is
    SIGKILLed and returned.
    """
    stuck = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            pidfd = os.pidfd_open(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
        try:
            if os.fsencode(top) in cmdline and not select.select([pidfd], [], [], 30)[0]:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                stuck.append(int(entry.name))
        finally:
            os.close(pidfd)
    return stuck


def remove_cgroups(parent: str) -> list[str]:
    """Remove the cgroup `parent` (and its children) in every hierarchy.

    podman makes it (and `conmon` in it) and leaves it. Return the paths that still
    held a process (each is killed, and waited for, first).
    """
    busy = []
    for hierarchy in Path(CGROUP).iterdir():
        top = hierarchy / parent.lstrip("/")
        if not top.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda walked: -len(walked[0])):
            procs = Path(directory, "cgroup.procs").read_text().split()
            for pid in procs:
                kill_and_wait(int(pid))
            if procs:
                busy.append(directory)
            os.rmdir(directory)
    return busy


FLIP = "sed -i s/:false}/:true}/ /state/lifecycle.json && cat /state/lifecycle.json"
"""The container sets create_error in its own record (bind-mounted) and shows it."""


def test_podman_runs_the_hooks_d_files_at_create_runtime_and_poststop(
    podman: Podman, tmp_path: Path
) -> None:
    state_dir = tmp_path / "containers" / "default" / "c1"
    Store(state_dir, create=True)
    rootfs = make_bundle(tmp_path / "bundle", ["true"], applets=("sh", "sed", "cat")) / "rootfs"
    before = Timestamp.now()
    seen = podman.run_container(
        rootfs,
        "sh",
        "-c",
        FLIP,
        options=[f"--annotation=nerdctl/state-dir={state_dir}", f"--volume={state_dir}:/state"],
    )
    after = Timestamp.now()

    # createRuntime wrote the record before the container's process ran...
    in_container = json.loads(seen)
    started = Timestamp.parse(in_container["started_at"])
    assert before.unix_ns <= started.unix_ns <= after.unix_ns
    assert in_container["create_error"] is True
    # ...and poststop, run by podman itself with an empty environment, cleared create_error.
    assert Store(state_dir).load() == Lifecycle(started, create_error=False)


def test_podman_leaves_containers_without_the_annotation_alone(
    podman: Podman, tmp_path: Path
) -> None:
    rootfs = make_bundle(tmp_path / "bundle", ["true"], applets=("sh", "ls")) / "rootfs"
    state_dir = tmp_path / "containers" / "default" / "c1"
    Store(state_dir, create=True)
    out = podman.run_container(rootfs, "ls", "/state", options=[f"--volume={state_dir}:/state"])
    assert out == ""
    assert not (state_dir / "lifecycle.json").exists()
