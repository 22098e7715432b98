"""A call's outcome as a value, for property tests whose generated input may be refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def outcome(call: Callable[[], T], refusal: type[E]) -> T | E:
    """What `call()` returns, or the `refusal` it raises (anything else propagates)."""
    try:
        return call()
    except refusal as error:
        return error
