"""Build busybox OCI bundles and run them with real runc, for end-to-end tests.

Verified with runc 1.1.5 (Debian 12, cgroupfs driver, cgroup v1 hybrid layout) and
Debian's ``busybox-static``. What runc does here, measured: a hook gets the OCI state
on stdin and the bundle as its working directory; a hook with ``env`` gets no PATH; a
createRuntime hook that exits non-zero makes ``runc run`` exit 1 before the container's
process runs, poststop still runs and runc removes the container; a hook that leaves a
child holding its stdout blocks runc for ever (hence the timeout and the process-group
kill); container ids must be unique on the host, since runc names cgroups after them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Required, TypedDict

from fusefs.mount import unescape_mount_field

RUNC = "/usr/sbin/runc"
BUSYBOX = Path("/bin/busybox")
CGROUP = "/sys/fs/cgroup"
DEFAULT_APPLETS = ("sh", "true", "false", "sleep", "echo", "cat", "ls", "env", "id")
HOOK_PHASES = frozenset(
    {
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    }
)
# How long cleanup may take (runc kill/delete of a stuck container) before we give up.
_CLEANUP_TIMEOUT = 30.0


class Hook(TypedDict, total=False):
    """One OCI hook entry, exactly as it appears in config.json.

    ``path`` must be absolute.  ``args`` includes argv[0] (runc uses ``[path]`` when it
    is missing).  ``env`` replaces the runtime's whole environment, PATH included.
    ``timeout`` is in whole seconds.
    """

    path: Required[str]
    args: list[str]
    env: list[str]
    timeout: int


@dataclass(frozen=True)
class RunResult:
    """What ``runc run`` did: its exit status, its captured output and how long it took.

    ``returncode`` is runc's own status (the container's exit code when the container
    ran, 1 when runc failed, negative when it had to be killed).  ``timed_out`` is true
    when runc did not finish within the timeout and was killed.
    """

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def new_container_id(prefix: str = "lcfs") -> str:
    """Return a fresh container id that is valid for runc and unique on this host.

    Ids must be unique host-wide, not only per ``--root``: runc names the container's
    cgroups after the id, and cgroups are shared by every runc on the machine.
    """
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_bundle(
    bundle: Path,
    args: Sequence[str],
    *,
    annotations: Mapping[str, str] | None = None,
    hooks: Mapping[str, Sequence[Hook]] | None = None,
    applets: Sequence[str] = DEFAULT_APPLETS,
) -> Path:
    """Create an OCI bundle at ``bundle`` and return its absolute, resolved path.

    ``bundle`` may already exist (e.g. an empty tmp dir) but must not hold a bundle yet.

    The bundle holds ``rootfs/`` (a copy of /bin/busybox at ``/bin/busybox``, a symlink
    ``/bin/<applet>`` for each applet, empty mount points and ``/tmp``) and a
    ``config.json`` that runs ``args`` as root with ``terminal: false``, a read-only
    root, a tmpfs on ``/tmp``, new pid/ipc/uts/mount/network namespaces, the given
    annotations and the given hooks (phase name -> list of hook entries).

    Raises ValueError for an empty ``args``, an unknown hook phase or a hook path that
    is not absolute (the OCI spec requires absolute hook paths; runc 1.1.5 would quietly
    resolve a relative one against the bundle directory).
    """
    if not args:
        raise ValueError("args must not be empty")
    hooks = dict(hooks or {})
    for phase, entries in hooks.items():
        if phase not in HOOK_PHASES:
            raise ValueError(f"unknown hook phase {phase!r}")
        for entry in entries:
            if not os.path.isabs(entry["path"]):
                raise ValueError(f"hook path must be absolute: {entry['path']!r}")

    bundle = bundle.resolve()
    rootfs = bundle / "rootfs"
    for d in ("bin", "proc", "dev", "sys", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in applets:
        (rootfs / "bin" / applet).symlink_to("busybox")

    config = _config(list(args), dict(annotations or {}), {k: list(v) for k, v in hooks.items()})
    (bundle / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return bundle


def _config(
    args: list[str], annotations: dict[str, str], hooks: dict[str, list[Hook]]
) -> dict[str, Any]:
    """Return ``runc spec``'s config.json (runc 1.1.5), trimmed, with our changes."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"]
    config: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": dict.fromkeys(("bounding", "effective", "permitted"), caps),
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "lcfs",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": [*nosuid_noexec_nodev, "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": [*nosuid_noexec_nodev, "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/kcore",
                "/proc/keys",
                "/proc/timer_list",
                "/sys/firmware",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    }
    if annotations:
        config["annotations"] = annotations
    if hooks:
        config["hooks"] = hooks
    return config


def run_container(
    bundle: Path,
    *,
    root: Path,
    container_id: str | None = None,
    timeout: float = 30.0,
) -> RunResult:
    """Run ``runc --root ROOT run --bundle BUNDLE ID`` in the foreground; wait for it.

    stdin is /dev/null; stdout and stderr (runc's and the container's) are captured as
    text.  runc runs in its own process group; if it has not finished after ``timeout``
    seconds the whole group (runc and the hooks it is waiting for) is SIGKILLed and the
    result has ``timed_out=True``.  Whatever happens, including an exception, the
    container is then removed with ``runc --root ROOT delete -f ID`` before this
    returns, so ``runc list`` on ``root`` no longer shows it.  Use a private ``root``
    per test.  ``container_id`` defaults to ``new_container_id()``.
    """
    container_id = container_id or new_container_id()
    cmd = [RUNC, "--root", str(root), "run", "--bundle", str(bundle), container_id]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate(timeout=_CLEANUP_TIMEOUT)
    finally:
        _kill_group(proc)
        proc.wait()
        seconds = time.monotonic() - start
        try:
            delete_container(root, container_id)
        finally:
            remove_cgroups(container_id)
    return RunResult(proc.returncode, out, err, seconds, timed_out)


def delete_container(root: Path, container_id: str) -> None:
    """Force-remove ``container_id`` from ``root`` (kill its processes, drop its state).

    A container that does not exist is not an error.  Raises CalledProcessError when
    runc fails to delete it.
    """
    subprocess.run(
        [RUNC, "--root", str(root), "delete", "-f", container_id],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=_CLEANUP_TIMEOUT,
    )


def remove_cgroups(container_id: str) -> None:
    """Kill whatever is left in the cgroups named ``container_id`` and remove them.

    ``runc delete -f`` cannot do this when runc was killed before it saved the
    container's state (e.g. while a hook blocked it): the cgroups it had already made
    stay behind, so this walks /sys/fs/cgroup for directories with that name.  Each
    process found is SIGKILLed and waited for (through a pidfd) before the rmdir.
    Raises OSError if a directory cannot be removed.
    """
    dirs = [Path(top, container_id) for top, names, _ in os.walk(CGROUP) if container_id in names]
    for d in dirs:
        for pid in (d / "cgroup.procs").read_text().split():
            kill_and_wait(int(pid))
    for d in dirs:
        d.rmdir()


def list_containers(root: Path) -> list[dict[str, Any]]:
    """Return ``runc --root ROOT list --format json`` as a list (empty when none).

    Note that runc creates ``root`` if it does not exist.
    """
    out = subprocess.run(
        [RUNC, "--root", str(root), "list", "--format", "json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        text=True,
        timeout=_CLEANUP_TIMEOUT,
    ).stdout
    containers: list[dict[str, Any]] | None = json.loads(out)
    return containers or []


def leftovers(root: Path, container_id: str, bundle: Path) -> list[str]:
    """Describe everything a container left behind; an empty list means nothing.

    Looks for: entries in the runc state directory ``root``; mounts at or under
    ``bundle``; processes in a cgroup named ``container_id`` (the container's own,
    including ``runc init``), processes whose root or working directory is under
    ``bundle`` (hooks: runc runs them in the bundle directory) or whose command line
    mentions ``bundle`` or ``container_id`` (runc itself); and cgroup directories named
    ``container_id`` under /sys/fs/cgroup.  A process inside the container cannot be
    recognised by its root or cwd: seen from the host's mount namespace both read "/".
    """
    found: list[str] = []
    bundle = bundle.resolve()
    if root.is_dir():
        found += [f"runc state: {p}" for p in sorted(root.iterdir())]
    found += [f"mount: {m}" for m in _mounts_under(bundle)]
    found += [f"process: {p}" for p in _processes_using(bundle, container_id)]
    for dirpath, dirnames, _ in os.walk(CGROUP):
        found += [f"cgroup: {dirpath}/{d}" for d in dirnames if d == container_id]
    return found


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group that runc (``proc``) leads; no group is not an error.

    The group outlives its leader, so this also reaches a hook, or a hook's child, that
    is still running after runc died or exited.  (The kernel does not hand out a pid
    that is still some group's id, so this cannot hit an unrelated process while any
    member lives.)  The container's own processes are in a session of their own;
    ``runc delete -f`` takes care of them.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def kill_and_wait(pid: int) -> None:
    """SIGKILL ``pid`` and block until it has exited (not necessarily been reaped)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [], _CLEANUP_TIMEOUT)
    except ProcessLookupError:
        pass  # exited between pidfd_open and the signal
    finally:
        os.close(fd)


def _under(path: str, top: Path) -> bool:
    return path == str(top) or path.startswith(f"{top}/")


def _mounts_under(top: Path) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        points = [unescape_mount_field(line.split()[1]) for line in f]
    return [p for p in points if _under(p, top)]


def _processes_using(top: Path, container_id: str) -> list[str]:
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cgroups = Path(entry.path, "cgroup").read_text().splitlines()
            dirs = [os.readlink(f"{entry.path}/{link}") for link in ("root", "cwd")]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone, or a kernel thread we may not inspect
        words = cmdline.split()
        if (
            any(line.rpartition("/")[2] == container_id for line in cgroups)
            or any(_under(d, top) for d in dirs)
            or container_id in words
            or any(_under(w, top) for w in words)
        ):
            found.append(f"{entry.name} {cmdline.strip()}")
    return found
