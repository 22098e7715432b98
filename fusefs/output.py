"""A command's stdout, whose reader may go away early (`lifecyclefs ps | head -1`).

Python raises BrokenPipeError on the next write, or complains at exit when the last
buffered lines cannot be flushed. A reader that leaves is not an error of ours: once
it is gone, stdout points at /dev/null, and the command goes on or ends quietly.
"""

from __future__ import annotations

import os
import sys


def emit(text: str, *, flush: bool = False) -> bool:
    """Write `text` to stdout (and flush it if asked); False once the reader is gone."""
    try:
        sys.stdout.write(text)
        if flush:
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return False
    return True


def _silence_stdout() -> None:
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.dup2(null, sys.stdout.fileno())
    finally:
        os.close(null)
