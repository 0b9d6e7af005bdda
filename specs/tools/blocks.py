"""Generated blocks inside hand-written markdown.

A block is everything between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->`` (each on its own line). Only the text between the markers is
replaced; the prose around it is the author's.
"""

from __future__ import annotations

from pathlib import Path

SPECS = Path(__file__).resolve().parent.parent


def markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"


def _span(text: str, name: str) -> tuple[int, int]:
    begin, end = markers(name)
    start = text.find(begin + "\n")
    stop = text.find("\n" + end)
    if start < 0 or stop < 0 or stop < start:
        raise ValueError(f"no generated block {name!r}")
    return start + len(begin) + 1, stop + 1


def extract(text: str, name: str) -> str:
    """The current content of block `name` (without the marker lines)."""
    start, stop = _span(text, name)
    return text[start:stop]


def replace(text: str, name: str, content: str) -> str:
    """`text` with block `name` holding `content` (which must end with a newline)."""
    if not content.endswith("\n"):
        content += "\n"
    start, stop = _span(text, name)
    return text[:start] + content + text[stop:]


def update(path: Path, blocks: dict[str, str], *, check: bool) -> bool:
    """Rewrite `blocks` in `path`; with `check`, only report whether it is current."""
    text = path.read_text(encoding="utf-8")
    new = text
    for name, content in blocks.items():
        new = replace(new, name, content)
    if new == text:
        return True
    if not check:
        path.write_text(new, encoding="utf-8")
    return False
