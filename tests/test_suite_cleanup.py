"""The suite's own promise: a failing test still leaves no mount and no daemon behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fusefs.mount import lifecyclefs_mounts
from tests.conftest import wait_for_exit
from tests.processes import REPO

pytest_plugins = ["pytester"]


def test_a_failing_test_leaves_no_mount_and_no_daemon(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("LIFECYCLEFS_TEST_REPORT", str(report))
    pytester.makeconftest("from tests.conftest import mount, nothing_left_behind  # noqa: F401")
    pytester.makepyfile(
        """
        import os
        from pathlib import Path

        def test_fails_while_mounted(mount, tmp_path):
            (tmp_path / "source" / "c1").mkdir(parents=True)
            live = mount(tmp_path / "source")
            Path(os.environ["LIFECYCLEFS_TEST_REPORT"]).write_text(f"{live.pid} {live.path}")
            assert (live.path / "c1" / "create_error").read_text() == "false\\n"
            raise AssertionError("this test fails on purpose")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    pid, path = report.read_text().split(" ", 1)
    assert wait_for_exit(int(pid), timeout=10)
    assert path not in lifecyclefs_mounts()
    assert os.listdir(path) == [], "the mount point still shows the mount"
