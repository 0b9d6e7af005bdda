"""BAI2 statements (the end-of-day format US treasury systems read) into neutral reports.

Parsed with the maintained ``bai2`` package (PyPI ``bai2``, which knows the record layouts, the
continuation records and the type-code table of the BAI Cash Management Balance Reporting
Specifications v2), then reduced to what reconciliation needs: per account (03) its currency,
opening and closing ledger balances (type codes 010 and 015) and one entry per transaction
detail (16). The direction comes from the type code's table entry (credit or debit), the
amount is in minor units (BAI2 writes amounts without a decimal point), the bank reference
carries the payment's end-to-end id (for an ACH credit: the entry's individual identification
number), and the text the counterparty's name.

BAI2 has no entry id: an entry is named ``bai2:<file id>:<account>:<n>`` (the n-th 16 of that
account in that file), stable for one file. A 16 under one of the individual return codes
(257 credit, 557 debit) is a return; BAI2 carries no reason code (the NACHA return file does),
so the return reason is the type code.

Everything is untrusted input: anything the parser refuses, or a file that does not hold
together (no group date, an amount that is not an integer), is a
:class:`~rails.errors.BankProtocolError`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from bai2 import bai2 as bai2_parser
from bai2.constants import TypeCodeTransaction

from rails.errors import BankProtocolError
from rails.iso20022.reports import AccountReport, Entry
from rails.port import EntryDirection

OPENING_LEDGER = "010"
CLOSING_LEDGER = "015"
RETURN_CODES = frozenset({"257", "557"})
"""Individual ACH return items (credit, debit)."""
MAX_BYTES = 16 * 1024 * 1024


def _balance(summaries: list[Any], code: str) -> int | None:
    for item in summaries or []:
        if getattr(getattr(item, "type_code", None), "code", None) == code:
            return int(item.amount) if item.amount is not None else None
    return None


def parse_bai2(data: bytes) -> list[AccountReport]:
    """Every account statement in a BAI2 file."""
    if len(data) > MAX_BYTES:
        raise BankProtocolError(f"BAI2 file of {len(data)} bytes is larger than {MAX_BYTES}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BankProtocolError(f"BAI2 file is not ASCII: {exc}") from exc
    try:
        parsed = bai2_parser.parse_from_string(text, check_integrity=True)
        file_id = str(parsed.header.file_id)
        reports: list[AccountReport] = []
        for group in parsed.children:
            as_of: date | None = group.header.as_of_date
            if as_of is None:
                raise BankProtocolError("BAI2 group header has no as-of date")
            for account in group.children:
                number = str(account.header.customer_account_number)
                currency = str(account.header.currency or group.header.currency or "")
                entries = []
                for n, t in enumerate(account.children, start=1):
                    code = t.type_code.code
                    credit = t.type_code.transaction is TypeCodeTransaction.credit
                    if not credit and t.type_code.transaction is not TypeCodeTransaction.debit:
                        raise BankProtocolError(f"BAI2 type code {code} is neither credit "
                                                "nor debit")
                    amount = int(t.amount)
                    if amount < 0:
                        raise BankProtocolError(f"BAI2 16 record with amount {amount}")
                    entries.append(Entry(
                        entry_id=f"bai2:{file_id}:{number}:{n}",
                        direction=EntryDirection.CREDIT if credit else EntryDirection.DEBIT,
                        amount_minor=amount, currency=currency, booked=True,
                        booking_date=as_of, value_date=as_of, msg_id=t.customer_reference,
                        pmt_inf_id=None, end_to_end_id=t.bank_reference or None,
                        structured_reference=None, unstructured=None,
                        return_reason=code if code in RETURN_CODES else None,
                        counterparty_name=t.text or None, counterparty_account=None))
                reports.append(AccountReport(
                    report_id=f"bai2:{file_id}:{number}", account=number, currency=currency,
                    entries=tuple(entries),
                    opening_balance_minor=_balance(account.header.summary_items,
                                                   OPENING_LEDGER),
                    closing_balance_minor=_balance(account.header.summary_items,
                                                   CLOSING_LEDGER)))
        return reports
    except BankProtocolError:
        raise
    except Exception as exc:  # the parser's own errors, and anything a hostile file provokes
        raise BankProtocolError(f"BAI2 file does not parse: {type(exc).__name__}: {exc}"
                                ) from exc
