"""specs/reliability.md is written from the figures files alone (tests/faults/report.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.report import main


def write(directory: Path, name: str, data: dict[str, object]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(data))


def test_the_page_shows_the_run_and_says_what_did_not_run(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "reliability.md"
    write(results, "crash", {
        "seed": 99, "cycles": 3, "channels": 2, "seconds": 12.5,
        "by_victim": {"payer": 2, "bank": 1}, "by_moment": {"stream": 2, "payout": 1},
        "by_victim_and_moment": {"payer/stream": 2, "bank/payout": 1},
        "checks": {"receipt checks": 7}, "lost_updates": 0, "double_payouts": 0,
        "server_errors": 0})
    write(results, "crash_logs", {"files": 4, "lines": 1234, "secrets": 114, "leaks": 0})
    assert main(["--results", str(results), "--out", str(out)]) == 0
    page = out.read_text()
    assert "| payer | – | 2 | – | – | – | – | 2 |" in page
    assert "| bank | – | – | – | – | 1 | – | 1 |" in page
    assert "Seed 99, 3 cycles over 2 channels in 12.5 s" in page
    assert "receipt checks 7" in page
    assert "| 0 | 0 | 0 | 0 |" in page
    assert "| the crash run | 4 | 1,234 | 114 | 0 |" in page
    assert "Wire decoder under atheris: *not in the last run*" in page
    assert "## Deterministic simulation\n\n*Not in the last run*" in page


def test_a_loss_is_shown_and_fails_the_command(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "reliability.md"
    write(results, "crash", {
        "seed": 1, "cycles": 1, "channels": 1, "seconds": 1.0, "by_victim": {"payee": 1},
        "by_moment": {"stream": 1}, "by_victim_and_moment": {"payee/stream": 1},
        "checks": {}, "lost_updates": 3, "double_payouts": 0, "server_errors": 0})
    assert main(["--results", str(results), "--out", str(out)]) == 1
    assert "| 3 | 0 | 0 | not run |" in out.read_text()
    assert main(["--results", str(tmp_path / "none"), "--out", str(out)]) == 1
