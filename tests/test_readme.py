"""README.md keeps its contract: the two commands first, and a CLI reference that is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from node.cli.reference import README


def test_cli_reference_matches_help() -> None:
    # A fresh process: click caches each command's help option, and other tests in this
    # process invoke command groups on their own (without `meterline`'s -h setting).
    proc = subprocess.run([sys.executable, "-m", "node.cli.reference"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("```", 2)[1]
    assert "meterline demo" in head
    assert "python -m pytest -q" in head
    assert "python -m pytest -q" in Path(".ci/run").read_text()
