"""Create a demo state tree in nerdctl's layout, and show the `store` library on it.

`python scripts/demo_tree.py DIR` makes DIR/containers/default/{web,db,cache} and
DIR/containers/k8s.io/{pause}: state directories holding a `lifecycle.json` each, one
written byte for byte as nerdctl writes it, one never started. Then it loads and
transforms one record through `store` and prints what it did.
"""

from __future__ import annotations

import sys
from pathlib import Path

from store import Lifecycle, Store, Timestamp

NERDCTL_RECORD = b'{"started_at":"2024-01-02T04:04:05.123456789+01:00","create_error":false}'


def shift_one_second(record: Lifecycle) -> None:
    """A transform: move `started_at` one second later."""
    record.started_at = record.started_at.shifted(seconds=1)


def make_tree(root: Path) -> Path:
    """Create (or reset) the demo tree under `root`; return its `containers` directory."""
    containers = root / "containers"
    Store(containers / "default" / "web", create=True).update(started_at=Timestamp.now())
    db = containers / "default" / "db"
    Store(db, create=True)
    (db / "lifecycle.json").write_bytes(NERDCTL_RECORD)
    Store(containers / "default" / "cache", create=True).delete()  # created, never started
    Store(containers / "k8s.io" / "pause", create=True).update(create_error=True)
    return containers


def main(root: Path) -> None:
    """Make the tree and show a load and a transform through the library."""
    containers = make_tree(root)
    print(f"demo state tree: {containers}")
    db = Store(containers / "default" / "db")
    record = db.load()
    print(f"  load db:         started_at={record.started_at}  create_error={record.create_error}")
    db.transform(shift_one_second)
    print(f"  transform +1 s:  {(containers / 'default' / 'db' / 'lifecycle.json').read_text()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
