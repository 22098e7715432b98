"""`lifecyclefs ps`: nerdctl ps's lines with Docker's "Up 5 minutes", and `--json`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fusefs.ps import human_duration, status
from store import Lifecycle, Store, Timestamp
from tests.conftest import LIFECYCLEFS, lifecyclefs, lifecyclefs_to_a_gone_reader
from tests.processes import lock_held_elsewhere

SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 30 * DAY
YEAR = 365 * DAY
ID = "4f1c0ab35d7e9a2b6c8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d"
NOW = Timestamp.parse("2026-12-06T19:24:04.5Z")


@pytest.mark.parametrize(
    ("duration", "shown"),
    [
        # go-units' own examples and tests.
        (450 * SECOND // 1000, "Less than a second"),
        (1 * SECOND, "1 second"),
        (47 * SECOND, "47 seconds"),
        (1 * MINUTE, "About a minute"),
        (3 * MINUTE, "3 minutes"),
        (35 * MINUTE + 40 * SECOND, "35 minutes"),
        (1 * HOUR, "About an hour"),
        (1 * HOUR + 29 * MINUTE, "About an hour"),
        (1 * HOUR + 31 * MINUTE, "2 hours"),
        (3 * HOUR + 59 * MINUTE, "4 hours"),
        (24 * HOUR, "24 hours"),
        (1 * DAY + 12 * HOUR, "36 hours"),
        (2 * DAY, "2 days"),
        (13 * DAY + 5 * HOUR, "13 days"),
        (2 * WEEK, "2 weeks"),
        (4 * WEEK + 3 * DAY, "4 weeks"),
        (1 * MONTH, "4 weeks"),
        (1 * MONTH + 2 * WEEK, "6 weeks"),
        (2 * MONTH, "2 months"),
        (23 * MONTH, "23 months"),
        (24 * MONTH, "24 months"),
        (24 * MONTH + 2 * WEEK, "2 years"),
        (3 * YEAR + 2 * MONTH, "3 years"),
        # Each threshold, from just below to on it.
        (SECOND - 1, "Less than a second"),
        (2 * SECOND - 1, "1 second"),
        (2 * SECOND, "2 seconds"),
        (MINUTE - 1, "59 seconds"),
        (2 * MINUTE - 1, "About a minute"),
        (2 * MINUTE, "2 minutes"),
        (HOUR - 1, "59 minutes"),
        (HOUR + 30 * MINUTE - 1, "About an hour"),  # hours are rounded, half away from zero
        (HOUR + 30 * MINUTE, "2 hours"),
        (47 * HOUR + 30 * MINUTE - 1, "47 hours"),
        (47 * HOUR + 30 * MINUTE, "2 days"),
        (14 * DAY - 30 * MINUTE - 1, "13 days"),
        (14 * DAY - 30 * MINUTE, "2 weeks"),
        (60 * DAY - 30 * MINUTE - 1, "8 weeks"),
        (60 * DAY - 30 * MINUTE, "2 months"),
        (2 * YEAR - 31 * MINUTE, "24 months"),
        # Go's quirk: rounded up to two years, but the years are counted truncated.
        (2 * YEAR - 30 * MINUTE, "1 years"),
        (2 * YEAR - 30 * MINUTE - 1, "1 years"),  # float64 rounding, as in Go
        (2 * YEAR, "2 years"),
        # A clock set back, and Go's time.Sub saturating at 292 years.
        (-5 * SECOND, "Less than a second"),
        (0, "Less than a second"),
        (Timestamp.parse("2026-12-06T19:24:04Z").unix_ns - Timestamp.UNSET.unix_ns, "292 years"),
    ],
)
def test_durations_exactly_as_docker_prints_them(duration: int, shown: str) -> None:
    assert human_duration(duration) == shown
    started = Lifecycle(Timestamp(NOW.unix_ns - duration, 3600))
    assert status(started, NOW) == f"Up {shown}"


def test_a_container_never_started_is_created() -> None:
    assert status(Lifecycle(), NOW) == "Created"


def ago(duration_ns: int, offset: int = 0) -> Timestamp:
    now = Timestamp.now()
    return Timestamp(now.unix_ns - duration_ns, offset)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """containers/<namespace>/<id>: started 5 min 30 s ago, never started, 3 days ago."""
    source = tmp_path / "containers"
    Store(source / "default" / ID, create=True).update(
        started_at=ago(5 * MINUTE + 30 * SECOND, offset=-7 * 3600)
    )
    Store(source / "default" / "web", create=True)
    Store(source / "default" / "web").update(create_error=True)
    three_days_ago = ago(3 * DAY + 2 * HOUR).unix_ns // SECOND * SECOND + 123_456_789
    Store(source / "k8s.io" / "pod", create=True).update(started_at=Timestamp(three_days_ago, 3600))
    (source / "default" / ".hidden").mkdir()
    return source


def run_ps(*arguments: str, tz: str = "UTC") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIFECYCLEFS, "ps", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TZ": tz},
    )


def test_table_like_nerdctl_ps(tree: Path) -> None:
    result = run_ps("--depth", "2", str(tree), tz="CET-1")  # POSIX for UTC+01:00
    assert result.returncode == 0, result.stderr
    started = [
        Store(tree / name).load().started_at.unix_ns // SECOND * SECOND  # to the second
        for name in (f"default/{ID}", "k8s.io/pod")
    ]
    local = [Timestamp(instant, 3600) for instant in started]  # in the table's time zone
    assert result.stdout.splitlines() == [
        "NAMESPACE   CONTAINER ID   STARTED                     STATUS         CREATE ERROR",
        f"default     4f1c0ab35d7e   {local[0]}   Up 5 minutes   false",
        "default     web                                        Created        true",
        f"k8s.io      pod            {local[1]}   Up 3 days      false",
    ]
    assert result.stderr == ""


def test_no_trunc_shows_whole_ids(tree: Path) -> None:
    result = run_ps("--depth", "2", "--no-trunc", str(tree))
    assert result.stdout.splitlines()[1].split()[:2] == ["default", ID]


def test_json_gives_the_exact_values(tree: Path) -> None:
    result = run_ps("--depth", "2", "--json", str(tree))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    stored = Store(tree / "default" / ID).load().started_at.format()
    assert stored.endswith("-07:00")
    pod = Store(tree / "k8s.io" / "pod").load().started_at.format()
    assert pod.endswith(".123456789+01:00")
    assert lines == [
        {
            "namespace": "default",
            "id": ID,
            "started_at": stored,
            "create_error": False,
            "status": "Up 5 minutes",
        },
        {
            "namespace": "default",
            "id": "web",
            "started_at": None,
            "create_error": True,
            "status": "Created",
        },
        {
            "namespace": "k8s.io",
            "id": "pod",
            "started_at": pod,
            "create_error": False,
            "status": "Up 3 days",
        },
    ]


def test_depth_1_has_no_namespace(tmp_path: Path) -> None:
    Store(tmp_path / "c1", create=True).update(started_at=ago(3 * HOUR + 10 * MINUTE))
    result = run_ps(str(tmp_path))
    header, line = result.stdout.splitlines()
    assert header == "CONTAINER ID   STARTED                STATUS       CREATE ERROR"
    assert line.split()[0] == "c1"
    assert line.split()[2:] == ["Up", "3", "hours", "false"]
    (line,) = run_ps("--json", str(tmp_path)).stdout.splitlines()
    assert json.loads(line)["namespace"] is None


def test_a_corrupt_record_is_shown_on_its_line(tree: Path) -> None:
    (tree / "default" / "web" / "lifecycle.json").write_bytes(b"")
    result = run_ps("--depth", "2", str(tree))
    assert result.returncode == 1
    assert result.stdout.splitlines()[2].split() == ["default", "web", "Corrupt", "record"]
    assert result.stdout.splitlines()[3].split()[:2] == ["k8s.io", "pod"]
    assert result.stderr == (
        f"lifecyclefs: corrupt record {tree}/default/web/lifecycle.json:"
        " the record is empty (nerdctl: unexpected end of JSON input)\n"
    )
    as_json = run_ps("--depth", "2", "--json", str(tree))
    assert as_json.returncode == 1
    web = json.loads(as_json.stdout.splitlines()[1])
    assert web["status"] == "Corrupt record"
    assert web["started_at"] is None
    assert web["error"].startswith("corrupt record ")


def test_ps_never_waits_for_a_lock(tree: Path) -> None:
    with lock_held_elsewhere(tree / "default" / "web"):
        result = run_ps("--depth", "2", "--json", str(tree))
    assert result.returncode == 0
    assert json.loads(result.stdout.splitlines()[1])["create_error"] is True


def test_a_reader_that_leaves_early_is_not_an_error(tree: Path) -> None:
    result = lifecyclefs_to_a_gone_reader("ps", "--depth", "2", str(tree))
    assert (result.returncode, result.stderr) == (0, "")


def test_an_empty_tree_prints_the_header(tmp_path: Path) -> None:
    assert (
        lifecyclefs("ps", str(tmp_path)).stdout
        == "CONTAINER ID   STARTED   STATUS   CREATE ERROR\n"
    )
    assert lifecyclefs("ps", "--json", str(tmp_path)).stdout == ""


def test_a_missing_source_is_one_line(tmp_path: Path) -> None:
    result = lifecyclefs("ps", str(tmp_path / "gone"), check=False)
    assert result.returncode == 1
    assert result.stderr == f"lifecyclefs: cannot open {tmp_path}/gone: No such file or directory\n"
