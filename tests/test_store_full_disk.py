"""A full filesystem: the transform fails cleanly and the previous record survives."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from store import LifecycleStoreError, Store, Timestamp
from tests.conftest import fill

T0 = Timestamp.parse("2024-01-02T03:04:05Z")


@pytest.mark.parametrize("durable", [True, False])
def test_full_filesystem_fails_with_enospc_and_keeps_the_record(
    tiny_tmpfs: Path, durable: bool
) -> None:
    state_dir = tiny_tmpfs / "c1"
    store = Store(state_dir, create=True, durable=durable)
    store.update(started_at=T0)
    before = (state_dir / "lifecycle.json").read_bytes()
    filler = fill(tiny_tmpfs)

    with pytest.raises(LifecycleStoreError, match="No space left") as caught:
        store.update(create_error=True)

    assert caught.value.errno == errno.ENOSPC
    assert isinstance(caught.value.__cause__, OSError)
    assert (state_dir / "lifecycle.json").read_bytes() == before
    assert os.listdir(state_dir) == ["lifecycle.json"]
    assert store.create_error is False

    filler.unlink()
    store.update(create_error=True)
    assert Store(state_dir).load().create_error is True
