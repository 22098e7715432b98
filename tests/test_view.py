"""The view's paths stay inside SOURCE, with openat2 and with the walk that replaces it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusefs import view as view_module
from fusefs.view import View
from store import Store, Timestamp


@pytest.fixture(params=["openat2", "walk"])
def view(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[View]:
    """A depth-2 view of a tree with one container, default/c1, and a secret outside it."""
    if request.param == "walk":
        monkeypatch.setattr(view_module, "_openat2", None)  # as on kernels before 5.6
    else:
        assert view_module._openat2 is not None, "this kernel has openat2"
    source = tmp_path / "containers"
    Store(source / "default" / "c1", create=True).update(started_at=Timestamp(0))
    Store(tmp_path / "secret", create=True).update(create_error=True)
    (source / "default" / "link").symlink_to(tmp_path / "secret")
    (source / "evil").symlink_to(tmp_path)
    shown = View(str(source), depth=2)
    yield shown
    shown.close()


def test_a_container_record_opens(view: View) -> None:
    fd = view.open_record((b"default", b"c1"))
    try:
        assert os.read(fd, 100) == b'{"started_at":"1970-01-01T00:00:00Z","create_error":false}'
    finally:
        os.close(fd)
    os.close(view.open_dir((b"default", b"c1")))
    assert view.list_names((b"default",), 100) == [b"c1"]
    assert view.list_names((), 100) == [b"default"]


@pytest.mark.parametrize(
    "parts",
    [(b"default", b"link"), (b"evil", b"secret"), (b"..", b"secret"), (b"default", b".."), (b"x",)],
)
def test_nothing_outside_source_is_reached(view: View, parts: tuple[bytes, ...]) -> None:
    with pytest.raises(FileNotFoundError):
        view.open_dir(parts)
    with pytest.raises(FileNotFoundError):
        view.stat_dir(parts)
    refusals = r"No such file|Not a directory|Too many levels of symbolic|Invalid cross-device"
    with pytest.raises(OSError, match=refusals):
        os.close(view.open_record(parts))
