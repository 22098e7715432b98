"""Under load: every read through the mount is a whole value, and no update is lost.

The same run as `scripts/soak`'s load figures, shorter: readers and writers through
the mount and nerdctl-style raw writers, all on the same few containers at once.
"""

from __future__ import annotations

from pathlib import Path

from soak import run_load


def test_readers_writers_and_nerdctl_at_once_see_only_whole_values(tmp_path: Path) -> None:
    result = run_load(tmp_path, 4.0, writers=6, readers=6, raw=2, containers=3)
    assert result.errors == []
    assert result.lost_updates == 0
    for kind in ("reader", "writer", "raw"):
        assert result.by_kind[kind].operations > 0, f"no {kind} got through"
