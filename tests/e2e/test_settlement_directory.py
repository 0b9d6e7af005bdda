"""End to end over the SEPA rail's folder channel: the nodes write pain.001 files into a folder,
a real mock-bank picks them up from there and writes its pain.002, camt.054 and camt.053 into
its pickup folder, and a postman (the bank's host-to-host server) delivers each into the inbox
folder of the customer it is for. No node talks HTTP to the bank.

The channel is the SEPA run's (tests/e2e/test_settlement_sepa.py); what this test adds is the
channel: every deposit and payout reaches ``booked`` only through a camt.054/camt.053 entry read
from a node's inbox, each bank file is read once and moved aside, and the money adds up.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node.cluster import meterline_argv
from tests.e2e.channel_run import (
    ACCOUNT_ID,
    DEPOSIT,
    OPENING,
    Line,
    balances,
    check_balances,
    check_settlement_transfers,
    expected_payouts,
    mock_bank,
    run_two_company_channel,
    wait_for,
)
from tests.e2e.mockbank_clearing import BankClient, DropFolder, Postman, iban, read_pain001

BIC = "MOCKNL2A"
KM = Line("km", Decimal("0.012345"), 1_000)
HOURS = Line("container-hour", Decimal("1.755"), 3)
HOLDER = {"manufacturer": "Manufacturer B.V.", "carrier": "Carrier GmbH",
          "escrow": "Escrow Agent"}


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {"drop": tmp_path / "bank-drop", "pickup": tmp_path / "bank-pickup",
            **{who: tmp_path / f"inbox-{who}" for who in ACCOUNT_ID}}


@pytest.fixture
def bank(tmp_path: Path, folders: dict[str, Path]) -> Iterator[BankClient]:
    with mock_bank(tmp_path, "--drop-dir", str(folders["drop"]),
                   "--pickup-dir", str(folders["pickup"]), "--drop-interval-ms", "100",
                   "--drop-settle-ms", "0") as client:
        yield client


def test_settlement_over_the_directory_channel(
    tmp_path: Path, bank: BankClient, folders: dict[str, Path]
) -> None:
    ibans = {who: iban("NL", f"MOCK{n:010d}") for n, who in
             enumerate(("manufacturer", "carrier", "escrow"), start=101)}
    for who, acct in ACCOUNT_ID.items():
        bank.call("POST", "/_mock/accounts", {
            "id": acct, "name": HOLDER[who], "iban": ibans[who], "bic": BIC,
            "currency": "EUR", "balance": OPENING[who]})
    before = balances(bank)
    postman = Postman(folders["pickup"], {ACCOUNT_ID[who]: folders[who]
                                          for who in ACCOUNT_ID}).start()

    def bank_config(gateway_url: str, who: str) -> dict[str, Any]:
        return {"rail": "sepa", "transport": "directory", "url": "http://127.0.0.1:9",
                "outbox_dir": str(folders["drop"]), "inbox_dir": str(folders[who]),
                "scheme": "IBAN", "identification": ibans[who], "agent": BIC,
                "name": HOLDER[who], "poll_interval_ms": 200}

    try:
        with run_two_company_channel(tmp_path, bank, bank_config, currency="EUR",
                                     forward=KM, back=HOURS,
                                     files=DropFolder(folders["drop"])) as run:
            payee, payout = expected_payouts(DEPOSIT, run.sent_m, run.sent_c)
            assert payee == "carrier"
            # Both nodes show every deposit and payout booked: read from camt entries in
            # their inboxes, since no node can ask the bank over HTTP.
            check_settlement_transfers(run, DEPOSIT, payout)
            check_balances(before, balances(bank), DEPOSIT, payout)

            # Nothing went over the HTTP door: the gateway relayed no payment file.
            assert run.gateway.posted() == []
            sent = DropFolder(folders["drop"]).posted()
            assert len(sent) == 4
            assert sorted(t.amount_minor for data in sent for t in read_pain001(data)) == sorted(
                [*DEPOSIT.values(), *payout.values()])
            # Every file the bank sent was delivered to its customer's inbox, read there and
            # moved aside. The arbiter reads its inbox on every poll, so nothing stays there;
            # a company reads its own only while it has a transfer pending (a notification of
            # its payout credit may arrive after that, and waits).
            assert postman.errors == []
            escrow = folders["escrow"]
            wait_for("the arbiter to read its inbox",
                     lambda: not any(p.is_file() for p in escrow.iterdir()), 10)
            for who in ACCOUNT_ID:
                inbox = folders[who]
                read = [p.name for p in (inbox / "processed").iterdir()]
                assert any(n.startswith("camt.054") for n in read), (who, read)
                assert list((inbox / "failed").iterdir()) == []

            # `meterline rails reconcile` on the arbiter: both payouts matched to the escrow
            # account's camt entries by end-to-end id and amount, no difference.
            today = dt.datetime.now(dt.UTC).date().isoformat()
            cli = subprocess.run(
                [*meterline_argv(), "rails", "reconcile", "--data-dir", str(run.arb.directory),
                 "--since", today, "--json"], capture_output=True, text=True, timeout=60)
            assert cli.returncode == 0, cli.stderr
            answer = json.loads(cli.stdout)
            assert answer["rail"] == "sepa-ct"
            assert answer["differences"] == []
            assert sorted(int(m["entry"]["amount_minor"]) for m in answer["matches"]) == sorted(
                payout.values())
            assert {m["outcome"] for m in answer["matches"]} == {"booked"}
            human = subprocess.run(
                [*meterline_argv(), "rails", "reconcile", "--data-dir", str(run.arb.directory)],
                capture_output=True, text=True, timeout=60)
            assert human.returncode == 0, human.stderr
            assert "no differences" in human.stdout
            assert f"{payout['carrier'] / 100:.2f} EUR" in human.stdout
    finally:
        postman.stop()
