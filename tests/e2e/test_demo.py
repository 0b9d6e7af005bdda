"""The README's main-job command: `meterline demo` runs to a clean exit with the settlement."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path


def test_demo_settles_a_day_of_freight(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "node.cli", "demo", "--json",
                           "--dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "channel settled" in proc.stderr
    summary = json.loads(proc.stdout)

    assert summary["updates"] > 10_000  # tens of thousands of signed updates
    paid_cents = int(Decimal(summary["paid"]["amount"]) * 100)
    moved = summary["bank_balance_changes_minor"]
    assert moved == {"manufacturer": -paid_cents, "carrier": paid_cents, "escrow": 0}

    escrow = [t for t in summary["bank_transactions"] if t["account"] == "escrow"]
    assert len(escrow) == 3  # one deposit in, two payouts out
    references = {t["reference"] for t in summary["bank_transactions"]}
    assert len(references) == 3
    assert all(r.startswith("ML") and len(r) == 18 for r in references)

    statement = summary["statement"]
    assert statement["phase"] == "settled"
    item_total = sum(Decimal(i["amount"]["precise"]) for i in statement["items"])
    assert item_total == Decimal(statement["received"]["precise"])
    assert {i["reference"] for i in statement["items"]} == {
        "SHIP-4711", "SHIP-4712", "SHIP-4713", "SHIP-4714", "SHIP-4715"}
    assert Decimal(summary["fees_if_paid_per_update"]["card"]) > Decimal(
        summary["fees_if_paid_per_update"]["meterline"])
    # without --keep nothing is left behind to come back to
    assert summary["data_dir"] is None
