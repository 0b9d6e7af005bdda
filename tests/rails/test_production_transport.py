"""Only the test transport speaks mock-bank's control plane: no other file in rails/ names
``/_mock``, so a node configured for a real bank cannot reach a test endpoint by accident."""

from __future__ import annotations

from pathlib import Path

RAILS = Path(__file__).resolve().parents[2] / "rails"


def test_no_file_in_rails_outside_the_test_transport_names_mock_endpoints() -> None:
    naming = sorted(str(p.relative_to(RAILS)) for p in RAILS.rglob("*.py")
                    if "/_mock" in p.read_text(encoding="utf-8"))
    assert naming == ["testing/mockbank.py"]
