"""End to end with a real OCI runtime: runc runs busybox containers whose hooks record state."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from store import Lifecycle, Store, Timestamp
from tests.conftest import LIFECYCLEFS, Mount, lifecyclefs
from tests.oci_bundle import Hook, leftovers, make_bundle, new_container_id, run_container

NAMESPACE = "default"


@dataclass
class Containers:
    """Where a test's containers live: runc's state, bundles, nerdctl-style state dirs."""

    tmp: Path
    runc_root: Path
    state_tree: Path
    made: list[tuple[str, Path]]

    def state_dir(self, container_id: str) -> Path:
        """nerdctl's layout: <state tree>/<namespace>/<id>."""
        return self.state_tree / NAMESPACE / container_id

    def bundle(self, container_id: str, args: list[str], hooks: dict[str, list[Hook]]) -> Path:
        """A busybox bundle annotated with the container's state directory."""
        bundle = make_bundle(
            self.tmp / f"bundle-{container_id}",
            args,
            annotations={
                "nerdctl/state-dir": str(self.state_dir(container_id)),
                "nerdctl/namespace": NAMESPACE,
            },
            hooks=hooks,
        )
        self.made.append((container_id, bundle))
        return bundle


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[Containers]:
    """A private runc root; afterwards no container, process, mount or cgroup is left."""
    found = Containers(tmp_path, tmp_path / "runc", tmp_path / "containers", [])
    (found.state_tree / NAMESPACE).mkdir(parents=True)
    yield found
    left = [item for cid, bundle in found.made for item in leftovers(found.runc_root, cid, bundle)]
    assert left == []


def lifecyclefs_hook(stage: str) -> Hook:
    """The installed command as a hook entry, the way an operator writes it."""
    return {"path": LIFECYCLEFS, "args": ["lifecyclefs", "oci-hook", stage]}


def test_runc_container_records_started_at_through_the_hook(
    containers: Containers, mount: Callable[..., Mount]
) -> None:
    cid = new_container_id()
    Store(containers.state_dir(cid), create=True).update(create_error=True)
    bundle = containers.bundle(
        cid,
        ["sh", "-c", "echo hello from $(hostname)"],
        {
            "createRuntime": [lifecyclefs_hook("createRuntime")],
            "poststop": [lifecyclefs_hook("postStop")],
        },
    )
    mnt = mount(containers.state_tree, "--depth", "2").path
    before = Timestamp.now()
    result = run_container(bundle, root=containers.runc_root, container_id=cid)
    after = Timestamp.now()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from lcfs\n"

    record = Store(containers.state_dir(cid)).load()
    assert before.unix_ns <= record.started_at.unix_ns <= after.unix_ns
    assert record.create_error is False
    seen = (mnt / NAMESPACE / cid / "started_at").read_text()
    assert Timestamp.parse(seen.strip()) == record.started_at
    assert (mnt / NAMESPACE / cid / "create_error").read_text() == "false\n"
    assert lifecyclefs("get", str(containers.state_dir(cid)), "started_at").stdout == seen


def test_failing_create_runtime_hook_refuses_the_container_and_the_record_stays_valid(
    containers: Containers,
) -> None:
    cid = new_container_id()
    Store(containers.state_dir(cid), create=True)
    marker = containers.tmp / "poststop-ran"
    bundle = containers.bundle(
        cid,
        ["echo", "the container ran"],
        {
            "createRuntime": [
                lifecyclefs_hook("createRuntime"),
                {"path": "/bin/sh", "args": ["sh", "-c", "echo refused >&2; exit 3"]},
            ],
            "poststop": [
                lifecyclefs_hook("poststop"),
                {"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}"]},
            ],
        },
    )
    before = Timestamp.now()
    result = run_container(bundle, root=containers.runc_root, container_id=cid)
    after = Timestamp.now()
    # runc: a failing createRuntime hook fails the creation; poststop still runs.
    assert result.returncode == 1
    assert "error running hook #1" in result.stderr
    assert "exit status 3" in result.stderr
    assert "the container ran" not in result.stdout
    assert marker.exists()
    record = Store(containers.state_dir(cid)).load()  # raises if the record is not valid
    assert before.unix_ns <= record.started_at.unix_ns <= after.unix_ns
    assert record.create_error is False


HOOK_SCRIPT = """#!/bin/sh
# An OCI createRuntime hook that writes through a mounted lifecyclefs view.
# The container id and state directory come from the OCI state on stdin.
set -eu
state=$(cat)
id=$(printf '%s' "$state" | sed -n 's/.*"id":"\\([^"]*\\)".*/\\1/p')
dir=$(printf '%s' "$state" | sed -n 's/.*"nerdctl\\/state-dir":"\\([^"]*\\)".*/\\1/p')
namespace=$(basename "$(dirname "$dir")")
target="$MNT/$namespace/$id"
[ -d "$target" ] || mkdir "$target"
echo now > "$target/started_at"
"""


def test_shell_hook_writing_through_a_mounted_view(
    containers: Containers, mount: Callable[..., Mount]
) -> None:
    cid = new_container_id()
    mnt = mount(containers.state_tree, "--depth", "2").path
    script = containers.tmp / "record-start.sh"
    script.write_text(HOOK_SCRIPT)
    script.chmod(0o755)
    bundle = containers.bundle(
        cid,
        ["true"],
        {"createRuntime": [{"path": str(script), "args": [script.name], "env": [f"MNT={mnt}"]}]},
    )
    assert not containers.state_dir(cid).exists(), "the hook is to create it"
    before = Timestamp.now()
    result = run_container(bundle, root=containers.runc_root, container_id=cid)
    after = Timestamp.now()
    assert result.returncode == 0, result.stderr

    assert stat.S_IMODE(containers.state_dir(cid).stat().st_mode) == 0o700
    record = Store(containers.state_dir(cid)).load()
    assert before.unix_ns <= record.started_at.unix_ns <= after.unix_ns
    assert record == Lifecycle(record.started_at, create_error=False)
    shown = lifecyclefs("get", str(containers.state_dir(cid))).stdout
    assert shown == f"{record.started_at}\nfalse\n"
    assert (mnt / NAMESPACE / cid / "started_at").read_text() == f"{record.started_at}\n"
