"""`lifecyclefs check [--repair]`: find, and fix, the records that stop nerdctl.

After a crash or a power loss nerdctl v2.0.x can leave an empty or torn
`lifecycle.json`, and then every `nerdctl start` of that container fails ("unable to
unmarshall lifecycle data: unexpected end of JSON input"). `check` reads every
container's record below SOURCE and prints one line per problem:

- a record nerdctl's reader refuses (empty, torn, not JSON, a bad value) or that is too
  large for `Store`;
- a record that loads but cannot be written back (nerdctl's writer refuses a UTC offset
  of 24 hours or more; `encode` refuses what JSON cannot hold);
- a stale `.temp.lifecycle.json`: one found while nobody holds the directory's lock
  (while the lock is held, it is a write in progress);
- a record or directory that cannot be read at all (not repairable here).

`--repair` fixes each container under its lock (nerdctl's): a bad record is kept as
`lifecycle.json.corrupt-<UTC time>` (never overwriting an earlier one) and replaced,
atomically and durably, by a record salvaging what is sound; a stale temp file goes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from fusefs.containers import is_io_error, open_view, printable, walk
from fusefs.output import emit
from fusefs.view import Parts, View
from store import Lifecycle, LifecycleStoreError, Timestamp
from store.atomic import TEMP_NAME, remove_file, replace_file, sync_directory
from store.codec import decode, encode
from store.locking import lock, try_lock
from store.record import RECORD_NAME, RECORD_READ_FLAGS, read_record
from store.values import FIELDS

ASIDE_PREFIX: Final = RECORD_NAME + ".corrupt-"
"""A bad record is kept as `lifecycle.json.corrupt-20261206T192404Z` (then `.1`, `.2`...)."""
_SALVAGE_READ_LIMIT: Final = 16 << 20
"""How much of a record too large for `Store` is read to salvage its fields."""
_MAX_ASIDE_NAMES: Final = 1000

Fix = Callable[[int], str]
"""Repairs one problem given the locked state directory's descriptor; says what it did."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem of one container, and how to repair it (None: `check` cannot)."""

    problem: str
    fix: Fix | None


class _VanishedError(Exception):
    """A container vanished while it was examined: nothing left to report or repair."""


def examine(dir_fd: int, shown_path: str, *, locked: bool) -> list[Finding]:
    """The problems of the state directory open on `dir_fd` (`shown_path` names it).

    Unless `locked` (the caller holds the lock), a temp file counts as stale only if
    the lock is free: then it is taken on `dir_fd` and held until `dir_fd` is closed.
    """
    findings = []
    try:
        if _has_temp(dir_fd) and (locked or try_lock(dir_fd)) and _has_temp(dir_fd):
            findings.append(
                Finding(
                    f"stale {TEMP_NAME} (an interrupted write; no write in progress)", _drop_temp
                )
            )
        record = _examine_record(dir_fd, os.path.join(shown_path, RECORD_NAME))
    except OSError as error:
        findings.append(Finding(f"cannot examine the state directory: {error.strerror}", None))
        return findings
    if record is not None:
        findings.append(record)
    return findings


def _has_temp(dir_fd: int) -> bool:
    try:
        os.stat(TEMP_NAME, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _examine_record(dir_fd: int, path: str) -> Finding | None:
    try:
        fd = os.open(RECORD_NAME, RECORD_READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # no record: nerdctl reads it as all unset
    except OSError as error:
        return Finding(f"cannot open {RECORD_NAME}: {error.strerror}", None)
    try:
        try:
            record, stat = read_record(fd, path, want_stat=True)
        except LifecycleStoreError as error:
            if is_io_error(error):
                return Finding(_short(error, path), None)
            salvaged = _salvage_fields(_read_for_salvage(fd))
            return Finding(_short(error, path), _replacement(salvaged, os.fstat(fd)))
    finally:
        os.close(fd)
    reason = write_back_problem(record)
    if reason is None:
        return None
    return Finding(
        f"{RECORD_NAME} loads but cannot be written back: {reason}",
        _replacement(salvage(record), stat),
    )


def _short(error: LifecycleStoreError, path: str) -> str:
    """The store's message with the record's full path cut to its name (the line has it)."""
    return str(error).replace(path, RECORD_NAME)


def write_back_problem(record: Lifecycle) -> str | None:
    """Why nerdctl (or `Store`) could not write `record` back, or None if it can.

    nerdctl's writer refuses a UTC offset of 24 hours or more although its reader
    accepts one; the value files refuse it for that reason, so their parser decides.
    """
    try:
        encode(record)
        if record.started_at.offset:  # what the value files refuse of a time written back
            FIELDS["started_at"].parse(FIELDS["started_at"].render(record))
    except (TypeError, ValueError) as error:
        return str(error)
    return None


def salvage(record: Lifecycle) -> Lifecycle:
    """What is sound of a record that loads: a record nerdctl can read and write again.

    `started_at` keeps its instant, in UTC when its offset cannot be written (unset if
    even that cannot); `create_error` is kept, and so is every extra key JSON can hold.
    """
    started_at = record.started_at
    if write_back_problem(Lifecycle(started_at)) is not None:
        started_at = Timestamp(started_at.unix_ns)
        if write_back_problem(Lifecycle(started_at)) is not None:
            started_at = Timestamp.UNSET
    extra = tuple(pair for pair in record.extra if _encodes(Lifecycle(extra=(pair,))))
    return Lifecycle(started_at, record.create_error, extra)


def _encodes(record: Lifecycle) -> bool:
    try:
        encode(record)
    except (TypeError, ValueError):
        return False
    return True


def _read_for_salvage(fd: int) -> bytes | None:
    """The whole record, if it is not beyond what salvage reads; None otherwise."""
    chunks = []
    total = 0
    while chunk := os.pread(fd, 1 << 20, total):
        total += len(chunk)
        if total > _SALVAGE_READ_LIMIT:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _salvage_fields(data: bytes | None) -> Lifecycle:
    """The two fields of a record `Store` refuses, when they still decode; else unset.

    Extra keys are dropped: a record refused for its size is refused for them.
    """
    if data is None:
        return Lifecycle()
    try:
        record = decode(data)
    except ValueError:
        return Lifecycle()
    return salvage(Lifecycle(record.started_at, record.create_error))


def _replacement(record: Lifecycle, stat: os.stat_result | None) -> Fix:
    """A fix that keeps the bad record aside and puts `record` in its place."""
    owner = None if stat is None or os.geteuid() != 0 else (stat.st_uid, stat.st_gid)

    def replace(dir_fd: int) -> str:
        data = encode(record)
        aside = _keep_aside(dir_fd)
        try:
            replace_file(dir_fd, RECORD_NAME, data, durable=True, owner=owner)
        except BaseException:
            os.unlink(aside, dir_fd=dir_fd)  # the record is still in place: drop the copy
            raise
        sync_directory(dir_fd)
        return f"kept as {aside}, now {data.decode()}"

    return replace


def _keep_aside(dir_fd: int) -> str:
    """Hard-link the record to a new `lifecycle.json.corrupt-<UTC time>`; return the name.

    A link, not a rename: `lifecycle.json` never goes missing, and link(2) never
    replaces an existing name.
    """
    base = ASIDE_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for number in range(_MAX_ASIDE_NAMES):
        name = f"{base}.{number}" if number else base
        try:
            os.link(RECORD_NAME, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"{base} and {_MAX_ASIDE_NAMES - 1} numbered copies exist already")


def _drop_temp(dir_fd: int) -> str:
    if remove_file(dir_fd, TEMP_NAME):
        sync_directory(dir_fd)
    return "removed"


@dataclass(frozen=True, slots=True)
class Report:
    """What `check` found in one container: one line per problem; how many are left."""

    lines: list[str]
    unresolved: int


def check_container(
    view: View, container: Parts, *, repair: bool, lock_timeout: float | None
) -> Report:
    """Examine one container (and repair it, under its lock, if asked)."""
    shown = view.display_path(container)
    try:
        findings = _examine_at(view, container, shown)
        if not findings:
            return Report([], 0)
        if not repair:
            return Report([_line(shown, finding.problem) for finding in findings], len(findings))
        return _repair(view, container, shown, findings, lock_timeout)
    except _VanishedError:
        return Report([], 0)


def _examine_at(view: View, container: Parts, shown: str) -> list[Finding]:
    try:
        dir_fd = view.open_dir(container)
    except FileNotFoundError:
        raise _VanishedError from None
    except OSError as error:
        return [Finding(f"cannot open the state directory: {error.strerror}", None)]
    try:
        return examine(dir_fd, shown, locked=False)
    finally:
        os.close(dir_fd)


def _repair(
    view: View, container: Parts, shown: str, seen: list[Finding], lock_timeout: float | None
) -> Report:
    try:
        dir_fd = view.open_dir(container)
    except FileNotFoundError:
        raise _VanishedError from None
    except OSError as error:
        return _unrepaired(shown, seen, f"cannot open the state directory: {error.strerror}")
    try:
        try:
            lock(dir_fd, lock_timeout)
        except TimeoutError:
            return _unrepaired(shown, seen, f"its lock was held for {lock_timeout} s")
        except OSError as error:
            return _unrepaired(shown, seen, f"cannot lock: {error.strerror}")
        # Examined again under the lock: the first look may be out of date.
        lines = []
        unresolved = 0
        for finding in examine(dir_fd, shown, locked=True):
            if finding.fix is None:
                lines.append(_line(shown, finding.problem, "NOT repaired"))
                unresolved += 1
                continue
            try:
                done = finding.fix(dir_fd)
            except OSError as error:
                reason = error.strerror or str(error)
                lines.append(_line(shown, finding.problem, f"NOT repaired: {reason}"))
                unresolved += 1
            else:
                lines.append(_line(shown, finding.problem, f"repaired: {done}"))
        return Report(lines, unresolved)
    finally:
        os.close(dir_fd)


def _unrepaired(shown: str, findings: list[Finding], reason: str) -> Report:
    lines = [_line(shown, finding.problem, f"NOT repaired: {reason}") for finding in findings]
    return Report(lines, len(findings))


def _line(shown: str, problem: str, outcome: str | None = None) -> str:
    text = f"{shown}: {problem}" if outcome is None else f"{shown}: {problem}; {outcome}"
    return printable(text) + "\n"


def main(sources: Sequence[str], depth: int, *, repair: bool, lock_timeout: float | None) -> int:
    """`lifecyclefs check`: one line per problem on stdout; the exit status.

    0 when nothing was wrong or, with `repair`, everything found was repaired; 1
    otherwise. A SOURCE that cannot be opened is one `CommandError` before anything
    is examined.
    """
    from fusefs.cli import EXIT_FAILED, EXIT_OK, CommandError  # noqa: PLC0415 - cli imports us

    views: list[View] = []
    try:
        for source in sources:
            views.append(open_view(source, depth))
        unresolved = 0
        for view in views:
            try:
                containers = list(walk(view))
            except OSError as error:
                raise CommandError(f"cannot list {view.source}: {error.strerror}") from error
            for container in containers:
                report = check_container(view, container, repair=repair, lock_timeout=lock_timeout)
                emit("".join(report.lines))
                unresolved += report.unresolved
        emit("", flush=True)
        return EXIT_OK if unresolved == 0 else EXIT_FAILED
    finally:
        for view in views:
            view.close()
