"""Replace a file atomically: temp file in the same directory, fsync, rename, fsync.

The temp file has nerdctl's fixed name. That is safe because only the holder of the
state directory's lock writes it, and it means a temp file left by a crash (ours or
nerdctl's) is simply replaced: we create ours with O_EXCL, so a stale one, whatever its
mode or content, is removed first and never leaks into the next record.
"""

from __future__ import annotations

import os
from contextlib import suppress
from typing import Final

TEMP_NAME: Final = ".temp.lifecycle.json"
RECORD_MODE: Final = 0o600
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def _create_temp(dir_fd: int) -> int:
    try:
        return os.open(TEMP_NAME, _CREATE_FLAGS, RECORD_MODE, dir_fd=dir_fd)
    except FileExistsError:
        os.unlink(TEMP_NAME, dir_fd=dir_fd)
        return os.open(TEMP_NAME, _CREATE_FLAGS, RECORD_MODE, dir_fd=dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace_file(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    durable: bool,
    owner: tuple[int, int] | None = None,
) -> None:
    """Make `name` in `dir_fd` hold exactly `data` (mode 0600), all or nothing.

    With `durable`, the data and the rename are on disk when this returns. `owner`
    (uid, gid) is given to the new file before it appears. On any error the old file is
    untouched, no temp file is left behind, and the OSError propagates.
    """
    fd = _create_temp(dir_fd)
    try:
        try:
            # O_CREAT's mode passes through the umask; the record is 0600 regardless.
            os.fchmod(fd, RECORD_MODE)
            if owner is not None:
                os.fchown(fd, *owner)
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(TEMP_NAME, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(TEMP_NAME, dir_fd=dir_fd)
        raise
    if durable:
        os.fsync(dir_fd)


def remove_file(dir_fd: int, name: str, *, durable: bool) -> bool:
    """Remove `name` from `dir_fd`; say whether it existed. With `durable`, on disk too."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    if durable:
        os.fsync(dir_fd)
    return True
