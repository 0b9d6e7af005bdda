"""Lifecycle diagrams and transition tables, generated from the machines' ``TRANSITIONS``.

``protocol.channel.TRANSITIONS`` and ``protocol.arbiter.TRANSITIONS`` are the legal transitions
(h11's ``EVENT_TRIGGERED_TRANSITIONS``); this script renders each as a Mermaid
``stateDiagram-v2`` plus a table, between the ``channel-lifecycle`` / ``channel-transitions``
markers of ``specs/0003-channel.md`` and the ``arbiter-lifecycle`` / ``arbiter-transitions``
markers of ``specs/0004-arbiter-and-settlement.md``.

    python -m specs.tools.make_diagrams          # rewrite the blocks
    python -m specs.tools.make_diagrams --check  # exit 1 when a spec is stale
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable, Mapping

from protocol import arbiter, channel
from specs.tools.blocks import SPECS, update

CHANNEL_SPEC = SPECS / "0003-channel.md"
ARBITER_SPEC = SPECS / "0004-arbiter-and-settlement.md"

# Entry points that create a state without a prior phase (functions, not table entries).
CHANNEL_ENTRIES = ((channel.Phase.PROPOSED, "propose()"), (channel.Phase.ACCEPTED, "accept()"))
ARBITER_ENTRIES = ((arbiter.ArbiterPhase.FUNDING, "register()"),)


def _edges(
    table: Mapping[tuple[enum.Enum, type], frozenset[enum.Enum]], order: list[enum.Enum]
) -> dict[tuple[enum.Enum, enum.Enum], list[str]]:
    edges: dict[tuple[enum.Enum, enum.Enum], list[str]] = {}
    for (source, event), targets in table.items():
        for target in sorted(targets, key=order.index):
            edges.setdefault((source, target), []).append(event.__name__)
    return edges


def mermaid(
    table: Mapping[tuple[enum.Enum, type], frozenset[enum.Enum]],
    phases: Iterable[enum.Enum],
    entries: Iterable[tuple[enum.Enum, str]],
    final: enum.Enum,
) -> str:
    order = list(phases)
    lines = ["```mermaid", "stateDiagram-v2"]
    lines += [f"    [*] --> {phase.name} : {label}" for phase, label in entries]
    for (source, target), events in _edges(table, order).items():
        lines.append(f"    {source.name} --> {target.name} : {', '.join(events)}")
    lines += [f"    {final.name} --> [*]", "```"]
    return "\n".join(lines) + "\n"


def transition_table(
    table: Mapping[tuple[enum.Enum, type], frozenset[enum.Enum]], phases: Iterable[enum.Enum]
) -> str:
    order = list(phases)
    lines = ["| phase | input | may move to |", "| --- | --- | --- |"]
    for (source, event), targets in sorted(table.items(), key=lambda item: order.index(item[0][0])):
        moves = ", ".join(f"`{t.value}`" for t in sorted(targets, key=order.index))
        lines.append(f"| `{source.value}` | `{event.__name__}` | {moves} |")
    return "\n".join(lines) + "\n"


def channel_blocks() -> dict[str, str]:
    phases = list(channel.Phase)
    return {
        "channel-lifecycle": mermaid(
            channel.TRANSITIONS, phases, CHANNEL_ENTRIES, channel.Phase.SETTLED
        ),
        "channel-transitions": transition_table(channel.TRANSITIONS, phases),
    }


def arbiter_blocks() -> dict[str, str]:
    phases = list(arbiter.ArbiterPhase)
    return {
        "arbiter-lifecycle": mermaid(
            arbiter.TRANSITIONS, phases, ARBITER_ENTRIES, arbiter.ArbiterPhase.SETTLED
        ),
        "arbiter-transitions": transition_table(arbiter.TRANSITIONS, phases),
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    current = update(CHANNEL_SPEC, channel_blocks(), check=check)
    current = update(ARBITER_SPEC, arbiter_blocks(), check=check) and current
    if check and not current:
        print("stale: run python -m specs.tools.make_diagrams", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
