"""What every benchmark here shares: variants timed side by side, round by round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figures:
    """µs per operation of each variant, one sample per round."""

    samples: dict[str, list[float]]

    def __getitem__(self, name: str) -> float:
        """The median µs/op of variant `name`."""
        return statistics.median(self.samples[name])

    def ratio(self, name: str, floor: str) -> float:
        """The median over rounds of `name`'s time divided by `floor`'s in the same round.

        Both were measured seconds apart, so a noisy neighbour that slows one round
        slows both sides of its ratio alike.
        """
        pairs = zip(self.samples[name], self.samples[floor], strict=True)
        return statistics.median(ours / base for ours, base in pairs)


def side_by_side(variants: dict[str, Callable[[], object]], count: int, rounds: int) -> Figures:
    """Time `count` calls of each variant per round, the variants interleaved.

    A tenth of `count` calls of each warms caches first.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for op in variants.values():
        for _ in range(max(1, count // 10)):
            op()
    for _ in range(rounds):
        for name, op in variants.items():
            start = time.perf_counter()
            for _ in range(count):
                op()
            samples[name].append((time.perf_counter() - start) / count * 1e6)
    return Figures(samples)
