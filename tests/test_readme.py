"""README.md keeps its contract: the two commands first, and a CLI reference that is current."""

from __future__ import annotations

from pathlib import Path

from node.cli.reference import README, current, render


def test_cli_reference_matches_help() -> None:
    assert current(README.read_text()) == render(), (
        "README.md's CLI reference is stale: run python -m node.cli.reference --write")


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("```", 2)[1]
    assert "meterline demo" in head
    assert "pytest" in head
    assert Path(".ci/run").read_text().count("python -m pytest -q") >= 1
