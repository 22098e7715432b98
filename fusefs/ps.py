"""`lifecyclefs ps`: one line per container, like `nerdctl ps`, with Docker's "Up 5 minutes".

The table's columns are NAMESPACE (the directories above the container, joined by
`/`; there is no such column at `--depth 1`), CONTAINER ID (12 characters unless
`--no-trunc`), STARTED (local time, to the second), STATUS (`Up <duration>` as Docker
prints it, or `Created` when never started) and CREATE ERROR. `--json` prints one
object per line with the exact values instead. A record that cannot be read is shown
on its line (status `Corrupt record` or `Unreadable record`), explained by one line on
stderr, and makes the exit status 1.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from fusefs.containers import (
    is_io_error,
    open_view,
    printable,
    read_snapshot,
    relative_path,
    started_at_value,
    walk,
)
from fusefs.output import emit
from fusefs.view import Parts, View
from store import Lifecycle, LifecycleStoreError, Timestamp
from store.values import FIELDS

ID_WIDTH: Final = 12
"""How many characters of an id the table shows, as Docker's TruncateID."""
_PADDING: Final = 3
_NS: Final = 1_000_000_000
_MINUTE_NS: Final = 60 * _NS
_HOUR_NS: Final = 60 * _MINUTE_NS
# Go's time.Duration is an int64 of nanoseconds; time.Sub saturates at its bounds.
_MAX_DURATION_NS: Final = (1 << 63) - 1
_MIN_DURATION_NS: Final = -(1 << 63)


def _go_quotient(numerator: int, denominator: int) -> tuple[int, int]:
    """Go's integer `/` and `%`: the quotient is truncated towards zero."""
    quotient = abs(numerator) // denominator
    quotient = quotient if numerator >= 0 else -quotient
    return quotient, numerator - quotient * denominator


def _go_float_units(nanoseconds: int, unit: int) -> float:
    """Go's `Duration.Seconds()`, `.Minutes()`, `.Hours()`: whole units plus the fraction."""
    whole, rest = _go_quotient(nanoseconds, unit)
    return float(whole) + float(rest) / float(unit)


def _go_round(value: float) -> float:
    """Go's `math.Round`: half away from zero."""
    truncated = float(math.trunc(value))
    if abs(value - truncated) >= 0.5:
        truncated += math.copysign(1.0, value)
    return truncated


def human_duration(nanoseconds: int) -> str:
    """A duration as Docker prints it (go-units `HumanDuration`), thresholds and all.

    "Less than a second", "1 second", "N seconds", "About a minute", "N minutes",
    "About an hour" (hours are rounded), "N hours" (below 48), "N days" (below two
    weeks), "N weeks" (below 60 days), "N months" (of 30 days, below two years of 365
    days), "N years".
    """
    nanoseconds = max(_MIN_DURATION_NS, min(_MAX_DURATION_NS, nanoseconds))
    seconds = int(_go_float_units(nanoseconds, _NS))
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(_go_float_units(nanoseconds, _MINUTE_NS))
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(_go_round(_go_float_units(nanoseconds, _HOUR_NS)))
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(_go_float_units(nanoseconds, _HOUR_NS)) // 24 // 365} years"


def status(record: Lifecycle, now: Timestamp) -> str:
    """`Up <duration>` when the record says the container started, else `Created`."""
    if record.started_at.is_unset:
        return "Created"
    return "Up " + human_duration(now.unix_ns - record.started_at.unix_ns)


def local_started_at(record: Lifecycle) -> str:
    """When the container started, in local time to the second; empty when never.

    Rendered by the value files' codec, so it reads like `started_at` does.
    """
    started = record.started_at
    if started.is_unset:
        return ""
    seconds = started.unix_ns // _NS
    try:
        local = Timestamp(seconds * _NS, time.localtime(seconds).tm_gmtoff)
        return FIELDS["started_at"].render(Lifecycle(local)).rstrip("\n")
    except (OverflowError, OSError, ValueError):  # beyond what local time can show
        return started_at_value(record) or ""


@dataclass(frozen=True, slots=True)
class Row:
    """One container as `ps` shows it; `error` says why its record could not be read."""

    container: Parts
    record: Lifecycle | None
    error: LifecycleStoreError | None = None

    @property
    def namespace(self) -> str | None:
        """The levels above the container (nerdctl's namespace at depth 2), or None."""
        return relative_path(self.container[:-1]) or None

    @property
    def container_id(self) -> str:
        """The container directory's name."""
        return relative_path(self.container[-1:])

    def status(self, now: Timestamp) -> str:
        """The STATUS column."""
        if self.error is not None:
            return "Unreadable record" if is_io_error(self.error) else "Corrupt record"
        return status(self.record or Lifecycle(), now)


def read_rows(view: View) -> list[Row]:
    """Every container below the view's SOURCE, in path order, its record read unlocked."""
    rows = []
    for container in walk(view):
        try:
            rows.append(Row(container, read_snapshot(view, container)))
        except LifecycleStoreError as error:
            rows.append(Row(container, None, error))
    return rows


def json_line(row: Row, now: Timestamp) -> str:
    """One `--json` object: exact values (`started_at` as stored, null when unset)."""
    record = row.record or Lifecycle()
    unknown = row.error is not None
    fields: dict[str, object] = {
        "namespace": row.namespace,
        "id": row.container_id,
        "started_at": None if unknown else started_at_value(record),
        "create_error": None if unknown else record.create_error,
        "status": row.status(now),
    }
    if row.error is not None:
        fields["error"] = str(row.error)
    return json.dumps(fields) + "\n"


def table(rows: Sequence[Row], now: Timestamp, *, depth: int, truncate: bool) -> str:
    """The rows as Docker prints a table: a header, columns three spaces apart."""
    header = ["CONTAINER ID", "STARTED", "STATUS", "CREATE ERROR"]
    lines = []
    for row in rows:
        record = row.record or Lifecycle()
        container_id = row.container_id
        cells = [
            container_id[:ID_WIDTH] if truncate else container_id,
            "" if row.error else local_started_at(record),
            row.status(now),
            "" if row.error else FIELDS["create_error"].render(record).rstrip("\n"),
        ]
        if depth > 1:
            cells.insert(0, row.namespace or "")
        lines.append([printable(cell) for cell in cells])
    if depth > 1:
        header.insert(0, "NAMESPACE")
    widths = [max(len(line[column]) for line in [header, *lines]) for column in range(len(header))]
    return "".join(
        "".join(
            cell.ljust(width + _PADDING) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        + "\n"
        for line in [header, *lines]
    )


def main(source: str, depth: int, *, as_json: bool, truncate: bool) -> int:
    """`lifecyclefs ps`: print the containers; 1 if any record could not be read."""
    from fusefs.cli import EXIT_FAILED, EXIT_OK, PROG, CommandError  # noqa: PLC0415

    view = open_view(source, depth)
    try:
        rows = read_rows(view)
    except OSError as error:
        raise CommandError(f"cannot list {view.source}: {error.strerror}") from error
    finally:
        view.close()
    now = Timestamp.now()
    if as_json:
        emit("".join(json_line(row, now) for row in rows), flush=True)
    else:
        emit(table(rows, now, depth=depth, truncate=truncate), flush=True)
    for row in rows:
        if row.error is not None:
            print(f"{PROG}: {printable(str(row.error))}", file=sys.stderr)
    return EXIT_FAILED if any(row.error for row in rows) else EXIT_OK
