"""The attributes the kernel is told: from the backing directories and records, as they are.

Directories show their backing directory's stat; a container's files show their
record's owner, mode and times (a record not written yet shows what the first write
creates: 0600, the directory's owner). A read-only mount shows no write bits. How long
the kernel may keep an answer is the caller's to say (`Timeouts`): long where inotify
tells us of every change, short where it cannot.
"""

from __future__ import annotations

import ctypes
import os
import stat
from dataclasses import dataclass
from typing import Final, NamedTuple

from pyfuse3 import EntryAttributes

from store.atomic import NEW_FILE_MODE

_BLOCK: Final = 512
_WRITE_BITS: Final = 0o222


class FileMeta(NamedTuple):
    """What a file's attributes take from its record's stat (kept for many records: small)."""

    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileMeta:
        """The part of `st` a file's attributes show."""
        return cls(st.st_mode, st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the kernel may keep an entry and its attributes, in seconds."""

    entry: float
    attr: float


def directory(
    ino: int, st: os.stat_result, timeouts: Timeouts, *, read_only: bool
) -> EntryAttributes:
    """Attributes of a directory of the view: its backing directory's."""
    attrs = EntryAttributes()
    attrs.st_ino = ino
    attrs.st_mode = st.st_mode & ~_WRITE_BITS if read_only else st.st_mode
    attrs.st_nlink = st.st_nlink
    attrs.st_uid = st.st_uid
    attrs.st_gid = st.st_gid
    attrs.st_size = st.st_size
    attrs.st_blksize = st.st_blksize
    attrs.st_blocks = st.st_blocks
    attrs.st_atime_ns = st.st_atime_ns
    attrs.st_mtime_ns = st.st_mtime_ns
    attrs.st_ctime_ns = st.st_ctime_ns
    attrs.entry_timeout = timeouts.entry
    attrs.attr_timeout = timeouts.attr
    return attrs


def value_file(
    ino: int,
    size: int,
    record: FileMeta | None,
    dir_stat: os.stat_result | None,
    timeouts: Timeouts,
    *,
    writable: bool,
) -> EntryAttributes:
    """Attributes of one of a container's files, `size` bytes long.

    With a record, its owner, mode and times; without one (`record` None), those of
    the 0600 record the first write will create, owned by the directory's owner.
    Write bits only where `writable`.
    """
    if record is None:
        assert dir_stat is not None, "a container's file needs its record's or directory's stat"
        record = FileMeta.of(dir_stat)._replace(mode=NEW_FILE_MODE)
    mode = stat.S_IMODE(record.mode)
    if not writable:
        mode &= ~_WRITE_BITS
    times = (record.atime_ns, record.mtime_ns, record.ctime_ns)
    return _file(ino, mode, record.uid, record.gid, size, times, timeouts)


_IN_MEMORY: Final = Timeouts(entry=0, attr=0)
"""The kernel learns of writes to a temporary file itself; our own changes it must see
at once."""


def plain_file(
    ino: int, *, mode: int, uid: int, gid: int, size: int, times_ns: tuple[int, int, int]
) -> EntryAttributes:
    """Attributes of a file that lives in the daemon's memory (a tool's temporary file)."""
    return _file(ino, stat.S_IMODE(mode), uid, gid, size, times_ns, _IN_MEMORY)


def _file(  # noqa: PLR0917 - every attribute of a file, once
    ino: int,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    times_ns: tuple[int, int, int],
    timeouts: Timeouts,
) -> EntryAttributes:
    attrs = EntryAttributes()
    attrs.st_ino = ino
    attrs.st_mode = stat.S_IFREG | mode
    attrs.st_nlink = 1
    attrs.st_uid = uid
    attrs.st_gid = gid
    attrs.st_size = size
    attrs.st_blocks = (size + _BLOCK - 1) // _BLOCK
    attrs.st_atime_ns, attrs.st_mtime_ns, attrs.st_ctime_ns = times_ns
    attrs.entry_timeout = timeouts.entry
    attrs.attr_timeout = timeouts.attr
    return attrs


def _entry_node_id_offset() -> int | None:
    """Where an EntryAttributes keeps the node id it hands the kernel, if we can tell.

    pyfuse3 sets the entry's node id and its `st_ino` together. A READDIRPLUS entry
    whose node id is 0 is a plain directory entry: the kernel keeps the attributes and
    POSIX ACLs it has cached for that inode instead of replacing them (and dropping the
    ACLs, which `ls -l` then asks for again, one request per entry). Setting only the
    node id needs its offset in the object, found here by probing and checked against
    the public attribute; None (never use the trick) if the layout is not the one known.
    """
    probe = EntryAttributes()
    marker = 0x1234_5678_9ABC_DEF1
    probe.st_ino = marker
    offset = object.__basicsize__  # the first field after the object header
    node_id = ctypes.c_uint64.from_address(id(probe) + offset)
    if node_id.value != marker:
        return None
    node_id.value = 0
    if probe.st_ino != 0:
        return None
    return offset


_NODE_ID_OFFSET: Final = _entry_node_id_offset()


def plain_entry(ino: int, mode: int) -> EntryAttributes | None:
    """A READDIRPLUS entry that names inode `ino` without refreshing what the kernel caches.

    For an inode the kernel holds already: its cached attributes and ACLs stay (see
    `_entry_node_id_offset`), and the entry counts as no lookup. None where pyfuse3's
    layout is unknown: the caller then sends full attributes.
    """
    if _NODE_ID_OFFSET is None:
        return None
    attrs = EntryAttributes()
    attrs.st_ino = ino
    attrs.st_mode = mode
    ctypes.c_uint64.from_address(id(attrs) + _NODE_ID_OFFSET).value = 0
    return attrs
