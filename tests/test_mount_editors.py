"""The everyday ways to change a file work on value files: sed -i, vim/ex, tempfile + rename..."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Lifecycle, Store, Timestamp
from tests.conftest import Mount
from tests.users import as_nobody, reachable

T0 = Timestamp.parse("2024-01-02T03:04:05Z")
LATER = "2025-06-07T08:09:10.5+02:00"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A depth-1 tree with c1 started at T0 (create_error false)."""
    root = tmp_path / "source"
    Store(root / "c1", create=True).update(started_at=T0)
    return root


def run(command: list[str] | str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        shell=isinstance(command, str),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": env.pop("HOME", "/nonexistent"), **env},
    )


def python_replace(path: Path, content: str) -> None:
    """What Python programs do: a temporary file beside the target, then os.replace."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as file:
        file.write(content)
    os.replace(file.name, path)


EDITS: dict[str, Callable[[Path], object]] = {
    "sed -i": lambda path: run(["sed", "-i", "s/false/true/", str(path)]),
    "ex": lambda path: run(["ex", "-u", "NONE", "-sc", "%s/false/true/|x", str(path)]),
    "vim": lambda path: run(
        ["vim", "-u", "NONE", "-Nes", "-c", "%s/false/true/", "-c", "wq", str(path)]
    ),
    "tempfile + os.replace": lambda path: python_replace(path, "true\n"),
    "install": lambda path: run(
        f"echo true > {path.parent.parent.parent}/v && install {path.parent.parent.parent}/v {path}"
    ),
    "cp": lambda path: run(
        f"echo true > {path.parent.parent.parent}/v && cp {path.parent.parent.parent}/v {path}"
    ),
    "tee": lambda path: run(f"echo true | tee {path}"),
    "dd": lambda path: run(f"echo true | dd of={path} status=none"),
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_a_tool_sets_create_error(
    mount: Callable[..., Mount], source: Path, edit: Callable[[Path], object]
) -> None:
    mnt = mount(source).path
    result = edit(mnt / "c1" / "create_error")
    if isinstance(result, subprocess.CompletedProcess):
        assert result.returncode == 0, result.stderr
    assert Store(source / "c1").load() == Lifecycle(T0, True)
    assert (mnt / "c1" / "create_error").read_text() == "true\n"
    assert sorted(os.listdir(mnt / "c1")) == ["create_error", "lifecycle.json", "started_at"]
    assert sorted(os.listdir(source / "c1")) == ["lifecycle.json"], (
        "a temporary file reached the disk"
    )


def test_sed_sets_started_at_keeping_the_offset(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    result = run(["sed", "-i", f"s/.*/{LATER}/", str(mnt / "c1" / "started_at")])
    assert result.returncode == 0, result.stderr
    assert Store(source / "c1").load().started_at == Timestamp.parse(LATER)


def test_a_rename_of_content_that_does_not_parse_fails_and_changes_nothing(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source).path
    before = (source / "c1" / "lifecycle.json").read_bytes()
    with pytest.raises(OSError, match="Invalid argument") as caught:
        python_replace(mnt / "c1" / "create_error", "maybe\n")
    assert caught.value.errno == errno.EINVAL
    result = run(["sed", "-i", "s/false/yes/", str(mnt / "c1" / "create_error")])
    assert result.returncode != 0
    assert (source / "c1" / "lifecycle.json").read_bytes() == before
    assert (mnt / "c1" / "create_error").read_text() == "false\n"


def test_temporary_files_live_in_memory_and_are_listed_to_their_creator_only(
    mount: Callable[..., Mount], source: Path
) -> None:
    os.chmod(source, 0o755)
    os.chmod(source / "c1", 0o777)
    mnt = mount(source, "-o", "allow_other").path
    temp = mnt / "c1" / "draft"
    temp.write_text("partial")
    assert temp.read_text() == "partial"
    assert "draft" in os.listdir(mnt / "c1")
    assert not (source / "c1" / "draft").exists()
    with reachable(mnt) as paths:
        theirs = as_nobody('ls "$1"/c1', paths)
        assert theirs.returncode == 0, theirs.stderr
        assert theirs.stdout.split() == ["create_error", "lifecycle.json", "started_at"]
    temp.unlink()
    assert "draft" not in os.listdir(mnt / "c1")


def test_temporary_files_are_bounded(mount: Callable[..., Mount], source: Path) -> None:
    mnt = mount(source).path
    with pytest.raises(OSError, match="too large") as too_big:
        (mnt / "c1" / "huge").write_bytes(b"x" * (1 << 20))
    assert too_big.value.errno == errno.EFBIG
    made = []

    def make_them() -> None:
        for index in range(100):
            path = mnt / "c1" / f"t{index}"
            path.write_text("x")
            made.append(path)

    with pytest.raises(OSError, match="No space left") as too_many:
        make_them()
    assert too_many.value.errno == errno.ENOSPC
    assert 0 < len(made) < 100
    for path in made:
        path.unlink()
    (mnt / "c1" / "again").write_text("room again")


def test_new_files_outside_containers_and_on_read_only_mounts_are_refused(
    mount: Callable[..., Mount], source: Path
) -> None:
    mnt = mount(source).path
    with pytest.raises(PermissionError):
        (mnt / "notes").write_text("x")
    read_only = mount(source, "-o", "ro").path
    with pytest.raises(OSError, match="Read-only") as caught:
        (read_only / "c1" / "draft").write_text("x")
    assert caught.value.errno == errno.EROFS


def test_an_unlinked_value_file_can_be_made_again_and_keeps_its_value_meanwhile(
    mount: Callable[..., Mount], source: Path
) -> None:
    """What `install` does: unlink the target, then create it anew with O_EXCL."""
    os.chmod(source, 0o755)
    os.chmod(source / "c1", 0o755)
    os.chmod(source / "c1" / "lifecycle.json", 0o644)
    mnt = mount(source, "-o", "allow_other").path
    value = mnt / "c1" / "started_at"
    value.unlink()
    assert Store(source / "c1").load() == Lifecycle(T0), "an unlink removed state"
    with reachable(mnt) as paths:
        other = as_nobody('cat "$1"/c1/started_at', paths)
    assert other.stdout == f"{T0}\n", "another user lost sight of the value"
    fd = os.open(value, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, f"{LATER}\n".encode())
    finally:
        os.close(fd)
    assert Store(source / "c1").load().started_at == Timestamp.parse(LATER)
    assert value.read_text() == f"{LATER}\n"
    with pytest.raises(FileExistsError):
        os.close(os.open(value, os.O_WRONLY | os.O_CREAT | os.O_EXCL))


def test_a_temporary_file_held_open_keeps_its_identity_when_unlinked_and_made_again(
    mount: Callable[..., Mount], source: Path
) -> None:
    """An open file outlives its name: a new file of that name is another file."""
    mnt = mount(source).path
    draft = mnt / "c1" / "draft"
    fd = os.open(draft, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"old")
        draft.unlink()
        draft.write_text("the new content")
        held, new = os.fstat(fd), draft.stat()
        assert held.st_ino != new.st_ino
        assert (held.st_size, new.st_size) == (3, len("the new content"))
        assert os.pread(fd, 100, 0) == b"old"
    finally:
        os.close(fd)
    assert draft.read_text() == "the new content"


def test_a_temporary_file_renamed_over_a_value_file_is_that_value_file_while_held_open(
    mount: Callable[..., Mount], source: Path
) -> None:
    """After the rename, the descriptor a tool kept shows the value file's size and mode.

    (Its inode number stays the temporary file's: numbers derive from the path.)
    """
    mnt = mount(source).path
    draft, value = mnt / "c1" / "draft", mnt / "c1" / "create_error"
    fd = os.open(draft, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"1\n")
        os.rename(draft, value)
        held = os.fstat(fd)
    finally:
        os.close(fd)
    assert Store(source / "c1").load() == Lifecycle(T0, True)
    assert (held.st_size, held.st_mode) == (len("true\n"), value.stat().st_mode)
    assert stat.S_IMODE(held.st_mode) == 0o600, "the record's mode, not the draft's"
