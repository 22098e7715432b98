"""Messages for people: whatever text goes into them, each stays one line."""

from __future__ import annotations


def one_line(message: str) -> str:
    """`message` on one line: newlines and other unprintable characters escaped as in repr."""
    if message.isprintable():
        return message
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
