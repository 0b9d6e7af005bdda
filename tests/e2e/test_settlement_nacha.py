"""End to end over the NACHA rail: real meterline processes, a real mock-bank, dollars that add up.

One mock-bank process holds three USD accounts set up for NACHA as its README says
(``PATCH /_mock/accounts/<id> {"format": "nacha", "currency": "USD", "account_number": ...}``,
routing 999999992). The arbiter and the two companies are real ``meterline`` daemons whose
``[bank] rail = "nacha"`` posts NACHA CCD+ files to it through the pass-through
:class:`~tests.e2e.mockbank_clearing.Gateway`, each naming its account ``US.ABA``
``999999992:<account number>`` as the protocol carries it. mock-bank books only the debit side, so
the test plays the ACH operator and the RDFI (:class:`~tests.e2e.mockbank_clearing.Clearing`):
every booked credit entry to an account it holds is carried across as one ``POST /_mock/credits``
with the entry's individual identification number and its 05 addenda as the note to payee, which
is how the escrow deposits and the payouts arrive in camt.054 notifications.

The channel: the manufacturer deposits 5,000.00 USD and the carrier 100.00 USD; the manufacturer
pays 2,000 single-mile updates over the stream at 0.012345 USD/mi (24.69 USD) and the carrier pays
back 3 container-hours at 1.755 USD (5.265 USD, a fraction of a cent). So the carrier, the net
payee, is owed 119.425 USD and is paid 119.42; the manufacturer gets the rest, 4,980.58 USD; the
half cent stays with the payer.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import achkit
import pytest

from protocol.references import Purpose, bank_reference
from tests.e2e.channel_run import (
    ACCOUNT_ID,
    DEPOSIT,
    OPENING,
    PARTY,
    Line,
    balances,
    check_balances,
    check_settlement_transfers,
    expected_payouts,
    mock_bank,
    run_two_company_channel,
)
from tests.e2e.mockbank_clearing import AchEntry, BankClient, iban, is_nacha, read_nacha

ROUTING = "999999992"
"""mock-bank's own (fictional, check-digit valid) routing number."""
MILES = Line("mile", Decimal("0.012345"), 2_000)
HOURS = Line("container-hour", Decimal("1.755"), 3)
ACCOUNT_NUMBER = {"manufacturer": "0000000201", "carrier": "0000000202", "escrow": "0000000203"}
HOLDER = {"manufacturer": "Manufacturer Inc", "carrier": "Carrier LLC",
          "escrow": "Escrow Agent"}
NACHA = "text/plain"


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankClient]:
    # Bank time starts this morning: the nodes' files carry today's effective entry date (real
    # UTC date), which is then neither in the past (DT01) nor after the cutoff.
    with mock_bank(tmp_path) as client:
        yield client


def acknowledgements(bank: BankClient) -> dict[str, list[str]]:
    """Each acknowledged file id -> its STATUS line and ENTRY lines (mock-bank's nacha.ack)."""
    out: dict[str, list[str]] = {}
    for message in bank.messages("nacha.ack"):
        lines = message["body"].splitlines()
        file_id = next(line.split()[1] for line in lines if line.startswith("FILE "))
        out.setdefault(file_id, []).extend(
            line for line in lines if line.startswith(("STATUS ", "ENTRY ")))
    return out


def test_settlement_over_nacha_through_mock_bank(tmp_path: Path, bank: BankClient) -> None:
    ibans = {who: iban("NL", f"MOCK{ACCOUNT_NUMBER[who]}") for who in ACCOUNT_ID}
    for who, acct in ACCOUNT_ID.items():
        bank.call("POST", "/_mock/accounts", {
            "id": acct, "name": HOLDER[who], "iban": ibans[who], "bic": "MOCKNL2A",
            "currency": "USD", "balance": OPENING[who]})
        bank.call("PATCH", f"/_mock/accounts/{acct}", {
            "format": "nacha", "currency": "USD", "account_number": ACCOUNT_NUMBER[who]})
    accounts = bank.accounts()
    for who, acct in ACCOUNT_ID.items():
        assert (accounts[acct]["format"], accounts[acct]["currency"],
                accounts[acct]["account_number"]) == ("nacha", "USD", ACCOUNT_NUMBER[who])
    before = balances(bank)
    assert before == OPENING

    def bank_config(gateway_url: str, who: str) -> dict[str, Any]:
        # mock-bank knows an originator by its company identification and looks it up as an
        # account number, so here the ODFI "assigned" each company its 10-digit account number
        # (a real ODFI assigns 1 + EIN: tests/rails/nacha).
        return {"rail": "nacha", "url": gateway_url, "scheme": "US.ABA",
                "identification": f"{ROUTING}:{ACCOUNT_NUMBER[who]}", "agent": ROUTING,
                "name": HOLDER[who], "poll_interval_ms": 200,
                "immediate_destination": f" {ROUTING}", "immediate_destination_name": "MOCK BANK",
                "immediate_origin": ACCOUNT_NUMBER[who], "immediate_origin_name": HOLDER[who],
                "company_id": ACCOUNT_NUMBER[who], "company_name": HOLDER[who]}

    with run_two_company_channel(tmp_path, bank, bank_config, currency="USD",
                                 forward=MILES, back=HOURS) as run:
        # -- what the channel says, and the payouts computed here ------------------------------
        payee, payout = expected_payouts(DEPOSIT, run.sent_m, run.sent_c)
        assert payee == "carrier"
        assert payout == {"carrier": 11_942, "manufacturer": 498_058}
        check_settlement_transfers(run, DEPOSIT, payout, currency="USD")
        channel_id = run.channel_id

        # -- what the bank says ----------------------------------------------------------------
        after = balances(bank)
        check_balances(before, after, DEPOSIT, payout)
        assert sum(after.values()) == sum(before.values())

        expected = {  # (originator, receiver routing, receiver account, cents, addenda 05)
            (ACCOUNT_NUMBER[who], ROUTING, ACCOUNT_NUMBER["escrow"], DEPOSIT[who],
             bank_reference(channel_id, Purpose.DEPOSIT, PARTY[who])) for who in PARTY
        } | {
            (ACCOUNT_NUMBER["escrow"], ROUTING, ACCOUNT_NUMBER[who], payout[who],
             bank_reference(channel_id, Purpose.PAYOUT, PARTY[who])) for who in PARTY
        }
        files = run.gateway.posted()
        assert all(is_nacha(data) for data in files), [d[:40] for d in files]
        entries: list[AchEntry] = [e for data in files for e in read_nacha(data)]
        assert {(e.company_id, e.receiver_routing, e.receiver_account, e.amount_minor,
                 e.payment_info) for e in entries} == expected
        assert {(e.sec, e.transaction_code) for e in entries} == {("CCD", "22")}
        assert len(entries) == len(files) == 4

        payments = bank.payments()
        assert len(payments) == 4
        assert all(p["status"] == "accepted" and p["booked_at"] and p["currency"] == "USD"
                   and p["transaction_code"] == "22" for p in payments), payments
        assert {(p["msg_id"], p["end_to_end_id"]) for p in payments} == {
            (e.msg_id, e.end_to_end_id) for e in entries}
        # Each booked ACH credit crossed exactly once, carrying its addenda as the note.
        credits = bank.credits()
        assert sorted(c["end_to_end_id"] for c in credits) == sorted(
            p["end_to_end_id"] for p in payments)
        by_e2e = {e.end_to_end_id: e for e in entries}
        for c in credits:
            e = by_e2e[c["end_to_end_id"]]
            assert c["booked_at"], c
            assert (c["amount"], c["currency"], c["note"]) == (e.amount_minor, "USD",
                                                               [e.payment_info])
        assert len(run.clearing.relayed) == 4
        assert bank.messages("nacha.return") == []

        # -- every NACHA file the nodes sent passes mock-bank and achkit ---------------------
        for data in files:
            status, findings = bank.validate(data, NACHA)
            assert status == 200, findings
            assert findings.startswith("NACHA "), findings
            problems = [line for line in findings.splitlines()[1:]
                        if line.strip() and not line.startswith("warning DT01")]
            assert problems == [], findings
            assert achkit.validate(data.decode("ascii")) == {"ok": True, "errors": []}
        acks = acknowledgements(bank)
        for e in entries:
            lines = acks.get(e.msg_id)
            assert lines, f"no acknowledgement for {e.msg_id}"
            assert "STATUS ACCP" in lines, (e.msg_id, lines)
            assert any(line.split()[2:3] == [e.end_to_end_id] and "ACCEPTED" in line
                       for line in lines), (e.msg_id, lines)
