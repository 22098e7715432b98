"""Inode numbers for view paths: stable while mounted, forgotten when the kernel forgets.

A number is derived from the path itself (a 63-bit hash), so the same path gets the
same number again after the kernel has forgotten it, and memory holds only the inodes
the kernel still knows about (their lookup count is above zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from typing import Final

import pyfuse3

from fusefs.view import Parts

ROOT: Final = pyfuse3.ROOT_INODE
_MASK: Final = (1 << 63) - 1


@dataclass(slots=True)
class Node:
    """A path the kernel holds a reference to, and how many lookups it has counted."""

    ino: int
    parts: Parts
    lookups: int = 0
    plain: pyfuse3.EntryAttributes | None = None
    """Its READDIRPLUS entry without attributes, made once (see attributes.plain_entry)."""


class InodeTable:
    """The inodes the kernel knows, by number and by path."""

    def __init__(self) -> None:
        self._by_ino: dict[int, Node] = {ROOT: Node(ROOT, (), lookups=1)}
        self._by_parts: dict[Parts, Node] = {(): self._by_ino[ROOT]}

    def __len__(self) -> int:
        return len(self._by_ino)

    def __getitem__(self, ino: int) -> Node:
        """The node of `ino`; KeyError if the kernel cannot know it."""
        return self._by_ino[ino]

    def remember(self, parts: Parts) -> Node:
        """Count one kernel lookup of `parts` and return its node (created if new)."""
        node = self._by_parts.get(parts)
        if node is None:
            node = Node(self._free_number(parts), parts)
            self._by_ino[node.ino] = node
            self._by_parts[parts] = node
        node.lookups += 1
        return node

    def find_ino(self, ino: int) -> Node | None:
        """The node of `ino`, if the kernel holds it."""
        return self._by_ino.get(ino)

    def nodes(self) -> list[Node]:
        """Every node the kernel holds."""
        return list(self._by_ino.values())

    def detach(self, node: Node) -> None:
        """`node` no longer names its path (an unlinked file the kernel still holds open)."""
        if self._by_parts.get(node.parts) is node:
            del self._by_parts[node.parts]

    def find(self, parts: Parts) -> Node | None:
        """The node of `parts` if the kernel knows it, without counting a lookup."""
        return self._by_parts.get(parts)

    def forget(self, ino: int, count: int) -> Node | None:
        """Drop `count` lookups of `ino`; at zero the node is gone (the root stays).

        Returns the node when it is gone, so that what hangs on it can go too.
        """
        node = self._by_ino.get(ino)
        if node is None or ino == ROOT:
            return None
        node.lookups -= count
        if node.lookups > 0:
            return None
        del self._by_ino[ino]
        if self._by_parts.get(node.parts) is node:
            del self._by_parts[node.parts]
        return node

    def move(self, node: Node, parts: Parts) -> None:
        """`node` now names `parts` (a temporary file renamed to another free name)."""
        if self._by_parts.get(node.parts) is node:
            del self._by_parts[node.parts]
        node.parts = parts
        self._by_parts[parts] = node

    def make_alias(self, node: Node, parts: Parts) -> None:
        """`node` now stands for `parts`, whose own node (if any) stays the one looked up.

        After a temporary file is renamed over a value file, the kernel holds the
        temporary file's inode under the value file's name until it looks it up again.
        """
        if self._by_parts.get(node.parts) is node:
            del self._by_parts[node.parts]
        node.parts = parts

    def _free_number(self, parts: Parts) -> int:
        digest = blake2b(b"/".join(parts), digest_size=8).digest()
        ino = int.from_bytes(digest, "little") & _MASK
        while ino <= ROOT or ino in self._by_ino:  # a collision: probe the next number
            ino = (ino + 1) & _MASK
        return ino
