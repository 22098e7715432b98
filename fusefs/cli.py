"""`lifecyclefs`: the command line. One clear line on stderr per error; exit 0, 1 or 2.

Exit codes: 0 done, 1 the operation failed, 2 the command line was wrong. Each
subcommand imports what it needs when it runs, so that `get`, `set` and `oci-hook`
never pay for importing trio or pyfuse3; their plain command lines are read by
`fusefs.quickargs`, without even importing argparse, and anything else by the argparse
parser of `build_parser`.
"""

from __future__ import annotations

import sys

from fusefs import quickargs
from fusefs.messages import one_line
from store import Lifecycle, LifecycleStoreError, Store, Timestamp
from store.codec import encode
from store.values import FIELDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from types import SimpleNamespace
    from typing import NoReturn, TypeAlias

    from store.values import Update

    Arguments: TypeAlias = "argparse.Namespace | SimpleNamespace"
    Command: TypeAlias = Callable[[Arguments], "int | None"]
    """Runs a subcommand: its exit status (None: 0), or an exception."""

PROG = "lifecyclefs"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure to report as one line on stderr and exit status 1."""


class UsageError(Exception):
    """A command line that does not make sense: one line on stderr and exit status 2."""


def _parser_class() -> type[argparse.ArgumentParser]:
    import argparse  # noqa: PLC0415 - plain command lines never need it (see quickargs)

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            self.exit(EXIT_USAGE, f"{self.prog}: usage error: {one_line(message)}\n")

    return Parser


def _cmd_mount(args: argparse.Namespace) -> None:
    from fusefs.mount import MountError, MountRequest, mount  # noqa: PLC0415 - heavy
    from fusefs.mountopts import MountOptionError, apply_options  # noqa: PLC0415 - heavy

    request = MountRequest(
        source=args.source,
        mountpoint=args.mountpoint,
        depth=args.depth,
        foreground=args.foreground,
        debug=args.debug,
        log_file=args.log_file,
        pid_file=args.pid_file,
    )
    try:
        mount(apply_options(args.options, request))
    except (MountError, MountOptionError) as error:
        raise CommandError(str(error)) from error


def as_mount_helper_call(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`argv` with `mount` put first when it is a mount helper's call, else `argv` itself.

    fuse3's mount helper (`mount -t fuse.lifecyclefs`, fstab) runs
    `lifecyclefs SOURCE MOUNTPOINT -o OPTIONS`: two operands and no subcommand. The
    first must look like a path (a `/` in it, or a directory here): a misspelt
    subcommand with two operands stays a usage error instead of a mount attempt.
    """
    import argparse  # noqa: PLC0415 - the parser's module: already imported
    import os  # noqa: PLC0415 - loaded with the interpreter anyway

    commands = next(  # argparse has no public way to list the subcommands
        action.choices
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    operands = argv[:2]
    if (
        len(operands) == 2
        and operands[0] not in commands
        and not any(operand.startswith("-") for operand in operands)
        and ("/" in operands[0] or os.path.isdir(operands[0]))
    ):
        return ["mount", *argv]
    return argv


def _cmd_umount(args: argparse.Namespace) -> None:
    from fusefs.mount import MountError, unmount  # noqa: PLC0415 - heavy

    try:
        unmount(args.mountpoint)
    except MountError as error:
        raise CommandError(str(error)) from error


def _timeout_argument(text: str) -> float | None:
    """`--lock-timeout SECONDS`: a finite number of seconds, 0 for ever."""
    import argparse  # noqa: PLC0415 - argparse is calling us: already imported

    try:
        return quickargs.timeout_value(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a finite number of seconds (0: for ever), not {text!r}"
        ) from None


def _cmd_get(args: Arguments) -> None:
    record = Store(args.state_dir).snapshot()
    if args.field:
        sys.stdout.write(FIELDS[args.field].render(record))
        return
    for field in FIELDS.values():
        sys.stdout.write(field.render(record) or "\n")


def _parse_assignments(assignments: Sequence[str]) -> list[Update]:
    updates = []
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or name not in FIELDS:
            raise UsageError(
                f"expected FIELD=VALUE with FIELD one of {', '.join(FIELDS)}, not {assignment!r}"
            )
        try:
            updates.append(FIELDS[name].parse(value))
        except ValueError as error:
            raise CommandError(f"{name}: {error}") from error
    return updates


def _cmd_set(args: Arguments) -> None:
    updates = _parse_assignments(args.assignments)

    def apply(record: Lifecycle) -> None:
        for update in updates:
            update(record)

    Store(args.state_dir, lock_timeout=args.lock_timeout).transform(apply)


def docker_state(record: Lifecycle) -> dict[str, dict[str, str]]:
    """`{"State": {"StartedAt": ...}}` as `nerdctl inspect` prints it.

    nerdctl shows the time in UTC, and leaves StartedAt empty for the zero time.
    """
    started = record.started_at
    shown = "" if started.is_unset else Timestamp(started.unix_ns).format_go()
    return {"State": {"StartedAt": shown}}


def _cmd_show(args: Arguments) -> None:
    record = Store(args.state_dir).snapshot()
    if args.json:
        sys.stdout.write(encode(record).decode() + "\n")
    elif args.docker:
        import json  # noqa: PLC0415 - only --docker needs it

        sys.stdout.write(json.dumps(docker_state(record), indent=4) + "\n")
    else:
        for name, field in FIELDS.items():
            value = field.render(record).rstrip("\n") or "(not started)"
            sys.stdout.write(f"{name + ':':<14}{value}\n")


def _cmd_delete(args: Arguments) -> None:
    Store(args.state_dir, lock_timeout=args.lock_timeout).delete()


def _cmd_oci_hook(args: Arguments) -> int:
    from fusefs import ocihook  # noqa: PLC0415 - only hooks need it

    return ocihook.main(args.stage, args.state_dir, args.strict, args.lock_timeout)


def _depth_argument(text: str) -> int:
    """`--depth N`: a whole number, at least 1."""
    import argparse  # noqa: PLC0415 - argparse is calling us: already imported

    try:
        depth = int(text)
    except ValueError:
        depth = 0
    if depth < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, not {text!r}")
    return depth


def _cmd_check(args: argparse.Namespace) -> int:
    from fusefs import check  # noqa: PLC0415 - only check needs it

    return check.main(args.sources, args.depth, repair=args.repair, lock_timeout=args.lock_timeout)


def _cmd_ps(args: argparse.Namespace) -> int:
    from fusefs import ps  # noqa: PLC0415 - only ps needs it

    return ps.main(args.source, args.depth, as_json=args.json, truncate=not args.no_trunc)


def _cmd_watch(args: argparse.Namespace) -> int:
    from fusefs import watch  # noqa: PLC0415 - only watch needs it

    return watch.main(args.source, args.depth, initial=args.initial)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    parser_class = _parser_class()
    parser = parser_class(prog=PROG, description="nerdctl's container lifecycle state, as files.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)

    mount = commands.add_parser(
        "mount",
        help="mount a tree of state directories",
        description="Mount SOURCE's state directories on MOUNTPOINT: each container is a"
        " directory holding started_at, create_error and lifecycle.json. Returns once"
        " the mount is live, then serves in the background (unless -f). mount(8) and"
        " fstab run it as `lifecyclefs SOURCE MOUNTPOINT -o OPTIONS` (type fuse.lifecyclefs).",
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
        " (how long a write waits for the lock; default 10, 0 for ever); every flag"
        " below has an -o spelling too: depth=N, foreground, debug, log_file=FILE,"
        " pid_file=FILE. Generic mount flags (nodev, noexec, noatime...) are passed to"
        " the kernel; mount(8)'s own (nofail, _netdev, noauto, x-*...) are ignored",
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

    lock_timeout = parser_class(add_help=False)
    lock_timeout.add_argument(
        "--lock-timeout",
        type=_timeout_argument,
        metavar="SECONDS",
        help="give up when the lock stays taken this long (default: wait, as nerdctl does)",
    )

    get = commands.add_parser(
        "get",
        help="print field values, as the filesystem shows them",
        description="Print one value per line (all fields, or FIELD), exactly as the"
        " filesystem's value files hold them. Reads the last committed record without"
        " waiting for the lock.",
    )
    get.add_argument("state_dir", metavar="STATE_DIR")
    get.add_argument("field", metavar="FIELD", nargs="?", choices=list(FIELDS))
    get.set_defaults(run=_cmd_get)

    set_ = commands.add_parser(
        "set",
        parents=[lock_timeout],
        help="set fields in one atomic, locked transform",
        description="Set each FIELD to VALUE in one transform, parsing values as the"
        " filesystem does: started_at=now, started_at=2024-01-02T03:04:05Z,"
        " started_at= (unset), create_error=true|false|1|0.",
    )
    set_.add_argument("state_dir", metavar="STATE_DIR")
    set_.add_argument("assignments", metavar="FIELD=VALUE", nargs="+")
    set_.set_defaults(run=_cmd_set)

    show = commands.add_parser("show", help="show the whole record")
    show.add_argument("state_dir", metavar="STATE_DIR")
    form = show.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the record as nerdctl writes it")
    form.add_argument(
        "--docker",
        action="store_true",
        help='{"State": {"StartedAt": ...}} as nerdctl inspect prints it',
    )
    show.set_defaults(run=_cmd_show)

    delete = commands.add_parser(
        "delete",
        parents=[lock_timeout],
        help="remove the record (not an error if there is none)",
    )
    delete.add_argument("state_dir", metavar="STATE_DIR")
    delete.set_defaults(run=_cmd_delete)

    hook = commands.add_parser(
        "oci-hook",
        help="an OCI runtime hook: createRuntime or poststop",
        description="Read the OCI state on stdin and update the container's record as"
        " nerdctl's hook does: createRuntime sets started_at to now and create_error to"
        " false; poststop clears create_error. The state directory is the"
        " nerdctl/state-dir annotation unless --state-dir is given. Bad input is logged"
        " and exits 0 (the container still runs) unless --strict.",
    )
    hook.add_argument("--strict", action="store_true", help="fail (exit 1) on bad input")
    hook.add_argument("--state-dir", metavar="DIR", help="use DIR, not the annotation")
    hook.add_argument(
        "--lock-timeout",
        type=_timeout_argument,
        default=quickargs.HOOK_LOCK_TIMEOUT,
        metavar="SECONDS",
        help="give up when the lock stays taken this long (default 10; 0 waits for ever)",
    )
    hook.add_argument("stage", metavar="STAGE", help="createRuntime or poststop (any case)")
    hook.set_defaults(run=_cmd_oci_hook)
    _add_tree_commands(commands)
    return parser


def _add_tree_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """The subcommands that read a whole tree of state directories (check, ps, watch)."""
    tree = _parser_class()(add_help=False)
    tree.add_argument(
        "--depth",
        type=_depth_argument,
        default=1,
        metavar="N",
        help="containers are the directories N levels below SOURCE"
        " (2 for nerdctl's containers/<namespace>/<id>; default 1)",
    )

    check = commands.add_parser(
        "check",
        parents=[tree],
        help="find (and --repair) records that stop nerdctl",
        description="Print one line per problem: a record nerdctl cannot read (empty, torn,"
        " invalid) or Store refuses (too large), one it cannot write back, a stale"
        " .temp.lifecycle.json. Exit 0 when all is well. --repair fixes each under the"
        " directory's lock, keeping a bad record as lifecycle.json.corrupt-<UTC time>.",
    )
    check.add_argument("--repair", action="store_true", help="repair what is found")
    check.add_argument(
        "--lock-timeout",
        type=_timeout_argument,
        default=10.0,
        metavar="SECONDS",
        help="--repair leaves a container alone when its lock stays taken this long"
        " (default 10; 0 waits for ever)",
    )
    check.add_argument("sources", metavar="SOURCE", nargs="+")
    check.set_defaults(run=_cmd_check)

    ps = commands.add_parser(
        "ps",
        parents=[tree],
        help="list containers like nerdctl ps: started, Up 5 minutes",
        description="One line per container: namespace (the levels above the container;"
        " none at --depth 1), id, started (local time), status (Up <duration> or Created)"
        " and create error.",
    )
    ps.add_argument("--json", action="store_true", help="one JSON object per line, exact values")
    ps.add_argument("--no-trunc", action="store_true", help="do not cut ids to 12 characters")
    ps.add_argument("source", metavar="SOURCE")
    ps.set_defaults(run=_cmd_ps)

    watch = commands.add_parser(
        "watch",
        parents=[tree],
        help="print a JSON line per change of any record",
        description="Print one JSON line each time a record below SOURCE changes (its"
        ' fields, or "removed": true), until interrupted.',
    )
    watch.add_argument(
        "--initial", action="store_true", help="first print every record as it is now"
    )
    watch.add_argument("source", metavar="SOURCE")
    watch.set_defaults(run=_cmd_watch)


_QUICK_COMMANDS: dict[str, Command] = {
    "get": _cmd_get,
    "set": _cmd_set,
    "show": _cmd_show,
    "delete": _cmd_delete,
    "oci-hook": _cmd_oci_hook,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lifecyclefs` with `argv` (default: the process's); return the exit status.

    Never raises: every failure is one line on stderr and a status (1, or 2 for a
    command line that makes no sense).
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = arguments[0] if arguments else ""
    try:
        values = quickargs.parse(arguments)
        if values is None:
            parser = build_parser()
            args: Arguments = parser.parse_args(as_mount_helper_call(parser, arguments))
            run: Command = args.run
        else:
            from types import SimpleNamespace  # noqa: PLC0415 - cheap, and rarely needed

            args = SimpleNamespace(**values)
            run = _QUICK_COMMANDS[command]
        command = args.command
        status = run(args)
        _flush_stdout()
    except SystemExit as exit_:  # argparse's --help and usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_FAILED
    except UsageError as error:
        return _fail(EXIT_USAGE, f"{PROG} {command}: usage error: {error}")
    except (CommandError, LifecycleStoreError) as error:
        return _fail(EXIT_FAILED, f"{PROG}: {error}")
    except KeyboardInterrupt:
        return 130
    except OSError as error:  # stdout or stderr gone
        return _fail(EXIT_FAILED, f"{PROG}: {error.strerror or error}")
    except Exception as error:  # a bug: still one line, never a traceback
        return _fail(EXIT_FAILED, f"{PROG}: internal error: {type(error).__name__}: {error}")
    return status or EXIT_OK


def _fail(status: int, message: str) -> int:
    try:  # noqa: SIM105 - contextlib would cost an import
        print(one_line(message), file=sys.stderr)
    except (OSError, AttributeError):  # no stderr to tell
        pass
    return status


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError:
        # Nothing more can be written there; stop the interpreter's own flush at exit
        # from failing again.
        import os  # noqa: PLC0415

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise
