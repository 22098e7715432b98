"""What operators copy from scripts/: hook configs and the systemd unit, proven to work."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusefs.mount import lifecyclefs_mounts
from store import Store, Timestamp
from tests.conftest import LIFECYCLEFS, OCI_STATE, force_unmount
from tests.oci_bundle import Hook, leftovers, make_bundle, new_container_id, run_container
from tests.processes import notify_service, stop

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
INSTALLED = "/usr/local/bin/lifecyclefs"
"""Where the examples expect the command; the tests use the one this suite installed."""


def test_oci_config_hooks_record_a_real_runc_container(tmp_path: Path) -> None:
    hooks = json.loads((SCRIPTS / "oci-hooks.json").read_text().replace(INSTALLED, LIFECYCLEFS))
    state_dir = tmp_path / "containers" / "default" / "c1"
    Store(state_dir, create=True).update(create_error=True)
    cid = new_container_id()
    bundle = make_bundle(
        tmp_path / "bundle",
        ["true"],
        annotations={"nerdctl/state-dir": str(state_dir)},
        hooks=hooks["hooks"],
    )
    before = Timestamp.now()
    result = run_container(bundle, root=tmp_path / "runc", container_id=cid)
    after = Timestamp.now()
    assert result.returncode == 0, result.stderr
    record = Store(state_dir).load()
    assert before.unix_ns <= record.started_at.unix_ns <= after.unix_ns
    assert record.create_error is False
    assert leftovers(tmp_path / "runc", cid, bundle) == []


@pytest.mark.parametrize("stage", ["createRuntime", "poststop"])
def test_hooks_d_files_match_nerdctl_containers_only(stage: str) -> None:
    config = json.loads((SCRIPTS / "hooks.d" / f"lifecyclefs-{stage.lower()}.json").read_text())
    assert config["version"] == "1.0.0"
    assert config["stages"] == [stage]
    hook: Hook = config["hook"]
    assert hook == json.loads((SCRIPTS / "oci-hooks.json").read_text())["hooks"][stage][0]
    ((key, value),) = config["when"]["annotations"].items()
    for sample in OCI_STATE.glob("*.json"):
        annotations = json.loads(sample.read_text())["annotations"]
        assert any(
            re.search(key, name) and re.search(value, annotations[name]) for name in annotations
        )
    assert not re.search(value, "relative/dir")


def unit_settings(unit: str = "lifecyclefs-mount.service") -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in (SCRIPTS / unit).read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and not line.startswith("#"):
            if name == "Environment":
                variable, _, variable_value = value.partition("=")
                settings[variable] = variable_value
            else:
                settings[name] = value
    return settings


@pytest.fixture
def unit_paths(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The unit's SOURCE and MOUNTPOINT, moved into the test's directory."""
    source, mountpoint = tmp_path / "containers", tmp_path / "run-lifecyclefs"
    Store(source / "default" / "c1", create=True).update(started_at=Timestamp(0))
    yield {"SOURCE": str(source), "MOUNTPOINT": str(mountpoint)}
    if str(mountpoint) in lifecyclefs_mounts():
        force_unmount(mountpoint)
        pytest.fail("the unit's mount was left behind")


def test_systemd_unit_runs_a_notify_service_that_stops_cleanly(
    unit_paths: dict[str, str], tmp_path: Path
) -> None:
    settings = unit_settings()
    assert settings["Type"] == "notify"

    def command(name: str) -> list[str]:
        line = settings[name].lstrip("-")
        for variable, value in unit_paths.items():
            line = line.replace("${" + variable + "}", value)
        return [LIFECYCLEFS if word == INSTALLED else word for word in shlex.split(line)]

    subprocess.run(command("ExecStartPre"), check=True)
    with notify_service(command("ExecStart"), tmp_path / "notify") as service:
        mounted = Path(unit_paths["MOUNTPOINT"], "default", "c1", "started_at")
        assert mounted.read_text() == "1970-01-01T00:00:00Z\n"
        errors = stop(service, signal.SIGTERM)  # systemctl stop
    assert service.returncode == 0, errors
    assert unit_paths["MOUNTPOINT"] not in lifecyclefs_mounts()
    assert settings["ExecStopPost"].startswith("-"), "a clean stop leaves nothing to unmount"
    assert subprocess.run(command("ExecStopPost"), capture_output=True, check=False).returncode == 1
