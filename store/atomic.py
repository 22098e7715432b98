"""Replace a file atomically: temp file in the same directory, its attributes, fsync, rename.

The temp file has nerdctl's fixed name. That is safe because only the holder of the
state directory's lock writes it, and it means a temp file left by a crash (ours or
nerdctl's) is simply replaced: we create ours with O_EXCL, so a stale one, whatever its
mode, owner, ACL or content, is removed first and never leaks into the next record.

Everything is done on descriptors (fchown, fchmod, fsetxattr on the temp file before
the rename), so no name can be swapped under us.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

TEMP_NAME: Final = ".temp.lifecycle.json"
NEW_FILE_MODE: Final = 0o600
ACL_ACCESS: Final = "system.posix_acl_access"
ACL_DEFAULT: Final = "system.posix_acl_default"
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def _create_temp(dir_fd: int, mode: int) -> int:
    try:
        return os.open(TEMP_NAME, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        os.unlink(TEMP_NAME, dir_fd=dir_fd)
        return os.open(TEMP_NAME, _CREATE_FLAGS, mode, dir_fd=dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view) :]


def access_acl(fd: int) -> bytes | None:
    """The POSIX access ACL of the file open on `fd` (the xattr's bytes), None if it has none."""
    try:
        if ACL_ACCESS not in os.listxattr(fd):
            return None
        return os.getxattr(fd, ACL_ACCESS)
    except OSError as error:
        if error.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def has_default_acl(dir_fd: int) -> bool:
    """Whether the directory open on `dir_fd` gives new files an ACL (a default ACL)."""
    try:
        return ACL_DEFAULT in os.listxattr(dir_fd)
    except OSError:
        return False


def replace_file(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    durable: bool,
    mode: int = NEW_FILE_MODE,
    owner: tuple[int, int] | None = None,
    acl: bytes | None = None,
    drop_inherited_acl: bool = False,
) -> None:
    """Make `name` in `dir_fd` hold exactly `data`, all or nothing.

    The new file gets `mode` (whatever the umask), `owner` (uid, gid; None: whoever
    creates it; when only root could give it but we are not root, it stays ours) and
    the access ACL `acl` (None: none; `drop_inherited_acl` removes one that the
    directory's default ACL gave it), all before it appears under `name`.

    With `durable`, the data is on disk before the rename; the caller makes the rename
    itself durable with `sync_directory`, which need not hold any lock. On any error the
    old file is untouched, no temp file is left behind, and the OSError propagates.
    """
    fd = _create_temp(dir_fd, mode)
    try:
        try:
            if owner is not None:
                try:  # noqa: SIM105 - contextlib would cost an import
                    os.fchown(fd, *owner)
                except PermissionError:
                    pass
            # After fchown, which clears set-id bits; O_CREAT's mode went through the umask.
            os.fchmod(fd, mode)
            if acl is not None:
                os.setxattr(fd, ACL_ACCESS, acl)
            elif drop_inherited_acl:
                _drop_acl(fd)
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(TEMP_NAME, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:  # noqa: SIM105 - contextlib would cost an import
            os.unlink(TEMP_NAME, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def _drop_acl(fd: int) -> None:
    try:
        os.removexattr(fd, ACL_ACCESS)
    except OSError as error:
        if error.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


def sync_directory(dir_fd: int) -> None:
    """Make the renames and unlinks done in `dir_fd` durable."""
    os.fsync(dir_fd)


def remove_file(dir_fd: int, name: str) -> bool:
    """Remove `name` from `dir_fd`; say whether it existed (see `sync_directory`)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True
