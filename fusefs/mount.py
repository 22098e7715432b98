"""Mounting: check the arguments, fork a daemon, prove the mount live, serve, unmount.

`mount()` returns only once the filesystem answers requests, so a script can use the
mount on its next line. In the background (the default) the command forks: the child
mounts, serves one request to itself to prove the mount live, lets go of the caller's
stdout and stderr, and only then tells the parent, which exits 0. Argument errors are
found before any fork. SIGINT, SIGTERM and SIGHUP (a closed terminal) unmount cleanly.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import logging.handlers
import os
import re
import resource
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import pyfuse3
import trio

from fusefs import mountlock
from fusefs.changes import MountOptions
from fusefs.operations import Operations
from fusefs.view import View

log = logging.getLogger("lifecyclefs")

FS_TYPE: Final = "fuse.lifecyclefs"
MAX_LOG_CHARACTERS: Final = 2048
"""The longest log record (a traceback included); anything longer is cut."""
MAX_REQUESTS: Final = 4096
"""Requests served at once. A request that waits (for a lock) holds one until answered;
each user may hold only budgets.MAX_WAITING of them, so no user can take them all."""
_READY: Final = b"ready"


class MountError(Exception):
    """A mount or unmount that cannot be done; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class MountRequest:
    """Everything `lifecyclefs mount` was asked to do."""

    source: str
    mountpoint: str
    depth: int = 1
    options: MountOptions = field(default_factory=MountOptions)
    allow_other: bool = False
    foreground: bool = False
    debug: bool = False
    log_file: str | None = None
    pid_file: str | None = None
    mount_flags: tuple[str, ...] = ()
    """Generic mount flags for the kernel (`nodev`, `noexec`...), as `-o` gives them."""


def _usable(path: str, what: str) -> str:
    """`path`, resolved; MountError when no system call can take it (a NUL, a lone surrogate)."""
    try:
        os.fsencode(path)
        return os.path.realpath(path)
    except (ValueError, UnicodeError):
        raise MountError(f"{what} {path!r} is not a usable path") from None


def _check(request: MountRequest) -> None:
    source = _usable(request.source, "source")
    mountpoint = _usable(request.mountpoint, "mount point")
    if not os.path.exists("/dev/fuse"):
        raise MountError("no /dev/fuse on this machine: load the fuse kernel module")
    if not os.path.isdir(source):
        raise MountError(f"source {request.source} is not a directory")
    try:
        if not os.path.isdir(mountpoint):
            raise MountError(f"mount point {request.mountpoint} is not a directory")
        if os.path.ismount(mountpoint):
            raise MountError(f"mount point {request.mountpoint} is busy: a filesystem is mounted")
        if os.listdir(mountpoint):
            raise MountError(f"mount point {request.mountpoint} is not empty")
    except OSError as error:
        raise MountError(
            f"mount point {request.mountpoint}: {error.strerror}"
            " (a dead mount? `lifecyclefs umount` clears it)"
        ) from error
    if mountpoint == source or mountpoint.startswith(source.rstrip("/") + "/"):
        raise MountError(f"mount point {request.mountpoint} is inside source {request.source}")
    if request.depth < 1:
        raise MountError("--depth must be at least 1")
    if os.geteuid() != 0:
        _check_user_may_mount(request)


def _check_user_may_mount(request: MountRequest) -> None:
    """What fusermount3 would refuse a user, said before anything forks."""
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise MountError(
            "/dev/fuse is not open to users (udev makes it 0666; without udev root must)"
        )
    if request.allow_other and not _users_may_allow_other():
        raise MountError(
            "-o allow_other: a user may use it only when /etc/fuse.conf has a line user_allow_other"
        )


def _users_may_allow_other(conf: str = "/etc/fuse.conf") -> bool:
    try:
        with open(conf) as file:
            return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in file)
    except OSError:
        return False


def mount(request: MountRequest) -> None:
    """Mount SOURCE on MOUNTPOINT; return once it is live (foreground: once unmounted).

    SOURCE is resolved once, here: a data root moved to another disk and reached
    through a symlink is served from where it is; below it, the view follows no symlink.
    """
    _check(request)
    try:
        view = View(os.path.realpath(request.source), request.depth)
    except OSError as error:
        raise MountError(f"cannot open source {request.source}: {error.strerror}") from error
    if request.foreground or request.debug:
        _log_to_stderr(request.debug)
        _serve_alone(request, view, on_ready=lambda: _notify_systemd(b"READY=1"))
        return
    _daemonize(request, view)


def _serve_alone(request: MountRequest, view: View, on_ready: Callable[[], None]) -> None:
    """`_serve`, as the one process that serves the mount point, with all the fds it may have."""
    _raise_descriptor_limit()
    with contextlib.ExitStack() as stack:
        try:
            # Until another mount appears there, its holder may be a daemon letting go.
            stack.enter_context(
                mountlock.held(request.mountpoint, lambda: not os.path.ismount(request.mountpoint))
            )
        except mountlock.MountPointBusyError:
            view.close()
            raise MountError(
                f"mount point {request.mountpoint} is busy: another lifecyclefs mount holds it"
            ) from None
        except mountlock.LockDirectoryError as error:
            view.close()
            raise MountError(str(error)) from error
        _serve(request, view, on_ready)


def _raise_descriptor_limit() -> None:
    """Lift our soft limit on open descriptors as far as the hard limit lets us.

    Every file and directory open in the mount holds descriptors in the daemon, and
    the usual soft limit (1024) is soon reached on a busy host.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard
    if hard == resource.RLIM_INFINITY:
        with open("/proc/sys/fs/nr_open") as file:
            ceiling = int(file.read())
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def _daemonize(request: MountRequest, view: View) -> None:
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child:
        os.close(ready_write)
        with os.fdopen(ready_read, "rb") as pipe:
            answer = pipe.read()
        if answer == _READY:
            return
        os.waitpid(child, 0)
        reason = answer.decode(errors="replace").strip()
        raise MountError(reason or "the daemon exited before the mount was live")
    os.close(ready_read)
    parent: list[int] = [ready_write]  # emptied once the parent has its answer

    def tell_parent(answer: bytes) -> None:
        if parent:
            os.write(parent[0], answer)
            os.close(parent.pop())

    def ready() -> None:
        _detach_stdio()
        tell_parent(_READY)

    code = 1
    try:
        os.setsid()
        _log_to_file_or_syslog(request.log_file)
        _serve_alone(request, view, on_ready=ready)
        code = 0
    except MountError as error:
        tell_parent(str(error).encode())
    except BaseException:
        log.exception("the daemon failed")
        tell_parent(b"the daemon failed; see its log")
    finally:
        os._exit(code)  # never return into the caller's code in the child


def _serve(request: MountRequest, view: View, on_ready: Callable[[], None]) -> None:
    operations = Operations(view, request.options)
    fuse_options = set(pyfuse3.default_options) | {
        f"fsname={_option_value(view.source)}",
        "subtype=lifecyclefs",
    }
    fuse_options.update(request.mount_flags)
    if request.options.read_only:
        fuse_options.add("ro")
    if request.allow_other:
        fuse_options.add("allow_other")
    if request.debug:
        fuse_options.add("debug")
    try:
        _init(operations, request.mountpoint, fuse_options)
    except MountError:
        view.close()
        raise
    stopped_by_signal = True
    try:
        stopped_by_signal = trio.run(_run, request, operations, on_ready)
    finally:
        operations.close()
        # After an external unmount the kernel is done with the mount already.
        pyfuse3.close(unmount=stopped_by_signal)
        view.close()
        if request.pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(request.pid_file)
        log.info("unmounted %s", request.mountpoint)


def _option_value(text: str) -> str:
    """`text` as one value in libfuse's comma-separated options (`\\` escapes)."""
    return text.replace("\\", "\\\\").replace(",", "\\,")


def _init(operations: Operations, mountpoint: str, fuse_options: set[str]) -> None:
    """pyfuse3.init, with what libfuse prints on failure folded into one MountError line."""
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as said:
        os.dup2(said.fileno(), 2)
        try:
            pyfuse3.init(operations, mountpoint, fuse_options)
        except RuntimeError as error:
            failure: RuntimeError | None = error
        else:
            failure = None
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
        if failure is not None:
            said.seek(0)
            lines = said.read().decode(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else str(failure)
            raise MountError(f"cannot mount on {mountpoint}: {reason}") from failure


async def _run(request: MountRequest, operations: Operations, on_ready: Callable[[], None]) -> bool:
    """Serve until unmounted; say whether a signal (not an unmount) ended it."""
    stopped_by_signal = False

    async def watch_signals(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal stopped_by_signal
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                log.info("%s: unmounting %s", signal.Signals(signum).name, request.mountpoint)
                stopped_by_signal = True
                pyfuse3.terminate()
                return

    def prove_live() -> None:
        parent = os.stat(os.path.dirname(os.path.abspath(request.mountpoint)))
        # This stat is a request to ourselves: it returns once the loop serves the mount.
        served = os.stat(request.mountpoint)
        if served.st_dev == parent.st_dev or not stat.S_ISDIR(served.st_mode):
            raise MountError(f"{request.mountpoint} did not become a lifecyclefs mount")
        if request.pid_file:
            with open(request.pid_file, "w") as file:
                file.write(f"{os.getpid()}\n")

    async def announce_when_live() -> None:
        await trio.to_thread.run_sync(prove_live)
        log.info("serving %s on %s", request.source, request.mountpoint)
        on_ready()

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        nursery.start_soon(announce_when_live)
        nursery.start_soon(operations.run_background)
        await pyfuse3.main(max_tasks=MAX_REQUESTS)
        nursery.cancel_scope.cancel()
    return stopped_by_signal


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


class _BoundedFormatter(logging.Formatter):
    """Log records of at most MAX_LOG_CHARACTERS, whatever a user's request put in them."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if len(text) <= MAX_LOG_CHARACTERS:
            return text
        return text[: MAX_LOG_CHARACTERS - 20] + f" [{len(text)} chars, cut]"


def _log_to_stderr(debug: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_BoundedFormatter("lifecyclefs: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)


def _log_to_file_or_syslog(log_file: str | None) -> None:
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(_BoundedFormatter("%(asctime)s %(levelname)s %(message)s"))
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.setFormatter(_BoundedFormatter("lifecyclefs[%(process)d]: %(message)s"))
    else:
        handler = logging.NullHandler()
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _notify_systemd(message: bytes) -> None:
    """Tell systemd (Type=notify) about our state; nothing when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message)


def unescape_mount_field(field_text: str) -> str:
    """Undo the octal escapes (a space is `\\040`) of /proc/self/mountinfo and mounts."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field_text)


def lifecyclefs_mounts() -> list[str]:
    """The mount points of lifecyclefs mounts in this mount namespace."""
    mounts = []
    with open("/proc/self/mountinfo") as file:
        for line in file:
            before, _, after = line.partition(" - ")
            if after.split(" ", 1)[0] == FS_TYPE:
                mounts.append(unescape_mount_field(before.split(" ")[4]))
    return mounts


def unmount(mountpoint: str) -> None:
    """Unmount a lifecyclefs mount, also one whose daemon died (even with files open in it)."""
    path = os.path.abspath(mountpoint)
    if path not in lifecyclefs_mounts():
        raise MountError(f"{mountpoint} is not a lifecyclefs mount")
    # Only a lazy unmount clears a dead mount that has files open in it.
    lazy = not _daemon_answers(path)
    command = ["fusermount3", "-u", "-z", path] if lazy else ["fusermount3", "-u", path]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise MountError(f"cannot unmount {mountpoint}: {reason}")
    mountlock.remove_stale(path)


def _daemon_answers(mountpoint: str) -> bool:
    """Whether a daemon still serves `mountpoint`.

    statfs always reaches the daemon; a stat may be answered from the kernel's
    attribute cache for a while after the daemon died.
    """
    try:
        os.statvfs(mountpoint)
    except OSError as error:
        return error.errno not in (errno.ENOTCONN, errno.ECONNABORTED)
    return True
