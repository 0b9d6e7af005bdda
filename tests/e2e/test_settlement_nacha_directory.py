"""End to end over the NACHA rail's folder channel: ``[rails.nacha] transport = "directory"``.

The nodes write NACHA CCD+ files into a folder; a real mock-bank picks them up from there (its
drop folder) and writes its acknowledgements, camt.054 notifications, BAI2 statements and
return files into its pickup folder; a postman (the bank's host-to-host server) delivers each
into the inbox folder of the customer it is for. No node talks HTTP to the bank. The clearing
plays the ACH operator and the RDFI as in tests/e2e/test_settlement_nacha.py, reading the files
from the drop folder.

What it shows: every deposit and payout reaches ``booked`` only through a statement entry read
from a node's inbox, each bank file is read once and moved aside, the dollars add up, and
``meterline rails reconcile`` on the arbiter matches both payouts with no difference.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import achkit
import pytest

from node.cluster import meterline_argv
from tests.e2e.channel_run import (
    ACCOUNT_ID,
    DEPOSIT,
    OPENING,
    balances,
    check_balances,
    check_settlement_transfers,
    expected_payouts,
    mock_bank,
    run_two_company_channel,
    wait_for,
)
from tests.e2e.mockbank_clearing import BankClient, DropFolder, Postman, iban, is_nacha, read_nacha
from tests.e2e.test_settlement_nacha import ACCOUNT_NUMBER, HOLDER, HOURS, MILES, ROUTING


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


def test_settlement_over_nacha_through_the_directory_channel(
    tmp_path: Path, bank: BankClient, folders: dict[str, Path]
) -> None:
    for who, acct in ACCOUNT_ID.items():
        bank.call("POST", "/_mock/accounts", {
            "id": acct, "name": HOLDER[who], "iban": iban("NL", f"MOCK{ACCOUNT_NUMBER[who]}"),
            "bic": "MOCKNL2A", "currency": "USD", "balance": OPENING[who]})
        bank.call("PATCH", f"/_mock/accounts/{acct}", {
            "format": "nacha", "currency": "USD", "account_number": ACCOUNT_NUMBER[who]})
    before = balances(bank)
    postman = Postman(folders["pickup"], {ACCOUNT_ID[who]: folders[who]
                                          for who in ACCOUNT_ID}).start()

    def bank_config(gateway_url: str, who: str) -> dict[str, Any]:
        # As in test_settlement_nacha: mock-bank knows an originator by its company id.
        return {"rail": "nacha", "transport": "directory", "url": "http://127.0.0.1:9",
                "outbox_dir": str(folders["drop"]), "inbox_dir": str(folders[who]),
                "scheme": "US.ABA", "identification": f"{ROUTING}:{ACCOUNT_NUMBER[who]}",
                "agent": ROUTING, "name": HOLDER[who], "poll_interval_ms": 200,
                "immediate_destination": f" {ROUTING}", "immediate_destination_name": "MOCK BANK",
                "immediate_origin": ACCOUNT_NUMBER[who], "immediate_origin_name": HOLDER[who],
                "company_id": ACCOUNT_NUMBER[who], "company_name": HOLDER[who]}

    try:
        with run_two_company_channel(tmp_path, bank, bank_config, currency="USD",
                                     forward=MILES, back=HOURS,
                                     files=DropFolder(folders["drop"])) as run:
            payee, payout = expected_payouts(DEPOSIT, run.sent_m, run.sent_c)
            assert payee == "carrier"
            assert payout == {"carrier": 11_942, "manufacturer": 498_058}
            check_settlement_transfers(run, DEPOSIT, payout, currency="USD")
            check_balances(before, balances(bank), DEPOSIT, payout)

            # Nothing went over the HTTP door: every file went through the folder.
            assert run.gateway.posted() == []
            sent = DropFolder(folders["drop"]).posted()
            assert len(sent) == 4
            assert all(is_nacha(data) for data in sent)
            assert all(achkit.validate(d.decode("ascii")) == {"ok": True, "errors": []}
                       for d in sent)
            assert sorted(e.amount_minor for d in sent for e in read_nacha(d)) == sorted(
                [*DEPOSIT.values(), *payout.values()])
            assert all(p.name.startswith("ach-ccd-") and p.name.endswith(".ach")
                       for p in (folders["drop"] / "processed").iterdir())

            assert postman.errors == []
            escrow = folders["escrow"]
            wait_for("the arbiter to read its inbox",
                     lambda: not any(p.is_file() for p in escrow.iterdir()), 10)
            for who in ACCOUNT_ID:
                read = [p.name for p in (folders[who] / "processed").iterdir()]
                assert any(n.startswith("camt.054") for n in read), (who, read)
                assert list((folders[who] / "failed").iterdir()) == []
            arbiter = [p.name for p in (escrow / "processed").iterdir()]
            assert any(n.startswith("nacha.ack") for n in arbiter), arbiter

            today = dt.datetime.now(dt.UTC).date().isoformat()
            cli = subprocess.run(
                [*meterline_argv(), "rails", "reconcile", "--data-dir", str(run.arb.directory),
                 "--since", today, "--json"], capture_output=True, text=True, timeout=60)
            assert cli.returncode == 0, cli.stderr
            answer = json.loads(cli.stdout)
            assert answer["rail"] == "ach-ccd"
            assert answer["differences"] == []
            assert sorted(int(m["entry"]["amount_minor"]) for m in answer["matches"]) == sorted(
                payout.values())
            assert {m["outcome"] for m in answer["matches"]} == {"booked"}
    finally:
        postman.stop()
