"""`lifecyclefs get/set/show/delete` on real state directories, as scripts use them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Lifecycle, Store, Timestamp
from tests.conftest import GOLDEN, LIFECYCLEFS, Mount, lifecyclefs
from tests.processes import changes_made_in, lock_held_elsewhere

GOLDEN_FILES = sorted(GOLDEN.glob("*.json"))


def record_bytes(state_dir: Path) -> bytes:
    return (state_dir / "lifecycle.json").read_bytes()


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=lambda path: path.stem)
def test_get_and_show_read_nerdctls_golden_records(state_dir: Path, golden: Path) -> None:
    shutil.copy(golden, state_dir / "lifecycle.json")
    record = Store(state_dir).load()
    started = "" if record.started_at.is_unset else f"{record.started_at}\n"
    error = f"{str(record.create_error).lower()}\n"
    assert lifecyclefs("get", str(state_dir)).stdout == (started or "\n") + error
    assert lifecyclefs("get", str(state_dir), "started_at").stdout == started
    assert lifecyclefs("get", str(state_dir), "create_error").stdout == error
    assert lifecyclefs("show", "--json", str(state_dir)).stdout == golden.read_text() + "\n"
    assert record_bytes(state_dir) == golden.read_bytes(), "reading changed the record"


def test_get_prints_exactly_what_the_filesystem_shows(
    mount: Callable[..., Mount], tmp_path: Path
) -> None:
    source = tmp_path / "source"
    Store(source / "c1", create=True).update(
        started_at=Timestamp.parse("2024-01-02T04:04:05.5+01:00"), create_error=True
    )
    Store(source / "c2", create=True)
    mnt = mount(source).path
    for container in ("c1", "c2"):
        for field in ("started_at", "create_error"):
            shown = lifecyclefs("get", str(source / container), field).stdout
            assert shown == (mnt / container / field).read_text()


def test_set_changes_several_fields_in_one_transform(state_dir: Path) -> None:
    lifecyclefs(
        "set", str(state_dir), "started_at=2024-01-02T03:04:05.000000001-07:00", "create_error=1"
    )
    assert record_bytes(state_dir) == (
        b'{"started_at":"2024-01-02T03:04:05.000000001-07:00","create_error":true}'
    )
    lifecyclefs("set", str(state_dir), "started_at=", "create_error=false")
    assert Store(state_dir).load() == Lifecycle()


def test_set_now(state_dir: Path) -> None:
    before = Timestamp.now()
    lifecyclefs("set", str(state_dir), "started_at=now")
    after = Timestamp.now()
    assert before.unix_ns <= Store(state_dir).load().started_at.unix_ns <= after.unix_ns


@pytest.mark.parametrize(
    ("assignment", "status", "message"),
    [
        ("started_at=yesterday", 1, "lifecyclefs: started_at: not an RFC 3339 time: 'yesterday'"),
        ("create_error=yes", 1, "lifecyclefs: create_error: expected true, false, 1 or 0"),
        ("started_at=2024-01-02T03:04:05+24:00", 1, "lifecyclefs: started_at: UTC offset"),
        ("color=red", 2, "lifecyclefs set: usage error: expected FIELD=VALUE"),
        ("started_at", 2, "lifecyclefs set: usage error: expected FIELD=VALUE"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(
    state_dir: Path, assignment: str, status: int, message: str
) -> None:
    lifecyclefs("set", str(state_dir), "create_error=true")
    before = record_bytes(state_dir)
    result = lifecyclefs("set", str(state_dir), "started_at=now", assignment, check=False)
    assert result.returncode == status
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert record_bytes(state_dir) == before


def test_corrupt_record_is_one_clear_line_and_exit_1(state_dir: Path) -> None:
    (state_dir / "lifecycle.json").write_bytes(b'{"started_at":')
    for command in (["get"], ["show"], ["set", "started_at=now"]):
        result = lifecyclefs(command[0], str(state_dir), *command[1:], check=False)
        assert result.returncode == 1
        assert result.stderr.startswith(f"lifecyclefs: corrupt record {state_dir}/lifecycle.json")
        assert result.stderr.count("\n") == 1
    assert record_bytes(state_dir) == b'{"started_at":'
    lifecyclefs("delete", str(state_dir))
    assert lifecyclefs("get", str(state_dir)).stdout == "\nfalse\n"


def test_missing_state_directory(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    result = lifecyclefs("get", str(missing), check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"lifecyclefs: cannot open state directory {missing}: No such file or directory\n"
    )
    assert lifecyclefs("delete", str(missing)).returncode == 0
    assert not missing.exists()


def test_show_forms(state_dir: Path) -> None:
    assert lifecyclefs("show", str(state_dir)).stdout == (
        "started_at:   (not started)\ncreate_error: false\n"
    )
    assert json.loads(lifecyclefs("show", "--docker", str(state_dir)).stdout) == {
        "State": {"StartedAt": ""}
    }
    lifecyclefs("set", str(state_dir), "started_at=2024-01-02T04:04:05.123456789+01:00")
    assert lifecyclefs("show", str(state_dir)).stdout == (
        "started_at:   2024-01-02T04:04:05.123456789+01:00\ncreate_error: false\n"
    )
    # nerdctl inspect shows StartedAt in UTC.
    assert json.loads(lifecyclefs("show", "--docker", str(state_dir)).stdout) == {
        "State": {"StartedAt": "2024-01-02T03:04:05.123456789Z"}
    }
    assert lifecyclefs("show", "--json", str(state_dir)).stdout == (
        '{"started_at":"2024-01-02T04:04:05.123456789+01:00","create_error":false}\n'
    )


def test_delete_removes_only_the_record(state_dir: Path) -> None:
    (state_dir / "hostname").write_text("c1\n")
    lifecyclefs("set", str(state_dir), "create_error=true")
    lifecyclefs("delete", str(state_dir))
    assert [path.name for path in state_dir.iterdir()] == ["hostname"]
    lifecyclefs("delete", str(state_dir))


def test_lock_timeout_gives_up_with_a_clear_line(state_dir: Path) -> None:
    with lock_held_elsewhere(state_dir):
        result = lifecyclefs(
            "set", "--lock-timeout", "0.1", str(state_dir), "create_error=true", check=False
        )
        assert lifecyclefs("get", str(state_dir), "create_error").stdout == "false\n"
    assert result.returncode == 1
    assert result.stderr == (
        f"lifecyclefs: cannot lock {state_dir}: still held by another process after 0.1 s\n"
    )


DURABLY = "fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat"


def test_set_and_delete_write_durably(tmp_path: Path, state_dir: Path) -> None:
    """As Store does by default: the new record's data, then its directory, reach the disk."""
    set_ = [LIFECYCLEFS, "set", str(state_dir), "create_error=true"]
    assert changes_made_in(state_dir, set_, DURABLY, tmp_path / "set.log") == [
        "fsync(<D/.temp.lifecycle.json>",
        'renameat(<D>, ".temp.lifecycle.json", <D>, "lifecycle.json"',
        "fsync(<D>",
    ]
    delete = [LIFECYCLEFS, "delete", str(state_dir)]
    assert changes_made_in(state_dir, delete, DURABLY, tmp_path / "delete.log") == [
        'unlinkat(<D>, "lifecycle.json", 0',
        "fsync(<D>",
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["get", "DIR"],
        ["get", "DIR", "started_at"],
        ["show", "DIR"],
        ["show", "--json", "DIR"],
        ["show", "--docker", "DIR"],
    ],
)
def test_get_and_show_never_wait_for_the_lock(state_dir: Path, command: list[str]) -> None:
    """They read the last committed record while nerdctl (or anyone) holds the lock."""
    Store(state_dir).update(started_at=Timestamp.parse("2024-01-02T03:04:05Z"))
    argv = [str(state_dir) if word == "DIR" else word for word in command]
    with lock_held_elsewhere(state_dir):
        result = subprocess.run(
            [LIFECYCLEFS, *argv], capture_output=True, text=True, timeout=10, check=False
        )
    assert result.returncode == 0, result.stderr
    assert "2024-01-02" in result.stdout


@pytest.mark.parametrize(
    "arguments",
    [[], ["get"], ["get", "/x", "colour"], ["set", "/x"], ["show", "--json", "--docker", "/x"]],
)
def test_usage_errors_exit_2(arguments: list[str]) -> None:
    result = lifecyclefs(*arguments, check=False)
    assert result.returncode == 2
    assert "usage error" in result.stderr


@pytest.mark.parametrize("seconds", ["nan", "inf", "-1", "soon"])
def test_a_lock_timeout_must_be_finite_or_zero(state_dir: Path, seconds: str) -> None:
    for command in (["set", str(state_dir), "create_error=true"], ["delete", str(state_dir)]):
        result = lifecyclefs(command[0], "--lock-timeout", seconds, *command[1:], check=False)
        assert result.returncode == 2
        assert "finite number of seconds" in result.stderr
    assert not (state_dir / "lifecycle.json").exists()


def test_lock_timeout_zero_waits_for_ever(state_dir: Path) -> None:
    with lock_held_elsewhere(state_dir):
        writer = subprocess.Popen(
            [LIFECYCLEFS, "set", "--lock-timeout", "0", str(state_dir), "create_error=true"],
            stderr=subprocess.PIPE,
            text=True,
        )
        with pytest.raises(subprocess.TimeoutExpired):
            writer.wait(timeout=0.5)
    assert writer.wait(timeout=30) == 0, writer.communicate()[1]
    assert Store(state_dir).load().create_error is True


@pytest.mark.parametrize(
    ("started_at", "utc"),
    [
        ("0000-01-01T00:30:00+01:00", "-0001-12-31T23:30:00Z"),
        ("9999-12-31T23:30:00.25-01:00", "10000-01-01T00:30:00.25Z"),
    ],
)
def test_show_docker_prints_any_year_as_go_does(state_dir: Path, started_at: str, utc: str) -> None:
    lifecyclefs("set", str(state_dir), f"started_at={started_at}")
    assert json.loads(lifecyclefs("show", "--docker", str(state_dir)).stdout) == {
        "State": {"StartedAt": utc}
    }
    assert lifecyclefs("get", str(state_dir), "started_at").stdout == started_at + "\n"


@pytest.mark.parametrize("value", ["maybe", "True", "yes", "2", "", " true", "true\n\n"])
def test_create_error_takes_only_true_false_1_0(state_dir: Path, value: str) -> None:
    result = lifecyclefs("set", str(state_dir), f"create_error={value}", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("lifecyclefs: create_error: expected true, false, 1 or 0")
    assert result.stderr.count("\n") == 1
    assert not (state_dir / "lifecycle.json").exists()


def test_show_json_of_a_record_with_numbers_python_cannot_hold(state_dir: Path) -> None:
    data = b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":1e999,"y":' + (
        b"1" * 5000 + b"}"
    )
    (state_dir / "lifecycle.json").write_bytes(data)
    assert lifecyclefs("show", "--json", str(state_dir)).stdout == data.decode() + "\n"
    assert lifecyclefs("get", str(state_dir), "create_error").stdout == "false\n"
    lifecyclefs("set", str(state_dir), "create_error=1")
    assert record_bytes(state_dir) == data.replace(b"false", b"true")


def test_a_record_over_64_kib_is_one_clear_line(state_dir: Path) -> None:
    (state_dir / "lifecycle.json").write_bytes(b" " * (65_536 + 1))
    for command in (["get"], ["show", "--json"], ["set", "create_error=1"]):
        result = lifecyclefs(command[0], str(state_dir), *command[1:], check=False)
        assert result.returncode == 1
        assert result.stderr == (
            f"lifecyclefs: record {state_dir}/lifecycle.json is larger than 65536 bytes; not read\n"
        )


def test_an_error_about_a_strange_path_stays_one_line(tmp_path: Path) -> None:
    strange = tmp_path / "a\nb\x1b[31mc"
    result = lifecyclefs("get", str(strange), check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "\x1b" not in result.stderr
    assert "a\\nb\\x1b[31mc" in result.stderr


def test_plain_command_lines_import_only_what_they_need(state_dir: Path) -> None:
    lifecyclefs("set", str(state_dir), "create_error=true")
    program = (
        "import sys\n"
        "from fusefs.cli import main\n"
        "for argv in (['get', sys.argv[1]], ['set', sys.argv[1], 'create_error=0'],"
        " ['show', sys.argv[1]], ['delete', sys.argv[1]]):\n"
        "    assert main(argv) == 0\n"
        "heavy = ('argparse', 'json', 'typing', 'dataclasses', 'datetime', 'ctypes', 'trio',"
        " 'pyfuse3', 'store.jsontext')\n"
        "print(' '.join(name for name in heavy if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(state_dir)],
        capture_output=True,
        text=True,
        check=True,
        cwd=state_dir,
    )
    assert result.stdout.splitlines()[-1] == ""
