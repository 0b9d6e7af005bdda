"""End to end over the SEPA rail: real meterline processes, a real mock-bank, money that adds up.

One mock-bank process holds three EUR accounts (manufacturer, carrier, escrow). The arbiter and
the two companies are real ``meterline`` daemons whose ``[bank] rail = "sepa"`` sends pain.001
files to it (through :class:`~tests.e2e.mockbank_clearing.Gateway`, a pass-through that keeps a
copy of each file). mock-bank books only the debit side, so the test plays the clearing system
(:class:`~tests.e2e.mockbank_clearing.Clearing`): every booked debit to an account it holds is
carried across as one ``POST /_mock/credits`` with the payment's remittance and EndToEndId, which
is how the escrow deposits and the payouts arrive in camt.054 notifications.

The channel: the manufacturer deposits 5,000.00 EUR and the carrier 100.00 EUR; the manufacturer
pays 10,000 single-kilometre updates over the stream at 0.012345 EUR/km (123.45 EUR) and the
carrier pays back 3 container-hours at 1.755 EUR (5.265 EUR, a fraction of a cent). So the
carrier, the net payee, is owed 218.185 EUR and is paid 218.18; the manufacturer gets the rest,
4,881.82 EUR; the half cent stays with the payer.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

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
from tests.e2e.mockbank_clearing import BankClient, iban, read_pain001

BIC = "MOCKNL2A"
KM = Line("km", Decimal("0.012345"), 10_000)
HOURS = Line("container-hour", Decimal("1.755"), 3)
HOLDER = {"manufacturer": "Manufacturer B.V.", "carrier": "Carrier GmbH",
          "escrow": "Escrow Agent"}
PAIN002_NS = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankClient]:
    # Bank time starts this morning: the nodes' files ask for execution today (real UTC date),
    # which is then neither in the past (DT01) nor after the 15:00 cutoff.
    with mock_bank(tmp_path) as client:
        yield client


def pain002_findings(bank: BankClient, msg_ids: set[str]) -> dict[str, list[str]]:
    """For each of our files' MsgIds: every group/batch/transaction status and reason code."""
    out: dict[str, list[str]] = {m: [] for m in msg_ids}
    ns = {"p": PAIN002_NS}
    for message in bank.messages("pain.002"):
        root = ET.fromstring(message["body"].encode())
        grp = root.find("p:CstmrPmtStsRpt/p:OrgnlGrpInfAndSts", ns)
        assert grp is not None, message["body"][:500]
        original = grp.findtext("p:OrgnlMsgId", "", ns)
        if original not in out:
            continue
        codes = out[original]
        for el in root.iter():
            tag = el.tag.rsplit("}", 1)[-1]
            if tag in ("GrpSts", "PmtInfSts", "TxSts") or (
                    tag == "Cd" and el.text and "StsRsnInf" in _path_of(root, el)):
                codes.append(f"{tag}={el.text}")
    return out


def _path_of(root: ET.Element, target: ET.Element) -> str:
    parents = {child: parent for parent in root.iter() for child in parent}
    names = []
    el: ET.Element | None = target
    while el is not None:
        names.append(el.tag.rsplit("}", 1)[-1])
        el = parents.get(el)
    return "/".join(reversed(names))


def test_settlement_over_sepa_through_mock_bank(tmp_path: Path, bank: BankClient) -> None:
    ibans = {who: iban("NL", f"MOCK{n:010d}") for n, who in
             enumerate(("manufacturer", "carrier", "escrow"), start=101)}
    for who, acct in ACCOUNT_ID.items():
        bank.call("POST", "/_mock/accounts", {
            "id": acct, "name": HOLDER[who], "iban": ibans[who], "bic": BIC,
            "currency": "EUR", "balance": OPENING[who]})
    before = balances(bank)
    assert before == OPENING

    def bank_config(gateway_url: str, who: str) -> dict[str, Any]:
        return {"rail": "sepa", "url": gateway_url, "scheme": "IBAN",
                "identification": ibans[who], "agent": BIC, "name": HOLDER[who],
                "poll_interval_ms": 200}

    with run_two_company_channel(tmp_path, bank, bank_config, currency="EUR",
                                 forward=KM, back=HOURS) as run:
        # -- what the channel says -------------------------------------------------------------
        payee, payout = expected_payouts(DEPOSIT, run.sent_m, run.sent_c)
        assert payee == "carrier"
        assert payout == {"carrier": 21818, "manufacturer": 488182}
        check_settlement_transfers(run, DEPOSIT, payout)
        channel_id = run.channel_id

        # -- what the bank says ----------------------------------------------------------------
        after = balances(bank)
        check_balances(before, after, DEPOSIT, payout)

        expected = {  # (debtor, creditor, amount, reference) of every transfer the run made
            (ibans[who], ibans["escrow"], DEPOSIT[who],
             bank_reference(channel_id, Purpose.DEPOSIT, PARTY[who])) for who in PARTY
        } | {
            (ibans["escrow"], ibans[who], payout[who],
             bank_reference(channel_id, Purpose.PAYOUT, PARTY[who])) for who in PARTY
        }
        files = run.gateway.posted()
        transfers = [t for data in files for t in read_pain001(data)]
        assert {(t.debtor_iban, t.creditor_iban, t.amount_minor, t.reference)
                for t in transfers} == expected
        assert len(transfers) == len(files) == 4

        payments = bank.payments()
        assert len(payments) == 4
        assert all(p["status"] == "accepted" and p["booked_at"] for p in payments), payments
        # Each booked debit crossed exactly once, as a credit carrying its reference.
        credits = bank.credits()
        assert sorted(c["end_to_end_id"] for c in credits) == sorted(
            p["end_to_end_id"] for p in payments)
        by_e2e = {t.end_to_end_id: t for t in transfers}
        for c in credits:
            t = by_e2e[c["end_to_end_id"]]
            assert c["booked_at"], c
            assert (c["amount"], c["note"]) == (t.amount_minor, [t.reference])
        assert len(run.clearing.relayed) == 4

        # -- every pain.001 the nodes sent passed the bank's validation ------------------------
        for data in files:
            status, findings = bank.validate(data)
            assert status == 200, findings
            problems = [line for line in findings.splitlines()[1:]
                        if line.strip() and not line.startswith("warning DT01")]
            assert problems == [], findings
        reports = pain002_findings(bank, {t.msg_id for t in transfers})
        for msg_id, codes in reports.items():
            assert codes, f"no pain.002 for {msg_id}"
            assert not any(c.endswith(("RJCT", "FF01", "AC01")) for c in codes), (msg_id, codes)
