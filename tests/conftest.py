"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden" / "nerdctl-v2.0.3"
OCI_STATE = DATA / "oci-state"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An empty container state directory, 0700 as nerdctl makes it."""
    path = tmp_path / "state" / "default" / "c1"
    path.mkdir(parents=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
