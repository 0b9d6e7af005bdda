"""Which rail errors end a transfer as rejected, and which are retried (ADR 0153)."""

from __future__ import annotations

import pytest

from node.transfers import final, rejected
from rails.errors import (
    AnswerTooLarge,
    BankProtocolError,
    BankRejected,
    BankUnavailable,
    IdempotencyConflict,
    InvalidInstruction,
    RailError,
    UnknownPayment,
)
from rails.port import PaymentStatus


@pytest.mark.parametrize(
    ("error", "is_final"),
    [
        (BankRejected("POST /domestic-payments: the debtor account holds less than 50.00 EUR",
                      "UK.OBIE.Rules.InsufficientFunds"), True),
        (InvalidInstruction("the bank refused the instruction (HTTP 400)"), True),
        (IdempotencyConflict("the bank refused the idempotency key"), True),
        (BankRejected("POST /x: the bank refused our credentials", "HTTP401"), False),
        (BankUnavailable("POST /x failed after 4 attempts (HTTP 503)"), False),
        (AnswerTooLarge("too long"), False),
        (BankProtocolError("answer is not a JSON object"), False),
        (UnknownPayment("no payment under ml-…"), False),
    ],
)
def test_final(error: RailError, is_final: bool) -> None:
    assert final(error) is is_final


def test_rejected_keeps_the_banks_reason() -> None:
    exc = BankRejected("POST /domestic-payments: the debtor account holds less than 50.00 EUR",
                       "UK.OBIE.Rules.InsufficientFunds")
    record = rejected("ml-1", 5000, "EUR", exc)
    assert record.status is PaymentStatus.REJECTED
    assert record.reason_code == "UK.OBIE.Rules.InsufficientFunds"
    assert record.reason == "POST /domestic-payments: the debtor account holds less than 50.00 EUR"
    assert (record.amount_minor, record.currency) == (5000, "EUR")
    invalid = rejected("ml-2", 1, "GBP", InvalidInstruction("wrong currency"))
    assert invalid.reason_code == "INVALID_INSTRUCTION"
