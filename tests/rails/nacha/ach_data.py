"""mock-bank's seeded accounts as NACHA sees them (routing 999999992), and an instruction maker."""

from __future__ import annotations

from datetime import UTC, datetime

from rails.nacha import Originator
from rails.port import Account, AccountScheme, PaymentInstruction

BANK_ROUTING = "999999992"
ACME = Account("ACME Corporation", AccountScheme.US_ABA, "0000000001", BANK_ROUTING)
GLOBEX = Account("Globex Supplies", AccountScheme.US_ABA, "0000000002", BANK_ROUTING)
INITECH = Account("Initech Services", AccountScheme.US_ABA, "0000000003", BANK_ROUTING)
EURODIS = Account("Eurodis Handels", AccountScheme.US_ABA, "0000000004", BANK_ROUTING)
PEER = Account("Peer Power Inc", AccountScheme.US_ABA, "12345678901", "021000021")

# How the ODFI (mock-bank, routing 999999992) knows each originator: 1 + an EIN, not an account
# number. mock-bank finds the paying account by its company identification, so the fixtures
# give ACME and GLOBEX these numbers as their account numbers there (`COMPANY_IDS`).
ACME_ORIGIN = Originator(
    immediate_destination=" " + BANK_ROUTING, immediate_destination_name="MOCK BANK",
    immediate_origin="1470000001", immediate_origin_name="ACME CORPORATION",
    company_id="1470000001", company_name="ACME CORPORATION")
GLOBEX_ORIGIN = Originator(
    immediate_destination=" " + BANK_ROUTING, immediate_destination_name="MOCK BANK",
    immediate_origin="1470000002", immediate_origin_name="GLOBEX SUPPLIES",
    company_id="1470000002", company_name="GLOBEX SUPPLIES")
COMPANY_IDS = {"ACME": ACME_ORIGIN.company_id, "GLOBEX": GLOBEX_ORIGIN.company_id}


def bank_now() -> datetime:
    return datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def pay(key: str, amount: int = 12_345, creditor: Account = PEER, debtor: Account = ACME,
        reference: str = "ML CHANNEL 7F3A CLOSE", currency: str = "USD") -> PaymentInstruction:
    return PaymentInstruction(idempotency_key=key, debtor=debtor, creditor=creditor,
                              amount_minor=amount, currency=currency, reference=reference)
