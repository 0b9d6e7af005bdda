"""The generated parts of specs/ are current, and the hand-written tables agree with the code.

- The lifecycle diagrams and transition tables of 0003 and 0004 are regenerated in memory from
  ``protocol.channel.TRANSITIONS`` and ``protocol.arbiter.TRANSITIONS`` and compared with the
  committed markdown; every table entry is an edge of the diagram.
- The message layouts and signature domains of 0002 are regenerated from ``FIELDS`` and compared;
  the layouts are also read back and compared field by field.
- The error table of 0002 §6 and the tag table of 0002 §3 match ``ErrorCode`` and the message
  registry exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import arbiter, channel
from protocol.errors import ErrorCode
from protocol.records import Message, message_types
from specs.tools import blocks, make_diagrams, make_tables

SPECS = Path(__file__).resolve().parents[2] / "specs"


def spec(name: str) -> str:
    return (SPECS / name).read_text(encoding="utf-8")


GENERATED = [
    ("0003-channel.md", make_diagrams.channel_blocks),
    ("0004-arbiter-and-settlement.md", make_diagrams.arbiter_blocks),
    ("0002-wire.md", make_tables.wire_blocks),
]


@pytest.mark.parametrize(("document", "make"), GENERATED, ids=[g[0] for g in GENERATED])
def test_generated_blocks_are_current(document: str, make: object) -> None:
    text = spec(document)
    for name, content in make().items():  # type: ignore[operator]
        assert blocks.extract(text, name) == content, (
            f"{document}: block {name!r} is stale; run python -m specs.tools.make_diagrams "
            "and python -m specs.tools.make_tables"
        )


def _mermaid_edges(block: str) -> set[tuple[str, str, str]]:
    edges = set()
    for line in block.splitlines():
        match = re.fullmatch(r"\s+(\w+) --> (\w+) : (.+)", line)
        if match and match.group(1) != "[*]":
            for label in match.group(3).split(", "):
                edges.add((match.group(1), match.group(2), label))
    return edges


@pytest.mark.parametrize(
    ("document", "block", "table"),
    [
        ("0003-channel.md", "channel-lifecycle", channel.TRANSITIONS),
        ("0004-arbiter-and-settlement.md", "arbiter-lifecycle", arbiter.TRANSITIONS),
    ],
    ids=["channel", "arbiter"],
)
def test_diagram_is_the_transition_table(document: str, block: str, table: dict) -> None:  # type: ignore[type-arg]
    diagram = blocks.extract(spec(document), block)
    assert diagram.startswith("```mermaid\nstateDiagram-v2\n")
    expected = {
        (source.name, target.name, event.__name__)
        for (source, event), targets in table.items()
        for target in targets
    }
    assert _mermaid_edges(diagram) == expected


def test_every_phase_appears_in_its_diagram() -> None:
    lifecycle = blocks.extract(spec("0003-channel.md"), "channel-lifecycle")
    for phase in channel.Phase:
        assert re.search(rf"\b{phase.name}\b", lifecycle), phase
    escrow = blocks.extract(spec("0004-arbiter-and-settlement.md"), "arbiter-lifecycle")
    for phase in arbiter.ArbiterPhase:
        assert re.search(rf"\b{phase.name}\b", escrow), phase


def test_layouts_read_back_to_the_code() -> None:
    layouts = make_tables.parse_layouts(spec("0002-wire.md"))
    expected = {cls.__name__: cls for cls in (*make_tables.RECORDS, *message_types().values())}
    assert set(layouts) == set(expected)
    for name, cls in expected.items():
        layout = layouts[name]
        assert layout.tag == (cls.TAG if issubclass(cls, Message) else None)
        assert layout.fields == tuple((field, kind.describe()) for field, kind in cls.FIELDS)


def test_tag_table_matches_the_registry() -> None:
    section = spec("0002-wire.md").split("## 3. Message framing", 1)[1].split("## 4.", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, flags=re.MULTILINE)
    assert {int(tag): name for tag, name in rows} == {
        tag: cls.__name__ for tag, cls in message_types().items()
    }


def test_error_table_matches_the_enum() -> None:
    section = spec("0002-wire.md").split("### 6.1 The error table", 1)[1].split("### 6.2", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \| (.+) \|$", section, flags=re.MULTILINE)
    table = [(int(code), name) for code, name, _ in rows]
    assert len(table) == len(set(table)), "a code appears twice"
    assert sorted(table) == sorted((int(code), code.name) for code in ErrorCode), (
        "specs/0002-wire.md §6.1 and protocol.errors.ErrorCode disagree"
    )
    assert all(meaning.strip() for _, _, meaning in rows)


def test_every_spec_has_front_matter_and_bcp14() -> None:
    for name in (
        "0001-overview.md",
        "0002-wire.md",
        "0003-channel.md",
        "0004-arbiter-and-settlement.md",
    ):
        text = spec(name)
        front = text.split("---\n")[1]
        assert "title: " in front
        assert "type: working-draft" in front
        assert "draft: 1" in front
        assert "BCP 14 [RFC2119] [RFC8174]" in text
