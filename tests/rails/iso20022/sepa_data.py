"""mock-bank's seeded accounts (real mod-97 IBANs at the fictional bank MOCK), a payment maker."""

from __future__ import annotations

from datetime import UTC, datetime

from rails.port import Account, AccountScheme, PaymentInstruction

ACME = Account("ACME Corporation", AccountScheme.IBAN, "NL41MOCK0000000001")
GLOBEX = Account("Globex Supplies", AccountScheme.IBAN, "NL14MOCK0000000002")
INITECH = Account("Initech Services", AccountScheme.IBAN, "NL84MOCK0000000003")
PEER = Account("Peer Energie B.V.", AccountScheme.IBAN, "NL30MOCK0000000005")


def bank_now() -> datetime:
    return datetime(2026, 10, 1, 9, 0, tzinfo=UTC)



def pay(key: str, amount: int = 12_345, creditor: Account = PEER, debtor: Account = ACME,
        reference: str = "ML channel 7f3a close", currency: str = "EUR") -> PaymentInstruction:
    return PaymentInstruction(idempotency_key=key, debtor=debtor, creditor=creditor,
                              amount_minor=amount, currency=currency, reference=reference)
