"""POSIX ACLs as the kernel hands them over: the two xattr names and their mode bits.

With `enable_acl` the kernel enforces POSIX ACLs itself (with `default_permissions`),
asking the filesystem for `system.posix_acl_access` (and, of directories,
`system.posix_acl_default`) and caching the answer. The mount serves the backing
directories' and records' own ACLs. A temporary file in the daemon's memory keeps the
ACL a tool sets on it; the filesystem then owes it the matching mode bits.
"""

from __future__ import annotations

import struct
from typing import Final

from store.atomic import ACL_ACCESS, ACL_DEFAULT

ACCESS: Final = ACL_ACCESS
DEFAULT: Final = ACL_DEFAULT
NAMES: Final = frozenset({ACCESS, DEFAULT})

_HEADER: Final = struct.Struct("<I")
_ENTRY: Final = struct.Struct("<HHI")
_VERSION: Final = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_MINIMAL: Final = frozenset({_USER_OBJ, _GROUP_OBJ, _OTHER})


def mode_of(value: bytes) -> tuple[int, bool]:
    """The permission bits an access ACL means, and whether it says more than they do.

    ValueError if `value` is not an ACL in the kernel's xattr format.
    """
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise ValueError("not a POSIX ACL")
    (version,) = _HEADER.unpack_from(value)
    if version != _VERSION:
        raise ValueError(f"POSIX ACL version {version}")
    perms: dict[int, int] = {}
    tags = set()
    for offset in range(_HEADER.size, len(value), _ENTRY.size):
        tag, perm, _ = _ENTRY.unpack_from(value, offset)
        tags.add(tag)
        perms[tag] = perm & 0o7
    if not tags >= _MINIMAL:
        raise ValueError("a POSIX ACL needs its owner, group and other entries")
    group = perms.get(_MASK, perms[_GROUP_OBJ])
    mode = perms[_USER_OBJ] << 6 | group << 3 | perms[_OTHER]
    return mode, tags != _MINIMAL
