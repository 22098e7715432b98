"""Writers through a mount and through the library at once: no update is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from store import Store, Timestamp
from tests.conftest import Mount
from tests.processes import run_workers
from tests.workers import ONE_SECOND


def test_mount_writes_change_only_their_own_field(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    source = tmp_path / "source"
    Store(source / "c1", create=True).update(started_at=Timestamp(0))
    live = mount(source)
    value_file = live.path / "c1" / "create_error"
    run_workers([("write-file", value_file, 200)] * 4 + [("bump", source / "c1", 200)] * 4)
    # Had a write through the mount written back a stale started_at, bumps would be lost.
    record = Store(source / "c1").load()
    assert record.started_at.unix_ns == 4 * 200 * ONE_SECOND
    assert record.create_error is False  # every writer's last value was "false"
    assert value_file.read_text() == "false\n"
