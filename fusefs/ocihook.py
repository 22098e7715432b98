"""`lifecyclefs oci-hook STAGE`: nerdctl's lifecycle bookkeeping as an OCI runtime hook.

runc and crun run the hook with the container's OCI state on stdin (one line of JSON:
`id`, `status`, `bundle`, `annotations`...). The state directory comes from the
`nerdctl/state-dir` annotation (or `--state-dir`). At createRuntime the record gets
`started_at` = now and `create_error` = false; at poststop a set `create_error` is
cleared. The hook starts no process, so nothing is left holding the runtime's pipes.

A hook that fails makes the runtime refuse the container, so by default bad or missing
input is a soft failure: one logged line and exit status 0. `--strict` turns it into
a hard failure (exit status 1).
"""

from __future__ import annotations

import json
import os
import sys

from fusefs.messages import one_line
from store import Lifecycle, LifecycleStoreError, Store, Timestamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Final

STATE_DIR_ANNOTATION: Final = "nerdctl/state-dir"
STAGES: Final = {"createruntime": "createRuntime", "poststop": "poststop"}
"""The stages this hook acts on, by their lowercase spelling (`postStop` is nerdctl's)."""
_MAX_STATE_BYTES: Final = 1 << 20


class HookInputError(Exception):
    """The hook was given something it cannot act on (stage, state JSON, state dir)."""


class HookRequest:
    """What one hook run was asked to do: `stage` (OCI spelling) on `state_dir`."""

    __slots__ = ("stage", "state_dir")

    def __init__(self, stage: str, state_dir: str) -> None:
        self.stage = stage
        self.state_dir = state_dir

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HookRequest):
            return NotImplemented
        return (self.stage, self.state_dir) == (other.stage, other.state_dir)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HookRequest(stage={self.stage!r}, state_dir={self.state_dir!r})"


def normalize_stage(stage: str) -> str:
    """The OCI spelling of `stage` (any case, nerdctl's `postStop` too); else HookInputError."""
    try:
        return STAGES[stage.lower()]
    except KeyError:
        known = ", ".join(STAGES.values())
        raise HookInputError(f"unknown hook stage {stage!r} (known: {known})") from None


def read_state(stream: BinaryIO | None) -> dict[str, object]:
    """The OCI state JSON object on `stream`; HookInputError if it is not one.

    A missing or unreadable stdin is a HookInputError too.
    """
    if stream is None:
        raise HookInputError("no OCI state on stdin (stdin is closed)")
    try:
        data = stream.read(_MAX_STATE_BYTES + 1)
    except (OSError, ValueError) as error:
        raise HookInputError(f"cannot read the OCI state on stdin: {error}") from error
    if len(data) > _MAX_STATE_BYTES:
        raise HookInputError(f"OCI state on stdin is larger than {_MAX_STATE_BYTES} bytes")
    if not data.strip():
        raise HookInputError("no OCI state on stdin")
    try:
        state = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise HookInputError(f"the OCI state on stdin is not JSON: {error}") from error
    if not isinstance(state, dict):
        raise HookInputError("the OCI state on stdin is not a JSON object")
    return state


def request_for(stage: str, state: dict[str, object], state_dir: str | None) -> HookRequest:
    """Which record to change, and how, for `stage` given the OCI `state`."""
    if state_dir is None:
        annotations = state.get("annotations")
        found = annotations.get(STATE_DIR_ANNOTATION) if isinstance(annotations, dict) else None
        if not isinstance(found, str) or not found:
            raise HookInputError(f"the OCI state has no {STATE_DIR_ANNOTATION} annotation")
        state_dir = found
    if not os.path.isabs(state_dir):
        raise HookInputError(f"the state directory must be an absolute path: {state_dir!r}")
    return HookRequest(normalize_stage(stage), state_dir)


def _on_create_runtime(record: Lifecycle) -> None:
    record.started_at = Timestamp.now()
    record.create_error = False


def _on_post_stop(record: Lifecycle) -> None:
    record.create_error = False


_ON_STAGE: Final = {"createRuntime": _on_create_runtime, "poststop": _on_post_stop}


def run(request: HookRequest, lock_timeout: float | None) -> None:
    """Update the record as nerdctl's hook does; LifecycleStoreError if that fails.

    At createRuntime the state directory is created (0700) if need be, as nerdctl does.
    """
    store = Store(
        request.state_dir, create=request.stage == "createRuntime", lock_timeout=lock_timeout
    )
    store.transform(_ON_STAGE[request.stage])


def main(stage: str, state_dir: str | None, strict: bool, lock_timeout: float | None) -> int:
    """Run the hook on stdin; the exit status for the runtime (0 unless strict and failed).

    Never raises: a failure is one logged line.
    """
    try:
        stdin = sys.stdin.buffer if sys.stdin is not None else None
        request = request_for(stage, read_state(stdin), state_dir)
        run(request, lock_timeout)
    except (HookInputError, LifecycleStoreError) as error:
        _log(f"oci-hook {stage}: {error}")
        return 1 if strict else 0
    except Exception as error:  # a bug must not refuse a container either
        _log(f"oci-hook {stage}: internal error: {type(error).__name__}: {error}")
        return 1 if strict else 0
    return 0


def _log(message: str) -> None:
    """One line on stderr (shown by the runtime only if the hook fails) and in syslog."""
    message = one_line(message)
    try:  # noqa: SIM105 - contextlib would cost an import
        print(f"lifecyclefs: {message}", file=sys.stderr)
    except (OSError, AttributeError):  # no stderr: syslog still gets it
        pass
    if os.path.exists("/dev/log"):
        import syslog  # noqa: PLC0415 - only failures pay for it

        syslog.openlog("lifecyclefs", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING, message)
