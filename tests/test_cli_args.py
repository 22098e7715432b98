"""Command lines: the quick reader agrees with argparse, and no argv ever makes a traceback."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusefs import cli, quickargs

MY_COMMANDS = ("get", "set", "show", "delete", "oci-hook")

# Tokens that make up the command lines both parsers see: every option of these
# commands in its spellings, values good and bad, and odd text.
TOKENS = [
    *MY_COMMANDS,
    "/state",
    "state",
    "",
    "-",
    "--",
    "-h",
    "--help",
    "started_at",
    "create_error",
    "colour",
    "create_error=1",
    "started_at=now",
    "started_at=",
    "x=y",
    "--lock-timeout",
    "--lock-timeout=0",
    "--lock-timeout=2.5",
    "--lock-timeout=-1",
    "--lock-time",
    "--lock-timeout=",
    "0",
    "1e3",
    "nan",
    "-1",
    " 1 ",
    "--json",
    "--docker",
    "--json=1",
    "--strict",
    "--str",
    "--state-dir",
    "--state-dir=/other",
    "--state-dir=",
    "-x",
    "createRuntime",
    "poststop",
]
argvs = st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=6)


def argparse_values(argv: list[str]) -> dict[str, object] | None:
    """What argparse makes of `argv`, without `run`; None if it refuses it."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            namespace = cli.build_parser().parse_args(argv)
    except SystemExit:
        return None
    values = dict(vars(namespace))
    del values["run"]
    return values


@settings(max_examples=1500)
@given(argv=argvs)
def test_the_quick_reader_reads_what_it_reads_as_argparse_does(argv: list[str]) -> None:
    quick = quickargs.parse(argv)
    if quick is not None:
        assert quick == argparse_values(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "/s"],
        ["get", "/s", "started_at"],
        ["set", "/s", "create_error=1", "started_at=now"],
        ["set", "--lock-timeout", "0", "/s", "create_error=1"],
        ["set", "--lock-timeout=2.5", "/s", "x=y"],
        ["show", "/s"],
        ["show", "--json", "/s"],
        ["show", "--docker", "/s"],
        ["delete", "/s"],
        ["delete", "--lock-timeout", "3", "/s"],
        ["oci-hook", "createRuntime"],
        ["oci-hook", "--strict", "--state-dir", "/s", "--lock-timeout", "1", "poststop"],
    ],
)
def test_the_plain_forms_are_read_quickly(argv: list[str]) -> None:
    quick = quickargs.parse(argv)
    assert quick is not None
    assert quick == argparse_values(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["get"],
        ["get", "/s", "colour"],
        ["get", "-h"],
        ["get", "--", "/s"],
        ["set", "/s"],
        ["set", "--lock-time", "1", "/s", "x=y"],
        ["set", "--lock-timeout", "nan", "/s", "x=y"],
        ["set", "--lock-timeout", "1", "--lock-timeout", "2", "/s", "x=y"],
        ["set", "/s", "--lock-timeout", "1", "x=y"],
        ["show", "--json", "--docker", "/s"],
        ["show", "/s", "--json"],
        ["oci-hook", "--str", "createRuntime"],
        ["oci-hook", "-x", "createRuntime"],
        ["oci-hook", "--state-dir", "-x", "createRuntime"],
        ["set", "--lock-timeout", "-x", "/s", "x=y"],
        ["mount", "/a", "/b"],
    ],
)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert quickargs.parse(argv) is None


def run_in_process(argv: list[str], stdin: bytes) -> tuple[int, str, str]:
    """`cli.main(argv)` with stdin, stdout and stderr of its own."""
    out, err = io.StringIO(), io.StringIO()
    fake_stdin = io.TextIOWrapper(io.BytesIO(stdin))
    real_stdin = sys.stdin
    sys.stdin = fake_stdin
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(argv)
    finally:
        sys.stdin = real_stdin
    return status, out.getvalue(), err.getvalue()


def confined(token: str, root: str) -> str:
    """`token`, with the absolute paths of TOKENS moved under `root`."""
    return token.replace("/state", root + "/state").replace("/other", root + "/other")


def subcommands() -> set[str]:
    """Every subcommand `lifecyclefs` has, ours and those of other modules."""
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("lifecyclefs has no subcommands")


other_commands = subcommands() - set(MY_COMMANDS)


@settings(max_examples=400, deadline=None)
@given(
    argv=st.lists(
        st.sampled_from(TOKENS) | st.text(max_size=6).filter(lambda text: "/" not in text),
        max_size=6,
    ),
    stdin=st.binary(max_size=30),
)
def test_any_command_line_exits_0_1_or_2_with_at_most_one_line(
    argv: list[str], stdin: bytes
) -> None:
    if argv and argv[0] in other_commands:
        argv = ["get", *argv]  # mount, umount and the like act outside a test's directory
    with tempfile.TemporaryDirectory() as root, contextlib.chdir(root):
        Path(root, "state").mkdir()
        Path(root, "state", "lifecycle.json").write_bytes(
            b'{"started_at":"2024-01-02T03:04:05Z","create_error":true}'
        )
        status, _, err = run_in_process([confined(token, root) for token in argv], stdin)
    assert status in (0, 1, 2)
    asked_for_help = "-h" in argv or "--help" in argv
    if status and not asked_for_help:
        assert err.count("\n") == 1, err
        assert "internal error" not in err
    if status == 0 and not asked_for_help:  # the hook logs a soft failure, and exits 0
        assert err == "" or (argv[0] == "oci-hook" and err.count("\n") == 1), err


def test_help_is_argparses() -> None:
    status, out, _ = run_in_process(["get", "--help"], b"")
    assert status == 0
    assert "usage: lifecyclefs get" in out
