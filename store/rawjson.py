"""`RawJSON`: a JSON value kept as its text, because Python cannot hold it as written."""

from __future__ import annotations


class RawJSON:
    """A JSON value kept as its compact text, written back exactly so.

    The codec uses it for a key nerdctl does not know whose value Python cannot hold as
    written: a number beyond float range or that underflows to zero, an integer of more
    than 640 characters, and a value nested deeper than the codec keeps as lists and
    dicts. Equal when the texts are equal.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RawJSON):
            return NotImplemented
        return self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 60 else self.text[:50] + "..."
        return f"RawJSON({shown!r})"
