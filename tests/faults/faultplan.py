"""The one source of randomness of a simulated run, and the record of the faults it injected.

Every fault the simulator may inject (a dropped, delayed or duplicated message, a partition, a
crash, a late, rejected or returned booking) is one *decision point*: `FaultPlan.fault` draws
from the plan's seeded generator whether it happens. Decision points are numbered in the order
the run reaches them, and the plan records the numbers of those that fired. A plan built with a
`mask` fires only the decision points in it: that is how a failing run is shrunk (delta
debugging keeps the smallest set of faults that still fails, `tests/faults/shrink.py`). The
draws are made whether or not a fault fires, so a masked run sees the same numbers a full run
does up to the first point where their histories part.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class FaultPlan:
    seed: int
    mask: frozenset[int] | None = None
    """Only these decision points may fire (None: every one whose draw says so)."""
    enabled: bool = True
    """False once the network heals: no decision point fires any more."""
    rng: random.Random = field(init=False)
    fired: list[tuple[int, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    points: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def fault(self, kind: str, probability: float) -> bool:
        """Whether the fault `kind` happens at this decision point."""
        index = self.points
        self.points += 1
        hit = self.rng.random() < probability
        if not (hit and self.enabled and (self.mask is None or index in self.mask)):
            return False
        self.fired.append((index, kind))
        self.counts[kind] += 1
        return True

    def uniform(self, low: int, high: int) -> int:
        """A parameter of a fault or of the weather (a delay, a downtime), from the same seed."""
        return self.rng.randint(low, high)
