"""`-o` mount options, spelled as mount(8), fstab and fuse3's mount helper spell them.

`mount -t fuse.lifecyclefs SOURCE MOUNTPOINT -o OPTIONS` and an fstab line of type
`fuse.lifecyclefs` run fuse3's helper (`/sbin/mount.fuse3`), which runs
`lifecyclefs SOURCE MOUNTPOINT -o OPTIONS` with mount(8)'s own options mixed in (`rw`,
`dev`, `suid`...). So every option of `lifecyclefs mount` has an `-o` spelling, generic
mount flags are accepted, and the options meant for mount(8) itself are ignored.
Options apply left to right: the last of `ro` and `rw` wins, as in mount(8).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from fusefs.mount import MountRequest
from fusefs.quickargs import timeout_value

KERNEL_FLAGS: Final = {
    "dev": "nodev",
    "nodev": "dev",
    "suid": "nosuid",
    "nosuid": "suid",
    "exec": "noexec",
    "noexec": "exec",
    "atime": "noatime",
    "noatime": "atime",
    "sync": "async",
    "async": "sync",
    "dirsync": "dirsync",
}
"""Generic mount flags that libfuse hands to the kernel, each with its opposite."""

INERT_FLAGS: Final = frozenset(
    {
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "iversion",
        "noiversion",
        "mand",
        "nomand",
        "symfollow",
        "nosymfollow",
        "silent",
        "loud",
    }
)
"""Generic mount flags that libfuse refuses and that change nothing here: accepted, dropped."""

FOR_MOUNT_ONLY: Final = frozenset(
    {"defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "nofail", "_netdev"}
)
"""fstab options that mean something to mount(8) or systemd only (so do `x-*`, `comment=`)."""


class MountOptionError(ValueError):
    """An `-o` option that is unknown or badly written; the message is one line."""


def apply_options(values: Sequence[str], request: MountRequest) -> MountRequest:
    """`request` with every option of the `-o` arguments `values` applied, left to right.

    Each value is a comma-separated list. Raise MountOptionError for an option that is
    not ours, not a generic mount flag and not one of mount(8)'s, for a value given to
    a flag, and for a value that does not parse.
    """
    for value in values:
        for option in filter(None, value.split(",")):
            name, equals, argument = option.partition("=")
            request = _apply(request, name, argument if equals else None)
    return request


def _apply(request: MountRequest, name: str, argument: str | None) -> MountRequest:
    replace = dataclasses.replace
    if name.startswith("x-") or name == "comment" or name in FOR_MOUNT_ONLY:
        return request
    if name in _WITH_VALUE:
        if not argument:
            raise MountOptionError(f"-o {name}= {_WITH_VALUE[name]}")
        return _apply_value(request, name, argument)
    if name not in _FLAGS:
        raise MountOptionError(f"unknown mount option {name!r} (see lifecyclefs mount --help)")
    if argument is not None:
        raise MountOptionError(f"mount option {name!r} takes no value")
    options = request.options
    match name:
        case "ro" | "rw":
            return replace(request, options=replace(options, read_only=name == "ro"))
        case "durable" | "nodurable":
            return replace(request, options=replace(options, durable=name == "durable"))
        case "allow_other":
            return replace(request, allow_other=True)
        case "foreground":
            return replace(request, foreground=True)
        case "debug":
            return replace(request, debug=True)
        case "default_permissions":
            return request  # always on: the kernel checks every access
        case _ if name in KERNEL_FLAGS:
            others = {name, KERNEL_FLAGS[name]}
            kept = tuple(flag for flag in request.mount_flags if flag not in others)
            return replace(request, mount_flags=(*kept, name))
        case _:
            return request  # INERT_FLAGS


def _apply_value(request: MountRequest, name: str, argument: str) -> MountRequest:
    replace = dataclasses.replace
    match name:
        case "depth":
            if not argument.isdecimal() or int(argument) < 1:
                raise MountOptionError(f"-o depth= {_WITH_VALUE[name]}, not {argument!r}")
            return replace(request, depth=int(argument))
        case "lock_timeout":
            try:
                timeout = timeout_value(argument)
            except ValueError:
                raise MountOptionError(f"-o lock_timeout= {_WITH_VALUE[name]}") from None
            return replace(request, options=replace(request.options, lock_timeout=timeout))
        case "log_file":
            return replace(request, log_file=argument)
        case _:
            return replace(request, pid_file=argument)


_WITH_VALUE: Final = {
    "depth": "needs a whole number of levels, at least 1",
    "lock_timeout": "needs a finite number of seconds (0: for ever)",
    "log_file": "needs a file name",
    "pid_file": "needs a file name",
}
"""Our options that take a value, and what to say when it is missing or wrong."""

_FLAGS: Final = (
    frozenset(
        {
            "ro",
            "rw",
            "durable",
            "nodurable",
            "allow_other",
            "default_permissions",
            "foreground",
            "debug",
        }
    )
    | KERNEL_FLAGS.keys()
    | INERT_FLAGS
)
"""Options without a value that mean something, or are accepted as generic mount flags."""
