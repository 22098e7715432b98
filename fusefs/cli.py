"""`lifecyclefs`: the command line. One clear line on stderr per error; exit 0, 1 or 2.

Exit codes: 0 done, 1 the operation failed, 2 the command line was wrong. Each
subcommand imports what it needs when it runs, so that `get`, `set` and `oci-hook`
never pay for importing trio or pyfuse3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from store import LifecycleStoreError

PROG = "lifecyclefs"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure to report as one line on stderr and exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: usage error: {message}\n")


def _mount_options(values: Sequence[str]) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for value in values:
        for option in filter(None, value.split(",")):
            name, _, argument = option.partition("=")
            options[name] = argument if "=" in option else None
    return options


def _cmd_mount(args: argparse.Namespace) -> None:
    from fusefs.mount import MountError, MountRequest, mount  # noqa: PLC0415 - heavy
    from fusefs.operations import MountOptions  # noqa: PLC0415 - heavy

    options = _mount_options(args.options)
    known = {"ro", "rw", "allow_other", "default_permissions", "durable", "nodurable"}
    unknown = sorted(set(options) - known - {"lock_timeout"})
    if unknown:
        raise CommandError(f"unknown mount option {unknown[0]!r} (see lifecyclefs mount --help)")
    lock_timeout: float | None = MountOptions().lock_timeout
    if "lock_timeout" in options:
        try:
            lock_timeout = float(options["lock_timeout"] or "")
        except ValueError:
            raise CommandError("-o lock_timeout= needs a number of seconds") from None
        if lock_timeout <= 0:
            lock_timeout = None
    request = MountRequest(
        source=args.source,
        mountpoint=args.mountpoint,
        depth=args.depth,
        options=MountOptions(
            read_only="ro" in options and "rw" not in options,
            durable="nodurable" not in options,
            lock_timeout=lock_timeout,
        ),
        allow_other="allow_other" in options,
        foreground=args.foreground,
        debug=args.debug,
        log_file=args.log_file,
        pid_file=args.pid_file,
    )
    try:
        mount(request)
    except MountError as error:
        raise CommandError(str(error)) from error


def _cmd_umount(args: argparse.Namespace) -> None:
    from fusefs.mount import MountError, unmount  # noqa: PLC0415 - heavy

    try:
        unmount(args.mountpoint)
    except MountError as error:
        raise CommandError(str(error)) from error


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    parser = _Parser(prog=PROG, description="nerdctl's container lifecycle state, as files.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    mount = commands.add_parser(
        "mount",
        help="mount a tree of state directories",
        description="Mount SOURCE's state directories on MOUNTPOINT: each container is a"
        " directory holding started_at, create_error and lifecycle.json. Returns once"
        " the mount is live, then serves in the background (unless -f).",
    )
    mount.add_argument("source", metavar="SOURCE")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT")
    mount.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="ro, rw, allow_other, nodurable (skip fsync), lock_timeout=SECONDS"
        " (how long a write waits for the lock; default 10, 0 for ever)",
    )
    mount.add_argument(
        "--depth",
        type=int,
        default=1,
        metavar="N",
        help="containers are the directories N levels below SOURCE"
        " (2 for nerdctl's containers/<namespace>/<id>; default 1)",
    )
    mount.add_argument("-f", "--foreground", action="store_true", help="serve in the foreground")
    mount.add_argument(
        "--debug", action="store_true", help="log every request to stderr (implies -f)"
    )
    mount.add_argument("--log-file", metavar="FILE", help="log here (default: syslog)")
    mount.add_argument("--pid-file", metavar="FILE", help="write the daemon's pid here")
    mount.set_defaults(run=_cmd_mount)

    umount = commands.add_parser(
        "umount",
        help="unmount a lifecyclefs mount (also one whose daemon died)",
        description="Unmount MOUNTPOINT; the daemon then exits.",
    )
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")
    umount.set_defaults(run=_cmd_umount)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lifecyclefs` with `argv` (default: the process's); return the exit status."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
    except (CommandError, LifecycleStoreError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return EXIT_OK
