"""What kind of filesystem a descriptor is on, as far as the store cares."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

_MEMORY_FILESYSTEMS: Final = frozenset({0x01021994, 0x858458F6})
"""TMPFS_MAGIC and RAMFS_MAGIC: fsync returns at once, there is no disk."""
_STATFS_BYTES: Final = 512
"""More than any architecture's struct statfs (120 bytes on 64-bit Linux)."""


def fsync_is_free(fd: int) -> bool:
    """Whether fsync on `fd`'s filesystem costs nothing (tmpfs, ramfs).

    False when that cannot be found out: an fsync that might wait must be treated as
    one that does.
    """
    try:
        return _filesystem_type(fd) in _MEMORY_FILESYSTEMS
    except Exception:  # no ctypes, no libc, no fstatfs: assume a disk
        return False


def _filesystem_type(fd: int) -> int:
    import ctypes  # noqa: PLC0415 - only the trio variants need it, once per store

    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(_STATFS_BYTES)
    if libc.fstatfs(fd, buffer) != 0:
        code = ctypes.get_errno()
        raise OSError(code, "fstatfs failed")
    # f_type is the first member, a C long.
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF
