"""A private mount namespace where `lifecyclefs` is on mount(8)'s PATH, for mount(8) tests.

mount(8) runs fuse3's helper with a clean environment, so the helper's shell finds
`lifecyclefs` on the default PATH only (/usr/local/sbin, /usr/local/bin...). The
namespace gets its own /usr/local/sbin holding the command under test and its own /run
(where mount(8) keeps its utab), so nothing outside it changes; whatever is mounted in
it disappears with its last process.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.conftest import LIFECYCLEFS, wait_for_exit

_SETUP = """
mount -n -t tmpfs -o mode=0755 lifecyclefs-test /run
mount -n -t tmpfs -o mode=0755 lifecyclefs-test /usr/local/sbin
ln -s "$0" /usr/local/sbin/lifecyclefs
echo ready
exec cat >/dev/null
"""


@dataclass
class Namespace:
    """A live private mount namespace, kept by a holder process."""

    holder: subprocess.Popen[str]
    identity: int

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run `command` inside; return what it did (stdout and stderr as text)."""
        return subprocess.run(
            ["nsenter", f"--target={self.holder.pid}", "--mount", *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def processes(self) -> list[int]:
        """The processes in the namespace, but the holder (daemons, if any are left)."""
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != self.holder.pid:
                try:
                    if os.stat(f"/proc/{entry.name}/ns/mnt").st_ino == self.identity:
                        found.append(int(entry.name))
                except OSError:
                    continue  # gone meanwhile
        return found


@contextmanager
def private_mount_namespace() -> Iterator[Namespace]:
    """A namespace for the block; raise AssertionError if a process outlives its end.

    Such a process (a daemon the test did not unmount) is SIGKILLed first, so that the
    namespace and its mounts are gone in any case.
    """
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", _SETUP, LIFECYCLEFS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "ready\n", "the namespace could not be set up"
        namespace = Namespace(holder, os.stat(f"/proc/{holder.pid}/ns/mnt").st_ino)
        try:
            yield namespace
        finally:
            left = namespace.processes()
            for pid in left:
                os.kill(pid, signal.SIGKILL)
                wait_for_exit(pid, timeout=10)
        assert not left, f"processes left in the mount namespace: {left}"
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
