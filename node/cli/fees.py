"""The demo's fee comparison, with every assumption stated beside its number.

A fair comparison is not only against paying each metered unit by card or wire (nobody does
that): a finance team would invoice the usage and pay the invoice by one bank transfer a day or a
month. Against that baseline meterline costs about the same in bank fees — three transfers per
channel (deposit, two payouts) however long it stays open — and adds what invoicing lacks: every
unit backed by a signed, verifiable proof, paid in real time, with no credit beyond the deposit
(an invoiced carrier extends a month of usage on credit). What it costs is the deposit's capital,
locked while the channel is open; we price that at an assumed interest rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

CARD_RATE = Decimal("0.015")  # 1.5 % per card payment: Stripe's published standard EEA rate
CARD_FIXED = Decimal("0.25")  # + 0.25 EUR per card payment (same price list)
WIRE_FEE = Decimal("15.00")  # EUR per bank wire: an assumed typical business outgoing wire fee
TRANSFER_FEE = Decimal("0.20")  # EUR per SEPA credit transfer on a business account (assumed)
CAPITAL_RATE = Decimal("0.04")  # a year, the deposit's opportunity cost (assumed)
DAYS_A_MONTH = 30


@dataclass(frozen=True)
class Comparison:
    card: Decimal
    wire: Decimal
    invoice_daily: Decimal
    invoice_monthly_per_day: Decimal
    meterline_transfers: Decimal
    meterline_capital_per_day: Decimal
    credit_monthly: Decimal
    """The usage an invoiced payee carries on credit by the month's end (30 days of this day)."""

    def lines(self, updates: int, deposit: Decimal) -> list[str]:
        return [
            f"card, per update, 1.5 % + 0.25 EUR (Stripe's published EEA rate): "
            f"{self.card:,.2f} EUR in fees",
            f"bank wire, per update, at an assumed 15.00 EUR each: {self.wire:,.2f} EUR",
            "what a finance team would do instead — invoice the usage, pay by bank transfer "
            "(an assumed 0.20 EUR each; the cost of issuing and reconciling invoices not priced):",
            f"  one invoice + one transfer a day:   {self.invoice_daily:,.2f} EUR a day",
            f"  one invoice + one transfer a month: {self.invoice_monthly_per_day:,.2f} EUR a "
            f"day, and the carrier carries up to {self.credit_monthly:,.2f} EUR of usage on "
            "credit",
            f"meterline: 3 bank transfers per channel (deposit, two payouts) at 0.20 EUR: "
            f"{self.meterline_transfers:,.2f} EUR however many days the channel stays open,",
            f"  plus the deposit's capital: {deposit:,.2f} EUR locked, at an assumed 4 % a "
            f"year {self.meterline_capital_per_day:,.2f} EUR a day;",
            f"  for that, each of the {updates:,} updates is a signed proof of the units, paid "
            "as they happen, with no credit risk beyond the deposit",
        ]

    def as_json(self) -> dict[str, str]:
        return {
            "card": f"{self.card:.2f}", "wire": f"{self.wire:.2f}",
            "invoice_daily": f"{self.invoice_daily:.2f}",
            "invoice_monthly_per_day": f"{self.invoice_monthly_per_day:.2f}",
            "meterline": f"{self.meterline_transfers:.2f}",
            "meterline_capital_per_day": f"{self.meterline_capital_per_day:.2f}",
            "credit_monthly": f"{self.credit_monthly:.2f}",
            "assumptions": "card 1.5 % + 0.25 EUR per payment (Stripe's published EEA rate); "
                           "wire 15.00 EUR each (assumed); bank transfer 0.20 EUR each "
                           "(assumed); invoicing costs not priced; deposit capital at 4 % a "
                           "year (assumed); a month is 30 days of the demo's day",
        }


def compare(total: Decimal, updates: int, deposit: Decimal) -> Comparison:
    """Fees for one day's usage worth `total` EUR in `updates` updates, by each way of paying."""
    return Comparison(
        card=total * CARD_RATE + CARD_FIXED * updates,
        wire=WIRE_FEE * updates,
        invoice_daily=TRANSFER_FEE,
        invoice_monthly_per_day=(TRANSFER_FEE / DAYS_A_MONTH).quantize(Decimal("0.01")),
        meterline_transfers=TRANSFER_FEE * 3,
        meterline_capital_per_day=(deposit * CAPITAL_RATE / 365).quantize(Decimal("0.01")),
        credit_monthly=total * DAYS_A_MONTH,
    )
