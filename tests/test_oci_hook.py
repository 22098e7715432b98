"""`lifecyclefs oci-hook` fed exactly what runc and crun hand a hook on stdin."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import tempfile
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusefs import ocihook, quickargs
from fusefs.cli import build_parser
from store import Lifecycle, LifecycleStoreError, Store, Timestamp
from tests.conftest import LIFECYCLEFS, OCI_STATE
from tests.outcomes import outcome
from tests.processes import changes_made_in, lock_held_elsewhere

SAMPLES = sorted(OCI_STATE.glob("*.json"))


def hook(stage: str, stdin: bytes, *options: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [LIFECYCLEFS, "oci-hook", *options, stage],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
    )


def with_state_dir(sample: Path, state_dir: Path) -> bytes:
    """The sample, byte for byte but for the state-dir annotation pointing at `state_dir`."""
    original = json.loads(sample.read_bytes())["annotations"]["nerdctl/state-dir"]
    return sample.read_bytes().replace(original.encode(), str(state_dir).encode())


def test_every_runtime_sample_is_here() -> None:
    assert [path.stem for path in SAMPLES] == [
        f"{runtime}-{stage}"
        for runtime in ("crun", "runc")
        for stage in ("createRuntime", "poststart", "poststop")
    ]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.stem)
def test_each_sample_does_what_nerdctls_hook_does(sample: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "containers" / "default" / "r1"
    stage = sample.stem.split("-", 1)[1]
    Store(state_dir, create=True).update(create_error=True)
    before = Timestamp.now()
    result = hook(stage, with_state_dir(sample, state_dir))
    after = Timestamp.now()
    assert result.returncode == 0
    assert result.stdout == b""
    record = Store(state_dir).load()
    if stage == "createRuntime":
        assert result.stderr == b""
        assert before.unix_ns <= record.started_at.unix_ns <= after.unix_ns
        assert record.create_error is False
    elif stage == "poststop":
        assert result.stderr == b""
        assert record == Lifecycle(create_error=False)
    else:  # not a stage nerdctl's hook acts on: logged, and the container is not refused
        assert b"unknown hook stage 'poststart'" in result.stderr
        assert record == Lifecycle(create_error=True)
        assert hook(stage, with_state_dir(sample, state_dir), "--strict").returncode == 1


@pytest.mark.parametrize("stage", ["createRuntime", "createruntime", "CREATERUNTIME"])
def test_stage_is_spelled_in_any_case(stage: str, tmp_path: Path) -> None:
    sample = (OCI_STATE / "runc-createRuntime.json").read_bytes()
    assert hook(stage, sample, "--strict", "--state-dir", str(tmp_path / "r1")).returncode == 0
    assert not Store(tmp_path / "r1").load().started_at.is_unset


@pytest.mark.parametrize("stage", ["poststop", "postStop", "POSTSTOP"])
def test_poststop_in_nerdctls_spelling_too(stage: str, tmp_path: Path) -> None:
    Store(tmp_path / "r1", create=True).update(create_error=True)
    sample = (OCI_STATE / "crun-poststop.json").read_bytes()
    assert hook(stage, sample, "--strict", "--state-dir", str(tmp_path / "r1")).returncode == 0
    assert Store(tmp_path / "r1").load().create_error is False


@pytest.mark.parametrize("stage", ["poststop", "postStop"])
def test_poststop_clears_create_error_and_keeps_started_at(stage: str, tmp_path: Path) -> None:
    started_at = Timestamp.parse("2024-01-02T03:04:05Z")
    Store(tmp_path / "r1", create=True).update(started_at=started_at, create_error=True)
    sample = (OCI_STATE / "runc-poststop.json").read_bytes()
    result = hook(stage, sample, "--strict", "--state-dir", str(tmp_path / "r1"))
    assert (result.returncode, result.stderr) == (0, b"")
    assert Store(tmp_path / "r1").load() == Lifecycle(started_at=started_at, create_error=False)


def test_the_hook_writes_durably(tmp_path: Path) -> None:
    """As `set` does: the new record's data, then its directory, reach the disk."""
    Store(tmp_path / "r1", create=True)
    sample = (OCI_STATE / "runc-poststop.json").read_bytes()
    command = [LIFECYCLEFS, "oci-hook", "--strict", "--state-dir", str(tmp_path / "r1"), "poststop"]
    calls = "fsync,fdatasync,rename,renameat,renameat2"
    log = tmp_path / "strace.log"
    assert changes_made_in(tmp_path / "r1", command, calls, log, sample) == [
        "fsync(<D/.temp.lifecycle.json>",
        'renameat(<D>, ".temp.lifecycle.json", <D>, "lifecycle.json"',
        "fsync(<D>",
    ]


def test_create_runtime_creates_the_state_directory_as_nerdctl_does(tmp_path: Path) -> None:
    state_dir = tmp_path / "containers" / "default" / "r1"
    sample = with_state_dir(OCI_STATE / "runc-createRuntime.json", state_dir)
    assert hook("createRuntime", sample, "--strict").returncode == 0
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert not Store(state_dir).load().started_at.is_unset


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b"", b"no OCI state on stdin"),
        (b"{not json", b"the OCI state on stdin is not JSON"),
        (b"[]", b"the OCI state on stdin is not a JSON object"),
        (b'{"id":"r1","annotations":{}}', b"the OCI state has no nerdctl/state-dir annotation"),
        (
            b'{"id":"r1","annotations":{"nerdctl/state-dir":"relative/dir"}}',
            b"the state directory must be an absolute path",
        ),
    ],
)
def test_bad_input_is_soft_by_default_and_hard_with_strict(stdin: bytes, message: bytes) -> None:
    soft = hook("createRuntime", stdin)
    assert soft.returncode == 0
    assert soft.stderr.startswith(b"lifecyclefs: oci-hook createRuntime: " + message)
    assert soft.stderr.count(b"\n") == 1
    hard = hook("createRuntime", stdin, "--strict")
    assert hard.returncode == 1
    assert hard.stderr == soft.stderr


# Inside the namespace: /dev becomes an overlay of itself whose changes go to a tmpfs
# ($1), /dev/log in it a file, and the test's socket ($2) is bind-mounted on that file.
# All of it is private to the namespace and goes with its last process, the hook ($3).
_WITH_DEV_LOG = """
set -e
mount -n -t tmpfs -o mode=0700 lifecyclefs-test "$1"
mkdir "$1/upper" "$1/work"
mount -n -t overlay -o "lowerdir=/dev,upperdir=$1/upper,workdir=$1/work" lifecyclefs-test /dev
rm -f /dev/log
: > /dev/log
mount -n --bind "$2" /dev/log
exec "$3" oci-hook createRuntime
"""


def test_bad_input_is_one_line_in_syslog_too(tmp_path: Path) -> None:
    """The hook's failure reaches syslog's /dev/log, here a socket the test reads."""
    (tmp_path / "overlay").mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log:
        log.bind(str(tmp_path / "log"))
        log.settimeout(10)
        result = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                _WITH_DEV_LOG,
                "sh",
                str(tmp_path / "overlay"),
                str(tmp_path / "log"),
                LIFECYCLEFS,
            ],
            input=b"{not json",
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        line = log.recv(65536)
        log.setblocking(False)  # the hook has exited: whatever it sent is queued already
        with pytest.raises(BlockingIOError):
            log.recv(65536)
    message = b"oci-hook createRuntime: the OCI state on stdin is not JSON: "
    assert result.stderr.startswith(b"lifecyclefs: " + message)
    assert result.stderr.count(b"\n") == 1
    logged = re.fullmatch(rb"<\d+>[^\n]* lifecyclefs\[\d+\]: ([^\n]*)", line)
    assert logged is not None, line
    assert logged[1] + b"\n" == result.stderr.removeprefix(b"lifecyclefs: ")


def test_a_corrupt_record_is_soft_too_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "lifecycle.json").write_bytes(b"{")
    sample = (OCI_STATE / "runc-createRuntime.json").read_bytes()
    soft = hook("createRuntime", sample, "--state-dir", str(tmp_path / "r1"))
    assert soft.returncode == 0
    assert b"corrupt record" in soft.stderr
    hard = hook("createRuntime", sample, "--strict", "--state-dir", str(tmp_path / "r1"))
    assert hard.returncode == 1
    assert (tmp_path / "r1" / "lifecycle.json").read_bytes() == b"{"


def annotated(state_dir: str) -> bytes:
    """An OCI state whose nerdctl/state-dir annotation is `state_dir` (any text)."""
    return json.dumps({"id": "r1", "annotations": {"nerdctl/state-dir": state_dir}}).encode()


@pytest.mark.parametrize("state_dir", ["/tmp/a\u0000b", "/tmp/\ud800", "/tmp/\udfff/x"])
def test_a_state_dir_no_system_call_takes_is_one_line_not_a_traceback(state_dir: str) -> None:
    soft = hook("createRuntime", annotated(state_dir))
    assert soft.returncode == 0
    assert soft.stderr.startswith(b"lifecyclefs: oci-hook createRuntime: unusable state directory")
    assert soft.stderr.count(b"\n") == 1
    assert b"Traceback" not in soft.stderr
    assert hook("createRuntime", annotated(state_dir), "--strict").returncode == 1


def test_the_hook_gives_up_on_the_lock_after_its_timeout(tmp_path: Path) -> None:
    state_dir = tmp_path / "r1"
    Store(state_dir, create=True).update(create_error=True)
    before = (state_dir / "lifecycle.json").read_bytes()
    with lock_held_elsewhere(state_dir):
        soft = hook("createRuntime", annotated(str(state_dir)), "--lock-timeout", "0.2")
        hard = hook("poststop", annotated(str(state_dir)), "--lock-timeout=0.2", "--strict")
    assert soft.returncode == 0
    assert (
        soft.stderr
        == (
            f"lifecyclefs: oci-hook createRuntime: cannot lock {state_dir}:"
            " still held by another process after 0.2 s\n"
        ).encode()
    )
    assert hard.returncode == 1
    assert (state_dir / "lifecycle.json").read_bytes() == before


def test_the_hook_waits_ten_seconds_unless_told_otherwise() -> None:
    assert quickargs.parse(["oci-hook", "createRuntime"]) == {
        "command": "oci-hook",
        "strict": False,
        "state_dir": None,
        "lock_timeout": 10.0,
        "stage": "createRuntime",
    }
    parsed = build_parser().parse_args(["oci-hook", "--state-dir", "/x", "poststop"])
    assert parsed.lock_timeout == 10


def test_the_hook_with_lock_timeout_zero_waits_for_the_lock(tmp_path: Path) -> None:
    state_dir = tmp_path / "r1"
    Store(state_dir, create=True)
    with lock_held_elsewhere(state_dir):
        waiting = subprocess.Popen(
            [LIFECYCLEFS, "oci-hook", "--strict", "--lock-timeout", "0", "createRuntime"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert waiting.stdin is not None
        waiting.stdin.write(annotated(str(state_dir)))
        waiting.stdin.close()
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=0.5)
    assert waiting.wait(timeout=30) == 0
    assert waiting.stderr is not None
    assert waiting.stderr.read() == b""
    waiting.stderr.close()
    assert not Store(state_dir).load().started_at.is_unset


@pytest.mark.parametrize(
    ("shell_stdin", "message"),
    [
        ("<&-", b"no OCI state on stdin"),
        ("< /dev/null", b"no OCI state on stdin"),
        ("< /proc/self/mem", b"cannot read the OCI state on stdin"),
    ],
)
def test_a_missing_or_unreadable_stdin_is_one_line(shell_stdin: str, message: bytes) -> None:
    result = subprocess.run(
        ["sh", "-c", f'"$0" oci-hook createRuntime {shell_stdin}', LIFECYCLEFS],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stderr.startswith(b"lifecyclefs: oci-hook createRuntime: " + message)
    assert result.stderr.count(b"\n") == 1


def test_deeply_nested_stdin_is_one_line() -> None:
    result = hook("createRuntime", b"[" * 100_000 + b"]" * 100_000)
    assert result.returncode == 0
    assert result.stderr.startswith(b"lifecyclefs: oci-hook createRuntime: the OCI state")
    assert result.stderr.count(b"\n") == 1


def test_a_stage_with_a_newline_is_logged_on_one_line() -> None:
    result = hook("create\nRuntime", (OCI_STATE / "runc-createRuntime.json").read_bytes())
    assert result.returncode == 0
    assert result.stderr.count(b"\n") == 1
    assert b"create\\nRuntime" in result.stderr


# Property tests: whatever the input, only HookInputError or LifecycleStoreError.

oci_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["annotations", "nerdctl/state-dir", "id"]), children)
    ),
    max_leaves=6,
)
state_dirs = st.text(max_size=12) | st.sampled_from(["", "/", "relative", "/x\0y", "/\ud800"])


@settings(max_examples=300)
@given(data=st.binary(max_size=60) | oci_json.map(lambda value: json.dumps(value).encode()))
def test_read_state_gives_an_object_or_a_hook_input_error(data: bytes) -> None:
    state = outcome(partial(ocihook.read_state, io.BytesIO(data)), ocihook.HookInputError)
    assert isinstance(state, dict) or str(state)


@settings(max_examples=300)
@given(
    stage=st.text(max_size=15) | st.sampled_from(["createRuntime", "POSTSTOP", "postStop"]),
    state=st.dictionaries(st.sampled_from(["annotations", "id"]), oci_json)
    | state_dirs.map(lambda path: {"annotations": {"nerdctl/state-dir": path}}),
    given_dir=st.none() | state_dirs,
)
def test_request_for_gives_a_request_or_a_hook_input_error(
    stage: str, state: dict[str, object], given_dir: str | None
) -> None:
    request = outcome(partial(ocihook.request_for, stage, state, given_dir), ocihook.HookInputError)
    if isinstance(request, ocihook.HookInputError):
        assert str(request)
        return
    assert request.stage in ("createRuntime", "poststop")
    assert request.state_dir.startswith("/")


@settings(max_examples=200, deadline=None)
@given(
    stage=st.sampled_from(["createRuntime", "poststop"]),
    name=st.text(max_size=12).filter(lambda name: "/" not in name and name not in ("", ".", "..")),
    record=st.none() | st.binary(max_size=30),
)
def test_run_changes_the_record_or_raises_a_store_error(
    stage: str, name: str, record: bytes | None
) -> None:
    with tempfile.TemporaryDirectory() as root:
        state_dir = root + "/" + name
        if record is not None and "\0" not in name and _encodable(state_dir):
            os.mkdir(state_dir)
            with open(state_dir + "/lifecycle.json", "wb") as file:
                file.write(record)
        request = ocihook.HookRequest(stage, state_dir)
        failed = outcome(partial(ocihook.run, request, lock_timeout=1.0), LifecycleStoreError)
        if failed is not None:
            assert str(failed)
            return
        assert Store(state_dir).load().create_error is False


def _encodable(path: str) -> bool:
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=15, deadline=None)
@given(stdin=st.binary(max_size=40) | oci_json.map(lambda value: json.dumps(value).encode()))
def test_the_hook_process_exits_0_with_one_line_whatever_its_stdin(stdin: bytes) -> None:
    result = hook("createRuntime", stdin)
    assert result.returncode == 0
    assert result.stderr.count(b"\n") <= 1
    assert b"Traceback" not in result.stderr
