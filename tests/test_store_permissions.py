"""Who may read a record: a rewritten record keeps its owner, mode and POSIX ACL.

The suite runs as root (it mounts filesystems), which is how a root daemon or hook
rewrites the records of other users.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from store import Store, Timestamp
from store.atomic import TEMP_NAME

T0 = Timestamp.parse("2024-01-02T03:04:05Z")


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this suite runs as root (it mounts filesystems)")


def acl_of(path: Path) -> list[str]:
    """The ACL entries of `path` as `getfacl` prints them (numeric, no comments)."""
    result = subprocess.run(
        ["getfacl", "--omit-header", "--numeric", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if line]


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_a_users_record_in_a_root_directory_stays_the_users(state_dir: Path) -> None:
    record = state_dir / "lifecycle.json"
    Store(state_dir).update(started_at=T0)
    os.chown(record, 1234, 5678)
    os.chmod(record, 0o640)
    Store(state_dir).update(create_error=True)
    assert owner_and_mode(record) == (1234, 5678, 0o640)
    assert Store(state_dir).load().create_error is True


def test_a_new_record_in_another_users_directory_is_theirs_and_0600(state_dir: Path) -> None:
    os.chown(state_dir, 1234, 5678)
    previous = os.umask(0)
    try:
        Store(state_dir).update(started_at=T0)
    finally:
        os.umask(previous)
    assert owner_and_mode(state_dir / "lifecycle.json") == (1234, 5678, 0o600)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604, 0o400, 0o2640])
def test_the_mode_is_kept_whatever_the_umask(state_dir: Path, mode: int) -> None:
    record = state_dir / "lifecycle.json"
    Store(state_dir).update(started_at=T0)
    os.chmod(record, mode)
    previous = os.umask(0o277)
    try:
        Store(state_dir).update(create_error=True)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(record.stat().st_mode) == mode


def test_the_posix_acl_is_kept_with_its_mask(state_dir: Path) -> None:
    record = state_dir / "lifecycle.json"
    Store(state_dir).update(started_at=T0)
    subprocess.run(["setfacl", "-m", "u:4321:r,g:8765:rw,m::r", str(record)], check=True)
    before = acl_of(record)
    assert "user:4321:r--" in before
    assert "mask::r--" in before
    Store(state_dir).update(create_error=True)
    assert acl_of(record) == before
    # The mask, not the owning group's rights, still decides the group class.
    assert stat.S_IMODE(record.stat().st_mode) & 0o070 == 0o040


def test_a_record_without_acl_gets_none_from_a_default_acl(state_dir: Path) -> None:
    record = state_dir / "lifecycle.json"
    Store(state_dir).update(started_at=T0)
    subprocess.run(["setfacl", "-d", "-m", "u:4321:rw", str(state_dir)], check=True)
    Store(state_dir).update(create_error=True)
    assert acl_of(record) == ["user::rw-", "group::---", "other::---"]
    assert stat.S_IMODE(record.stat().st_mode) == 0o600


def test_a_stale_temp_file_gives_nothing_to_the_record(state_dir: Path) -> None:
    record = state_dir / "lifecycle.json"
    Store(state_dir).update(started_at=T0)
    stale = state_dir / TEMP_NAME
    stale.write_text("junk")
    os.chown(stale, 999, 999)
    os.chmod(stale, 0o666)
    subprocess.run(["setfacl", "-m", "u:4321:rwx", str(stale)], check=True)
    Store(state_dir).update(create_error=True)
    assert owner_and_mode(record) == (0, 0, 0o600)
    assert acl_of(record) == ["user::rw-", "group::---", "other::---"]
    assert os.listdir(state_dir) == ["lifecycle.json"]


def users_record_with_acl(state_dir: Path) -> list[str]:
    """Make a record owned by 1234:5678, readable by user 4321; return its ACL."""
    record = state_dir / "lifecycle.json"
    Store(state_dir).update(started_at=T0)
    os.chown(record, 1234, 5678)
    os.chmod(record, 0o660)
    subprocess.run(["setfacl", "-m", "u:4321:r", str(record)], check=True)
    return acl_of(record)


async def test_the_trio_variant_keeps_them_too(state_dir: Path) -> None:
    before = users_record_with_acl(state_dir)
    await Store(state_dir).aupdate(create_error=True)
    record = state_dir / "lifecycle.json"
    assert owner_and_mode(record)[:2] == (1234, 5678)
    assert acl_of(record) == before
