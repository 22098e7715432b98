"""Running commands as another local user (`nobody`), as a stranger on a shared host would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534


@contextmanager
def reachable(*directories: Path) -> Iterator[list[str]]:
    """Paths to `directories` that another user can use however deep they are.

    pytest's temporary directories are 0700: a descriptor of each directory, passed to
    the user's process, stands for it (`/dev/fd/N`), so that only the permissions of
    the directory itself and below are checked. Yields those paths; pass `fds()` on.
    """
    fds = [os.open(directory, os.O_RDONLY | os.O_DIRECTORY) for directory in directories]
    try:
        yield [f"/dev/fd/{fd}" for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


def fds_in(paths: list[str]) -> tuple[int, ...]:
    """The descriptors behind `reachable` paths, for `pass_fds`."""
    return tuple(int(path.rsplit("/", 1)[1]) for path in paths)


def command(uid: int, script: str, paths: list[str], groups: tuple[int, ...] = ()) -> list[str]:
    """The command that runs the shell `script` as `uid` (its own group, and `groups`)."""
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
        "sh",
        "-c",
        script,
        "sh",
        *paths,
    ]


def as_user(
    uid: int,
    script: str,
    paths: list[str],
    *,
    timeout: float = 30,
    groups: tuple[int, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run the shell `script` as `uid` (in `groups` too); $1... are `paths` (`reachable`)."""
    return subprocess.run(
        command(uid, script, paths, groups),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        pass_fds=fds_in(paths),
    )


def as_nobody(
    script: str, paths: list[str], *, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`as_user(NOBODY, ...)`."""
    return as_user(NOBODY, script, paths, timeout=timeout)
