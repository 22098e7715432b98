"""Writers through a mount and through the library at once: no update is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from store import Store, Timestamp
from tests.conftest import Mount
from tests.processes import run_workers
from tests.workers import ONE_SECOND

T0 = Timestamp.parse("2024-01-02T03:04:05.123456789Z")


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


def test_each_read_is_one_whole_value_while_it_changes_outside(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    """Values that change size under readers (set, unset, true, false) never read torn."""
    source = tmp_path / "source"
    state = Store(source / "c1", create=True, durable=False)
    state.update(started_at=T0)
    mnt = mount(source).path
    whole = {
        "started_at": {"", f"{T0}\n"},
        "create_error": {"true\n", "false\n"},
    }
    deadline = time.monotonic() + 2.5
    torn: list[tuple[str, str]] = []
    reads = [0]

    def read() -> None:
        while time.monotonic() < deadline:
            for name, values in whole.items():
                text = (mnt / "c1" / name).read_text()
                reads[0] += 1
                if text not in values:
                    torn.append((name, text))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    flip = False
    while time.monotonic() < deadline:
        flip = not flip
        state.update(started_at=T0 if flip else Timestamp.UNSET, create_error=flip)
    for reader in readers:
        reader.join(timeout=30)
    assert not torn, f"{len(torn)} torn reads of {reads[0]}, e.g. {torn[:3]}"
    assert reads[0] > 100, "the readers hardly ran"
