"""The shape of the view: depth, what is shown, attributes, permissions, big trees."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fusefs.inodes import ROOT, InodeTable
from store import Store, Timestamp
from tests.conftest import Mount
from tests.users import NOBODY, as_nobody, reachable


def started(directory: Path, seconds: int) -> None:
    Store(directory, create=True).update(started_at=Timestamp(seconds * 10**9))


def test_depth_2_is_nerdctls_namespace_layout(mount: Callable[..., Mount], tmp_path: Path) -> None:
    containers = tmp_path / "containers"
    started(containers / "default" / "web", 1)
    started(containers / "k8s.io" / "pause", 2)
    mnt = mount(containers, "--depth", "2").path
    assert sorted(os.listdir(mnt)) == ["default", "k8s.io"]
    assert os.listdir(mnt / "default") == ["web"]
    assert sorted(os.listdir(mnt / "default" / "web")) == [
        "create_error",
        "lifecycle.json",
        "started_at",
    ]
    assert (mnt / "k8s.io" / "pause" / "started_at").read_text() == "1970-01-01T00:00:02Z\n"
    assert not (mnt / "default" / "started_at").exists()


def test_only_visible_directories_are_shown(mount: Callable[..., Mount], tmp_path: Path) -> None:
    source = tmp_path / "source"
    started(source / "c1", 1)
    (source / ".hidden").mkdir()
    (source / ".temp.lifecycle.json").write_text("{}")
    (source / "notes.txt").write_text("a file")
    outside = tmp_path / "outside"
    started(outside, 3)
    (source / "escape").symlink_to(outside)
    (source / "c1" / "hostname").write_text("c1\n")
    mnt = mount(source).path
    assert os.listdir(mnt) == ["c1"]
    for hidden in (".hidden", ".temp.lifecycle.json", "notes.txt", "escape", "escape/started_at"):
        assert not (mnt / hidden).exists(), hidden
    assert sorted(os.listdir(mnt / "c1")) == ["create_error", "lifecycle.json", "started_at"]


def test_symlinked_level_never_leads_outside_the_source(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    containers = tmp_path / "containers"
    started(containers / "default" / "web", 1)
    outside = tmp_path / "elsewhere"
    started(outside / "secret", 3)
    mnt = mount(containers, "--depth", "2").path
    assert (mnt / "default" / "web" / "started_at").read_text() == "1970-01-01T00:00:01Z\n"
    # Swap the namespace directory for a symlink while the view knows it.
    (containers / "default").rename(tmp_path / "moved")
    (containers / "default").symlink_to(outside)
    with pytest.raises(FileNotFoundError):
        (mnt / "default" / "secret" / "started_at").read_text()
    with pytest.raises(OSError, match=r"No such file|Too many levels"):
        (mnt / "default" / "web" / "started_at").read_text()
    assert Store(outside / "secret").load().started_at == Timestamp(3 * 10**9)


def test_attributes_follow_the_backing_directory_and_record(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    source = tmp_path / "source"
    started(source / "c1", 1)
    Store(source / "c2", create=True)
    os.chown(source / "c1", 1000, 1001)
    os.chown(source / "c1" / "lifecycle.json", 1000, 1001)
    os.utime(source / "c1" / "lifecycle.json", ns=(5 * 10**9, 7 * 10**9))
    os.chown(source / "c2", 2000, 2001)
    mnt = mount(source).path
    directory = (mnt / "c1").stat()
    assert (directory.st_uid, directory.st_gid) == (1000, 1001)
    assert stat.S_IMODE(directory.st_mode) == 0o700
    value = (mnt / "c1" / "started_at").stat()
    assert (value.st_uid, value.st_gid, stat.S_IMODE(value.st_mode)) == (1000, 1001, 0o600)
    assert value.st_mtime_ns == 7 * 10**9
    # No record yet: what the first write will create (0600, the directory's owner).
    empty = (mnt / "c2" / "create_error").stat()
    assert (empty.st_uid, empty.st_gid, stat.S_IMODE(empty.st_mode)) == (2000, 2001, 0o600)


def test_the_kernel_enforces_permissions(mount: Callable[..., Mount], tmp_path: Path) -> None:
    source = tmp_path / "source"
    started(source / "root-only", 1)
    started(source / "nobodys", 2)
    os.chown(source / "nobodys", NOBODY, NOBODY)
    os.chown(source / "nobodys" / "lifecycle.json", NOBODY, NOBODY)
    os.chmod(source, 0o755)
    with reachable(mount(source, "-o", "allow_other").path) as paths:
        denied = as_nobody('cat "$1"/root-only/started_at', paths)
        assert denied.returncode == 1
        assert "Permission denied" in denied.stderr
        denied = as_nobody('echo true > "$1"/root-only/create_error', paths)
        assert "Permission denied" in denied.stderr
        assert Store(source / "root-only").load().create_error is False
        allowed = as_nobody(
            'echo true > "$1"/nobodys/create_error && cat "$1"/nobodys/started_at', paths
        )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == "1970-01-01T00:00:02Z\n"
    record = source / "nobodys" / "lifecycle.json"
    assert (record.stat().st_uid, record.stat().st_gid) == (NOBODY, NOBODY)
    assert Store(source / "nobodys").load().create_error is True


def test_inode_numbers_are_stable_while_mounted(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    source = tmp_path / "source"
    for index in range(3):
        started(source / f"c{index}", index)
    mnt = mount(source).path
    first = {path: os.stat(path).st_ino for path in mnt.glob("*/*")}
    assert len(set(first.values())) == 9
    subprocess.run(["sh", "-c", "echo 2 > /proc/sys/vm/drop_caches"], check=True)
    assert {path: os.stat(path).st_ino for path in mnt.glob("*/*")} == first


def test_inode_table_forgets_what_the_kernel_forgets() -> None:
    table = InodeTable()
    nodes = [table.remember((b"c%d" % index, b"started_at")) for index in range(1000)]
    again = table.remember((b"c0", b"started_at"))
    assert again is nodes[0]
    assert len({node.ino for node in nodes}) == 1000
    assert ROOT not in {node.ino for node in nodes}
    table.forget(nodes[0].ino, 2)
    for node in nodes[1:]:
        table.forget(node.ino, 1)
    assert len(table) == 1  # only the root, which is never forgotten
    assert table.remember((b"c5", b"started_at")).ino == nodes[5].ino


def test_a_thousand_containers_listed_and_read_in_full(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    source = tmp_path / "source"
    for index in range(1000):
        started(source / f"c{index:04d}", index)
    mnt = mount(source).path
    listing = subprocess.run(
        ["ls", "-l", str(mnt)], capture_output=True, text=True, timeout=60, check=True
    )
    assert len(listing.stdout.splitlines()) == 1001  # "total" and one line each
    seen = {path.parent.name: path.read_text() for path in mnt.glob("*/started_at")}
    assert len(seen) == 1000
    for index in range(1000):
        assert seen[f"c{index:04d}"] == Timestamp(index * 10**9).format() + "\n"
