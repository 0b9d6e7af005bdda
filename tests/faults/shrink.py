"""Shrinking a failed simulation to a short trace: delta debugging over its fault schedule.

A failed episode is replayed from its seed with only a subset of the faults it injected
(`FaultPlan.mask`); `ddmin` (Zeller and Hildebrandt, "Simplifying and isolating failure-inducing
input", 2002) keeps removing chunks of the schedule while the episode still fails the same way,
within a budget of replays. What is left is usually a handful of faults, and the trace of that
replay is what a person reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.faults.simulator import Outcome, World

MAX_REPLAYS = 150


def ddmin(items: Sequence[int], fails: Callable[[frozenset[int]], bool],
          budget: int = MAX_REPLAYS) -> frozenset[int]:
    """A 1-minimal (or budget-bounded) subset of `items` for which `fails` still holds."""
    current = list(items)
    n = 2
    replays = 0
    while len(current) >= 2 and replays < budget:
        size = -(-len(current) // n)
        chunks = [current[i:i + size] for i in range(0, len(current), size)]
        for chunk in chunks:
            rest = [x for x in current if x not in chunk]
            replays += 1
            if fails(frozenset(rest)):
                current, n = rest, max(n - 1, 2)
                break
            if replays >= budget:
                break
        else:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    if len(current) == 1 and fails(frozenset()):
        return frozenset()
    return frozenset(current)


@dataclass
class Shrunk:
    outcome: Outcome
    faults: list[tuple[int, str]]
    of: int

    def report(self) -> str:
        kinds = ", ".join(f"#{i} {kind}" for i, kind in self.faults) or "none"
        lines = [
            f"simulation failure: {self.outcome.failure}",
            f"replay: World({self.outcome.seed}).run()  "
            f"(METERLINE_SIM_EPISODE={self.outcome.seed} pytest tests/faults -k replay)",
            f"shrunk to {len(self.faults)} of {self.of} faults: {kinds}",
            "trace of the shrunk replay (last lines):",
            *self.outcome.trace,
        ]
        return "\n".join(lines)


def shrink(seed: int, failure: str, *, world: type[World] = World, trace: int = 80) -> Shrunk:
    """Replay episode `seed` with fewer faults while it still fails with `failure`'s kind."""
    full = world(seed).run()
    same = _kind(failure)

    def fails(mask: frozenset[int]) -> bool:
        outcome = world(seed, mask=mask).run()
        return outcome.failure is not None and _kind(outcome.failure) == same

    kept = ddmin([i for i, _ in full.fired], fails) if full.failure else frozenset()
    final = world(seed, mask=kept, keep_trace=trace).run()
    if final.failure is None or _kind(final.failure) != same:  # pragma: no cover - shrink lost it
        final = world(seed, keep_trace=trace).run()
        return Shrunk(final, final.fired, len(full.fired))
    return Shrunk(final, final.fired, len(full.fired))


def _kind(failure: str) -> str:
    """Failures of one kind share their words before the first number."""
    head = []
    for word in failure.split():
        if any(c.isdigit() for c in word):
            break
        head.append(word)
    return " ".join(head)
