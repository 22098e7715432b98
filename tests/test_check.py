"""`lifecyclefs check [--repair]` on records torn the way nerdctl leaves them after a crash."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from store import Lifecycle, RecordCorruptError, Store, Timestamp
from store.atomic import TEMP_NAME
from tests.conftest import GOLDEN, LIFECYCLEFS, lifecyclefs, lifecyclefs_to_a_gone_reader
from tests.processes import changes_made_in, lock_held_elsewhere
from tests.test_operator_files import INSTALLED, SCRIPTS, unit_settings

RECORD = "lifecycle.json"
UNSET_BYTES = b'{"started_at":"0001-01-01T00:00:00Z","create_error":false}'
GOOD = (GOLDEN / "05_create_error_true.json").read_bytes()
ASIDE = re.compile(r"lifecycle\.json\.corrupt-\d{8}T\d{6}Z(\.\d+)?")

# What nerdctl v2.0.x leaves after a crash or a power loss (nerdctl issue 3350).
TORN = {
    "empty": b"",
    "truncated-mid-key": b'{"started_at":"2024-01-02T03:04:05Z","create_er',
    "nul-filled": b"\0" * len(GOOD),  # ext4 after a power loss: the size, not the data
}


def make_container(source: Path, name: str, record: bytes | None = None) -> Path:
    """A state directory as nerdctl makes it (0700, with a file of its own), its record given."""
    state_dir = source / name
    state_dir.mkdir(parents=True, mode=0o700)
    (state_dir / "hostname").write_text(name.rsplit("/", 1)[-1] + "\n")
    if record is not None:
        (state_dir / RECORD).write_bytes(record)
    return state_dir


def nerdctl_transform(state_dir: Path) -> Lifecycle:
    """What nerdctl's createRuntime hook does: a locked load, change and write."""

    def started_now(record: Lifecycle) -> None:
        record.started_at = Timestamp.now()
        record.create_error = False

    return Store(state_dir).transform(started_now)


def asides(state_dir: Path) -> list[Path]:
    return sorted(path for path in state_dir.iterdir() if path.name.startswith(RECORD + "."))


@pytest.fixture
def torn_tree(tmp_path: Path) -> Path:
    """nerdctl's containers/<namespace>/<id> tree: every torn kind, a stale temp, good ones."""
    source = tmp_path / "containers"
    for kind, data in TORN.items():
        make_container(source, f"default/{kind}", data)
    make_container(source, "default/stale-temp", GOOD)
    (source / "default" / "stale-temp" / TEMP_NAME).write_bytes(b'{"started_at":"2024-01-')
    make_container(source, "default/good", GOOD)
    make_container(source, "default/never-started")
    make_container(source, "k8s.io/good", GOOD)
    return source


def test_check_names_every_problem_and_changes_nothing(torn_tree: Path) -> None:
    before = {path: path.read_bytes() for path in torn_tree.rglob("*") if path.is_file()}
    result = lifecyclefs("check", "--depth", "2", str(torn_tree), check=False)
    assert result.returncode == 1
    assert result.stderr == ""
    default = torn_tree / "default"
    assert result.stdout.splitlines() == [
        f"{default}/empty: corrupt record lifecycle.json: the record is empty"
        " (nerdctl: unexpected end of JSON input)",
        f"{default}/nul-filled: corrupt record lifecycle.json: not valid JSON:"
        " expecting a value at character 0",
        f"{default}/stale-temp: stale .temp.lifecycle.json"
        " (an interrupted write; no write in progress)",
        f"{default}/truncated-mid-key: corrupt record lifecycle.json: not valid JSON:"
        " Unterminated string starting at: line 1 column 38 (char 37)",
    ]
    after = {path: path.read_bytes() for path in torn_tree.rglob("*") if path.is_file()}
    assert after == before


def test_all_well_is_silent_and_exit_0(tmp_path: Path) -> None:
    for name in ("c1", "c2"):
        make_container(tmp_path / "containers", name, GOOD)
    make_container(tmp_path / "containers", "c3")
    assert lifecyclefs("check", str(tmp_path / "containers")).stdout == ""


def test_repair_makes_nerdctls_transform_work_again(torn_tree: Path) -> None:
    for kind in TORN:
        with pytest.raises(RecordCorruptError):
            nerdctl_transform(torn_tree / "default" / kind)
    result = lifecyclefs("check", "--repair", "--depth", "2", str(torn_tree), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert all("; repaired: " in line for line in lines)
    for kind, data in TORN.items():
        state_dir = torn_tree / "default" / kind
        (kept,) = asides(state_dir)
        assert ASIDE.fullmatch(kept.name)
        assert kept.read_bytes() == data, "the bad record is kept as it was"
        assert (state_dir / RECORD).read_bytes() == UNSET_BYTES
        assert (state_dir / "hostname").read_text() == f"{kind}\n", "nerdctl's files untouched"
        assert f"{state_dir}: " in result.stdout
        assert f"repaired: kept as {kept.name}, now {UNSET_BYTES.decode()}" in result.stdout
        assert nerdctl_transform(state_dir).create_error is False
        assert Store(state_dir).load().started_at.unix_ns > 0
    stale = torn_tree / "default" / "stale-temp"
    assert sorted(os.listdir(stale)) == ["hostname", RECORD]
    assert (stale / RECORD).read_bytes() == GOOD
    assert f"{stale}: stale .temp.lifecycle.json" in result.stdout
    for good in ("default/good", "k8s.io/good"):
        assert sorted(os.listdir(torn_tree / good)) == ["hostname", RECORD]
        assert (torn_tree / good / RECORD).read_bytes() == GOOD
    again = lifecyclefs("check", "--repair", "--depth", "2", str(torn_tree))
    assert again.stdout == ""


def test_repair_keeps_a_copy_then_replaces_atomically_and_durably(tmp_path: Path) -> None:
    state_dir = make_container(tmp_path / "containers", "c1", b"")
    calls = "fsync,fdatasync,link,linkat,rename,renameat,renameat2,unlink,unlinkat"
    command = [LIFECYCLEFS, "check", "--repair", str(tmp_path / "containers")]
    done = changes_made_in(state_dir, command, calls, tmp_path / "strace.log")
    (kept,) = asides(state_dir)
    assert done == [  # (descriptors shown by their paths)
        f'linkat(<D>, "{RECORD}", <D>, "{kept.name}", 0',
        f"fsync(<D/{TEMP_NAME}>",
        f'renameat(<D>, "{TEMP_NAME}", <D>, "{RECORD}"',
        "fsync(<D>",
    ]


def test_repair_goes_on_when_the_reader_leaves(torn_tree: Path) -> None:
    result = lifecyclefs_to_a_gone_reader("check", "--repair", "--depth", "2", str(torn_tree))
    assert (result.returncode, result.stderr) == (0, "")
    assert lifecyclefs("check", "--depth", "2", str(torn_tree)).stdout == ""


def test_a_repaired_record_is_0600_and_keeps_its_owner(tmp_path: Path) -> None:
    state_dir = make_container(tmp_path / "containers", "c1", b"")
    os.chown(state_dir, 1234, 1234)
    os.chown(state_dir / RECORD, 1234, 1234)
    lifecyclefs("check", "--repair", str(tmp_path / "containers"))
    stat = (state_dir / RECORD).stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (1234, 1234, 0o600)


def test_a_temp_file_while_the_lock_is_held_is_a_write_in_progress(tmp_path: Path) -> None:
    state_dir = make_container(tmp_path / "containers", "c1", GOOD)
    (state_dir / TEMP_NAME).write_bytes(GOOD)
    with lock_held_elsewhere(state_dir):
        assert lifecyclefs("check", str(tmp_path / "containers")).stdout == ""
        repair = lifecyclefs("check", "--repair", str(tmp_path / "containers"))
        assert repair.stdout == ""
        assert (state_dir / TEMP_NAME).exists()
    result = lifecyclefs("check", str(tmp_path / "containers"), check=False)
    assert result.returncode == 1
    assert (
        result.stdout
        == f"{state_dir}: stale {TEMP_NAME} (an interrupted write; no write in progress)\n"
    )


def test_repair_waits_for_nerdctls_lock(tmp_path: Path) -> None:
    state_dir = make_container(tmp_path / "containers", "c1", b"")
    with lock_held_elsewhere(state_dir):
        repair = subprocess.Popen(
            [LIFECYCLEFS, "check", "--repair", "--lock-timeout", "0", str(tmp_path / "containers")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                repair.wait(timeout=0.5)
            assert (state_dir / RECORD).read_bytes() == b"", "repaired under someone's lock"
        finally:
            if repair.poll() is not None:
                repair.kill()
    out, errors = repair.communicate(timeout=30)
    assert repair.returncode == 0, out + errors
    assert (state_dir / RECORD).read_bytes() == UNSET_BYTES


def test_a_lock_held_too_long_leaves_the_container_unrepaired(tmp_path: Path) -> None:
    state_dir = make_container(tmp_path / "containers", "c1", b"")
    with lock_held_elsewhere(state_dir):
        result = lifecyclefs(
            "check", "--repair", "--lock-timeout", "0.2", str(tmp_path / "containers"), check=False
        )
    assert result.returncode == 1
    assert result.stdout == (
        f"{state_dir}: corrupt record lifecycle.json: the record is empty"
        " (nerdctl: unexpected end of JSON input); NOT repaired: its lock was held for 0.2 s\n"
    )
    assert (state_dir / RECORD).read_bytes() == b""
    assert asides(state_dir) == []


@pytest.mark.parametrize(
    ("stored", "written"),
    [
        # nerdctl loads an offset of 24 h but cannot write it back: the instant, in UTC.
        (
            b'{"started_at":"2024-01-02T03:04:05.5+24:00","create_error":true,"k":[1]}',
            b'{"started_at":"2024-01-01T03:04:05.5Z","create_error":true,"k":[1]}',
        ),
        (
            b'{"started_at":"2024-01-02T03:04:05-24:30","create_error":false}',
            b'{"started_at":"2024-01-03T03:34:05Z","create_error":false}',
        ),
    ],
)
def test_a_record_that_cannot_be_written_back_keeps_what_is_sound(
    tmp_path: Path, stored: bytes, written: bytes
) -> None:
    state_dir = make_container(tmp_path / "containers", "c1", stored)
    found = lifecyclefs("check", str(tmp_path / "containers"), check=False)
    assert found.returncode == 1
    assert found.stdout.startswith(
        f"{state_dir}: lifecycle.json loads but cannot be written back: "
    )
    lifecyclefs("check", "--repair", str(tmp_path / "containers"))
    assert (state_dir / RECORD).read_bytes() == written
    (kept,) = asides(state_dir)
    assert kept.read_bytes() == stored
    nerdctl_transform(state_dir)


def test_numbers_nerdctl_skips_are_no_problem(tmp_path: Path) -> None:
    """nerdctl skips keys it does not know, whatever number they hold; so does the store."""
    make_container(
        tmp_path / "containers",
        "c1",
        b'{"started_at":"2024-01-02T03:04:05+01:00","create_error":true,"a":1e999,"b":2}',
    )
    assert lifecyclefs("check", str(tmp_path / "containers")).stdout == ""


def test_a_record_too_large_keeps_its_fields(tmp_path: Path) -> None:
    padding = "x" * (2 << 20)
    stored = json.dumps(
        {"started_at": "2024-01-02T03:04:05Z", "create_error": True, "padding": padding}
    ).encode()
    state_dir = make_container(tmp_path / "containers", "c1", stored)
    found = lifecyclefs("check", str(tmp_path / "containers"), check=False)
    assert found.returncode == 1
    assert re.fullmatch(
        rf"{state_dir}: .*lifecycle\.json.*(larger than|too large).*\n", found.stdout
    )
    lifecyclefs("check", "--repair", str(tmp_path / "containers"))
    assert (state_dir / RECORD).read_bytes() == (
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":true}'
    )
    assert asides(state_dir)[0].read_bytes() == stored


def test_an_earlier_copy_is_never_overwritten(tmp_path: Path) -> None:
    state_dir = make_container(tmp_path / "containers", "c1", b"")
    # Every name the repair could pick in the next two minutes exists already.
    now = time.time()
    earlier = {}
    for second in range(-5, 120):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + second))
        earlier[state_dir / f"{RECORD}.corrupt-{stamp}"] = f"copy {second}".encode()
    for path, data in earlier.items():
        path.write_bytes(data)
    lifecyclefs("check", "--repair", str(tmp_path / "containers"))
    new = [path for path in asides(state_dir) if path not in earlier]
    assert len(new) == 1
    assert re.fullmatch(r"lifecycle\.json\.corrupt-\d{8}T\d{6}Z\.1", new[0].name)
    assert new[0].read_bytes() == b""
    assert all(path.read_bytes() == data for path, data in earlier.items())
    # And the next repair of the same second takes the next number.
    (state_dir / RECORD).write_bytes(b"{")
    lifecyclefs("check", "--repair", str(tmp_path / "containers"))
    newer = [path for path in asides(state_dir) if path not in earlier and path != new[0]]
    assert [path.read_bytes() for path in newer] == [b"{"]


def test_what_cannot_be_repaired_is_said_and_exit_1(tmp_path: Path) -> None:
    state_dir = make_container(tmp_path / "containers", "c1")
    (tmp_path / "elsewhere.json").write_bytes(GOOD)
    (state_dir / RECORD).symlink_to(tmp_path / "elsewhere.json")
    result = lifecyclefs("check", "--repair", str(tmp_path / "containers"), check=False)
    assert result.returncode == 1
    assert result.stdout == (
        f"{state_dir}: cannot open lifecycle.json: Too many levels of symbolic links;"
        " NOT repaired\n"
    )
    assert (state_dir / RECORD).is_symlink()


def test_a_repair_the_filesystem_refuses_is_not_repaired_and_exit_1(tiny_tmpfs: Path) -> None:
    torn = TORN["truncated-mid-key"]
    state_dir = make_container(tiny_tmpfs / "containers", "c1", torn)
    subprocess.run(
        ["mount", "-n", "-o", "remount,ro", str(tiny_tmpfs)], timeout=60, check=True
    )  # the tiny_tmpfs fixture unmounts it, read-only or not
    result = lifecyclefs("check", "--repair", str(tiny_tmpfs / "containers"), check=False)
    assert result.stdout == (
        f"{state_dir}: corrupt record lifecycle.json: not valid JSON: Unterminated string"
        " starting at: line 1 column 38 (char 37); NOT repaired: Read-only file system\n"
    )
    assert result.returncode == 1, "a failed repair must fail the command"
    assert (state_dir / RECORD).read_bytes() == torn
    assert sorted(os.listdir(state_dir)) == ["hostname", RECORD]


def test_only_the_views_containers_are_checked(tmp_path: Path) -> None:
    source = tmp_path / "containers"
    make_container(source, "c1", b"")
    make_container(source, ".hidden", b"")
    make_container(tmp_path, "outside", b"")
    (source / "link").symlink_to(tmp_path / "outside")
    (source / "file").write_bytes(b"")
    result = lifecyclefs("check", "--repair", str(source))
    assert result.stdout.startswith(f"{source}/c1: corrupt record")
    assert result.stdout.count("\n") == 1
    assert (source / ".hidden" / RECORD).read_bytes() == b""
    assert (tmp_path / "outside" / RECORD).read_bytes() == b""
    # At depth 2, c1 is a namespace: its own record is not a container's.
    make_container(source, "c1/c2", b"")
    deeper = lifecyclefs("check", "--depth", "2", str(source), check=False)
    assert deeper.stdout.splitlines() == [
        f"{source}/c1/c2: corrupt record lifecycle.json: the record is empty"
        " (nerdctl: unexpected end of JSON input)"
    ]


@pytest.mark.parametrize(
    ("arguments", "status", "message"),
    [
        (
            ["check", "/nonexistent/containers"],
            1,
            "lifecyclefs: cannot open /nonexistent/containers: No such file or directory\n",
        ),
        (["check", "--depth", "0", "/tmp"], 2, "usage error"),
        (["check", "--depth", "two", "/tmp"], 2, "usage error"),
        (["check"], 2, "usage error"),
        (["check", "--lock-timeout", "-1", "/tmp"], 2, "usage error"),
    ],
)
def test_command_line_errors(arguments: list[str], status: int, message: str) -> None:
    result = lifecyclefs(*arguments, check=False)
    assert result.returncode == status
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def unit_command(settings: dict[str, str], data_root: Path) -> list[str]:
    """The unit's ExecStart with nerdctl's data root moved and the installed command."""
    line = settings["ExecStart"].replace("/var/lib/nerdctl", str(data_root))
    return [word.replace(INSTALLED, LIFECYCLEFS) for word in shlex.split(line)]


def test_systemd_unit_repairs_every_containerd_address_before_containerd(
    tmp_path: Path,
) -> None:
    settings = unit_settings("lifecyclefs-check.service")
    assert settings["Type"] == "oneshot"
    assert "containerd.service" in settings["Before"].split()
    assert settings["WantedBy"] == "containerd.service"
    data_root = tmp_path / "var-lib-nerdctl"
    condition = settings["ConditionPathExistsGlob"].replace("/var/lib/nerdctl", str(data_root))
    data_root.mkdir()
    assert glob.glob(condition) == [], "no state: the unit is skipped"
    first = make_container(data_root / "1935db59" / "containers", "default/r1", b"")
    second = make_container(data_root / "5f3e2a10" / "containers", "k8s.io/r2", b"\0" * 57)
    (first / TEMP_NAME).write_bytes(b"")
    fine = make_container(data_root / "5f3e2a10" / "containers", "k8s.io/r3", GOOD)
    assert len(glob.glob(condition)) == 2
    result = subprocess.run(
        unit_command(settings, data_root), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("repaired") == 3
    for state_dir in (first, second):
        assert (state_dir / RECORD).read_bytes() == UNSET_BYTES
        nerdctl_transform(state_dir)
    assert not (first / TEMP_NAME).exists()
    assert (fine / RECORD).read_bytes() == GOOD
    again = subprocess.run(
        unit_command(settings, data_root), capture_output=True, text=True, timeout=60, check=True
    )
    assert again.stdout == ""
    assert (SCRIPTS / "lifecyclefs-check.service").read_text().count(INSTALLED) == 1
