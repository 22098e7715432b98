"""The plain command lines of `get`, `set`, `show`, `delete` and `oci-hook`, read without argparse.

Importing argparse and building lifecyclefs's parser costs a few milliseconds, as much
as the rest of `lifecyclefs get`, and hooks and scripts run these commands very often.
`parse` reads only the plainest forms: options spelled out in full, before the
positional arguments, none repeated, no value that starts with `-`. Anything else
(help, an abbreviation, `--`, a mistake) gives None, and the command line goes to
argparse, which reads it the same way or says what is wrong
(tests/test_cli_args.py checks that both agree, on generated command lines).
"""

from __future__ import annotations

from store.locking import timeout_from_seconds
from store.values import FIELDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Final, TypeAlias

    Options: TypeAlias = dict[str, "str | bool"]
    Values: TypeAlias = dict[str, object]
    Reader: TypeAlias = Callable[[Options, list[str]], "Values | None"]

HOOK_LOCK_TIMEOUT: Final = 10.0
"""How long `oci-hook` waits for the lock unless told otherwise (seconds)."""


def timeout_value(text: str) -> float | None:
    """`--lock-timeout SECONDS`: finite seconds, or None for 0 (for ever); else ValueError."""
    return timeout_from_seconds(float(text))


def parse(argv: Sequence[str]) -> Values | None:
    """What argparse would make of `argv` (its Namespace as a dict, without `run`).

    None when `argv` is not one of the plain forms read here.
    """
    if not argv or argv[0] not in _COMMANDS:
        return None
    flags, valued, read = _COMMANDS[argv[0]]
    split = _split(argv[1:], flags, valued)
    if split is None:
        return None
    options, positionals = split
    try:
        values = read(options, positionals)
    except ValueError:  # a lock timeout that argparse will refuse, saying why
        return None
    if values is not None:
        values["command"] = argv[0]
    return values


def _split(
    tokens: Sequence[str], flags: tuple[str, ...], valued: tuple[str, ...]
) -> tuple[Options, list[str]] | None:
    options: Options = {}
    index = 0
    while index < len(tokens) and tokens[index].startswith("-"):
        name, equals, value = tokens[index].partition("=")
        if name in valued and name not in options:
            if not equals:
                index += 1
                if index == len(tokens):
                    return None
                value = tokens[index]
            if value.startswith("-"):
                return None
            options[name] = value
        elif tokens[index] in flags and tokens[index] not in options:
            options[tokens[index]] = True
        else:
            return None
        index += 1
    positionals = list(tokens[index:])
    if any(token.startswith("-") for token in positionals):
        return None
    return options, positionals


def _lock_timeout(options: Options, default: float | None) -> float | None:
    value = options.get("--lock-timeout")
    return default if value is None else timeout_value(str(value))


def _get(options: Options, positionals: list[str]) -> Values | None:
    if not 1 <= len(positionals) <= 2 or (len(positionals) == 2 and positionals[1] not in FIELDS):
        return None
    field = positionals[1] if len(positionals) == 2 else None
    return {"state_dir": positionals[0], "field": field}


def _set(options: Options, positionals: list[str]) -> Values | None:
    if len(positionals) < 2:
        return None
    return {
        "lock_timeout": _lock_timeout(options, None),
        "state_dir": positionals[0],
        "assignments": positionals[1:],
    }


def _show(options: Options, positionals: list[str]) -> Values | None:
    if len(positionals) != 1 or len(options) > 1:
        return None
    return {
        "state_dir": positionals[0],
        "json": "--json" in options,
        "docker": "--docker" in options,
    }


def _delete(options: Options, positionals: list[str]) -> Values | None:
    if len(positionals) != 1:
        return None
    return {"lock_timeout": _lock_timeout(options, None), "state_dir": positionals[0]}


def _oci_hook(options: Options, positionals: list[str]) -> Values | None:
    if len(positionals) != 1:
        return None
    state_dir = options.get("--state-dir")
    return {
        "strict": "--strict" in options,
        "state_dir": None if state_dir is None else str(state_dir),
        "lock_timeout": _lock_timeout(options, HOOK_LOCK_TIMEOUT),
        "stage": positionals[0],
    }


_COMMANDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], Reader]]] = {
    "get": ((), (), _get),
    "set": ((), ("--lock-timeout",), _set),
    "show": (("--json", "--docker"), (), _show),
    "delete": ((), ("--lock-timeout",), _delete),
    "oci-hook": (("--strict",), ("--state-dir", "--lock-timeout"), _oci_hook),
}
