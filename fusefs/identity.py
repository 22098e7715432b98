"""Doing one system call as the user who asked, so that what it creates is theirs from birth.

A root daemon that creates a directory and then gives it to the caller by name acts on
a name the caller may swap in between (and so may hand the caller someone else's
directory). Instead the calling thread takes the caller's filesystem identity (fsuid,
fsgid and supplementary groups, which Linux keeps per thread) for the one system call
that creates: the new directory is the caller's from the start, and the backing
filesystem checks the caller's own permissions. The identity is put back before
anything else runs on the thread.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import pyfuse3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setfsuid.argtypes = [ctypes.c_uint]
_libc.setfsgid.argtypes = [ctypes.c_uint]
_libc.syscall.restype = ctypes.c_long

# glibc's setgroups() changes every thread of the process; the raw system call only
# the calling one, which is what a per-request identity needs.
_SETGROUPS: Final = {"x86_64": 116, "aarch64": 159, "riscv64": 159, "s390x": 206, "ppc64le": 81}
_SYS_SETGROUPS: Final = _SETGROUPS.get(platform.machine())


def _set_groups(groups: list[int]) -> None:
    if _SYS_SETGROUPS is None:
        raise OSError(0, f"per-thread setgroups is not known on {platform.machine()}")
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    if _libc.syscall(ctypes.c_long(_SYS_SETGROUPS), ctypes.c_size_t(len(groups)), array) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def caller_groups(pid: int) -> list[int]:
    """The supplementary groups of process `pid`, or none if it is gone."""
    try:
        return sorted(pyfuse3.get_sup_groups(pid))
    except (OSError, ValueError):
        return []


@contextmanager
def acting_as(uid: int, gid: int, groups: list[int]) -> Iterator[None]:
    """Inside, this thread's filesystem accesses are those of `uid`, `gid` and `groups`.

    Only a daemon running as root can take another identity; otherwise this does
    nothing (an unprivileged daemon serves only its own user anyway).
    """
    if os.geteuid() != 0:
        yield
        return
    saved_groups = os.getgroups()
    _set_groups(groups)
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    try:
        yield
    finally:
        _libc.setfsuid(0)
        _libc.setfsgid(os.getegid())
        _set_groups(saved_groups)
