"""The statement CSV's cells (ADR 0152): formula text is neutralised, numbers stay numbers."""

from __future__ import annotations

import csv
import io

import pytest

from node.cli.statement import CSV_FIELDS, as_csv, cell


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1+2", "'-1+2"),
        ("-", "'-"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("-0.15", "-0.15"),  # a signed decimal the node wrote: a number
        ("-183", "-183"),
        ("12.50", "12.50"),
        ("SHIPMENT-4711", "SHIPMENT-4711"),
        ("Lieferschein-Nr. Ä-17", "Lieferschein-Nr. Ä-17"),
        (None, ""),
        (7, "7"),
    ],
)
def test_cells(value: object, written: str) -> None:
    assert cell(value) == written


def _statement(exponent: int, scale: int) -> dict[str, object]:
    money = {"currency": "EUR"}
    return {
        "channel": "ab" * 32, "counterparty": {"id": "cd" * 32, "name": "=evil"},
        "period": {"from": "2026-12-02T04:00:00+00:00", "to": "2026-12-02T05:00:00+00:00"},
        "currency": "EUR", "exponent": exponent, "scale": scale, "phase": "open",
        "items": [
            {"direction": "sent", "unit": "km", "reference": "+A", "quantity": "1",
             "unit_price": "0.3333", "updates": 1, "graduated": False,
             "amount": {**money, "amount": "0.33", "precise": "0.3333"}, "allocated": "-0.33"},
            {"direction": "received", "unit": "km", "reference": "B", "quantity": "2",
             "unit_price": "0.3333", "updates": 1, "graduated": False,
             "amount": {**money, "amount": "0.66", "precise": "0.6666"}, "allocated": "0.66"},
        ],
        "subtotals": [
            {"direction": "received", "unit": "km", "allocated": "0.66",
             "amount": {**money, "amount": "0.66", "precise": "0.6666"}},
            {"direction": "sent", "unit": "km", "allocated": "-0.33",
             "amount": {**money, "amount": "0.33", "precise": "0.3333"}},
        ],
        "sent": {**money, "amount": "0.33", "precise": "0.3333"},
        "received": {**money, "amount": "0.66", "precise": "0.6666"},
        "net": {**money, "amount": "0.33", "precise": "0.3333"},
        "allocated": {"sent": "-0.33", "received": "0.66", "net": "0.33"},
        "balance": {**money, "amount": "100.33", "precise": "100.3333", "payout": "100.33"},
        "transfers": [{"purpose": "deposit", "party": "opener", "status": "booked",
                       "amount": {"amount": "100.00", "currency": "EUR"},
                       "reference": "ML0123456789ABCDEF"}],
    }


def test_csv_rows_are_signed_fixed_and_add_up() -> None:
    rows = list(csv.DictReader(io.StringIO(as_csv(_statement(2, 6)))))
    assert list(rows[0]) == CSV_FIELDS
    assert [r["row"] for r in rows] == ["item", "item", "subtotal", "subtotal", "total",
                                        "total", "net", "transfer"]
    assert {r["counterparty"] for r in rows} == {"'=evil"}
    assert rows[0]["reference"] == "'+A"
    assert rows[0]["precise_amount"] == "-0.333300"
    assert rows[-1]["amount"] == "-100.00"  # the deposit leaves the opener's account
    assert rows[-1]["bank_reference"] == "ML0123456789ABCDEF"
    net = next(r for r in rows if r["row"] == "net")
    assert net["amount"] == "0.33"
    assert net["precise_amount"] == "0.333300"
