"""Whatever bytes a user writes or renames into a value file: an errno or a value, never a crash.

One live mount takes every example; after each, the daemon still answers and the
record is one nerdctl can read.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import Store, Timestamp
from store.values import FIELDS, MAX_VALUE_BYTES, decode_value
from tests.conftest import force_unmount, lifecyclefs, wait_for_exit

ANSWERS = {errno.EINVAL, errno.EFBIG}
"""What a write that does not take may answer: a value that does not parse, or too long."""

values = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=MAX_VALUE_BYTES - 2, max_size=MAX_VALUE_BYTES + 2),
    st.sampled_from(
        [b"true", b"0\n", b"now", b"", b"\n", b"2024-01-02T03:04:05Z", b"2024-02-30T00:00:00Z"]
    ),
    st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One mount for every example: (SOURCE, MOUNTPOINT), always unmounted afterwards."""
    tmp = tmp_path_factory.mktemp("fuzz")
    source, mountpoint, pid_file = tmp / "source", tmp / "mnt", tmp / "pid"
    Store(source / "c1", create=True).update(started_at=Timestamp(0))
    mountpoint.mkdir()
    lifecyclefs(
        "mount", "-o", "nodurable", "--pid-file", str(pid_file), str(source), str(mountpoint)
    )
    pid = int(pid_file.read_text())
    try:
        yield source, mountpoint
    finally:
        lifecyclefs("umount", str(mountpoint), check=False)
        if not wait_for_exit(pid, timeout=10):
            force_unmount(mountpoint)


def expected(name: str, data: bytes) -> bool:
    """Whether `data` parses as a value of `name`, as the command line would take it."""
    if len(data) > MAX_VALUE_BYTES:
        return False
    try:
        FIELDS[name].parse(decode_value(data))
    except ValueError:
        return False
    return True


def put(target: Path, data: bytes, *, rename: bool) -> int | None:
    """Write `data` to `target` in one write, or rename a file of it over `target`.

    Returns the errno it failed with, None when it took.
    """
    try:
        if rename:
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as file:
                file.write(data)
            try:
                os.replace(file.name, target)
            finally:
                if os.path.exists(file.name):
                    os.unlink(file.name)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
    except OSError as error:
        return error.errno
    return None


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(["started_at", "create_error"]), data=values, rename=st.booleans())
def test_any_bytes_written_to_a_value_file(
    live: tuple[Path, Path], name: str, data: bytes, rename: bool
) -> None:
    source, mnt = live
    before = (source / "c1" / "lifecycle.json").read_bytes()
    failed = put(mnt / "c1" / name, data, rename=rename)
    if not rename and data == b"":
        assert failed is None  # a write of nothing reaches nobody, and changes nothing
    elif expected(name, data):
        assert failed is None
    else:
        assert failed in ANSWERS
        assert (source / "c1" / "lifecycle.json").read_bytes() == before, "a refusal changed it"
    Store(source / "c1").load()  # still a record nerdctl can read
    assert (mnt / "c1" / "create_error").read_text() in ("true\n", "false\n")
    assert sorted(os.listdir(mnt / "c1")) == ["create_error", "lifecycle.json", "started_at"]
