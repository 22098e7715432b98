"""`lifecyclefs oci-hook` fed exactly what runc and crun hand a hook on stdin."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from store import Lifecycle, Store, Timestamp
from tests.conftest import LIFECYCLEFS, OCI_STATE

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
