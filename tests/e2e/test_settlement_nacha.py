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

import datetime as dt
import time
from collections.abc import Callable, Iterator
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import achkit
import pytest

from node.cluster import Cluster, NodeHandle
from protocol.references import Purpose, bank_reference
from tests.e2e.mockbank_clearing import (
    AchEntry,
    BankClient,
    Clearing,
    Gateway,
    iban,
    is_nacha,
    read_nacha,
)
from tests.support import free_port, running, venv_bin

ROUTING = "999999992"
"""mock-bank's own (fictional, check-digit valid) routing number."""
MILE_PRICE = Decimal("0.012345")
HOUR_PRICE = Decimal("1.755")
MILE_UPDATES = 2_000
HOURS = 3
DEPOSIT = {"manufacturer": 500_000, "carrier": 10_000}  # minor units (US cents)
OPENING = {"manufacturer": 1_000_000, "carrier": 100_000, "escrow": 0}
ACCOUNT_ID = {"manufacturer": "MANUFACTURER", "carrier": "CARRIER", "escrow": "ESCROW"}
ACCOUNT_NUMBER = {"manufacturer": "0000000201", "carrier": "0000000202", "escrow": "0000000203"}
HOLDER = {"manufacturer": "Manufacturer Inc", "carrier": "Carrier LLC",
          "escrow": "Escrow Agent"}
NACHA = "text/plain"


def wait_for(what: str, predicate: Callable[[], Any], timeout_s: float,
             interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankClient]:
    port = free_port()
    # Bank time starts this morning: the nodes' files carry today's effective entry date (real
    # UTC date), which is then neither in the past (DT01) nor after the cutoff.
    today = dt.datetime.now(dt.UTC).date()
    argv = [venv_bin("mock-bank"), "--host", "127.0.0.1", "--port", str(port),
            "--db", str(tmp_path / "mock-bank.sqlite"), "--clock", f"{today}T08:00", "-q"]
    with running(argv, port=port, log=tmp_path / "mock-bank.log"):
        yield BankClient(f"http://127.0.0.1:{port}")


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
    before = {who: bank.balances()[ACCOUNT_ID[who]] for who in ACCOUNT_ID}
    assert before == OPENING

    gateway = Gateway(bank.base).start()
    clearing = Clearing(bank, gateway).start()
    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster")

    def bank_config(who: str) -> dict[str, Any]:
        return {"rail": "nacha", "url": gateway.url, "scheme": "US.ABA",
                "identification": f"{ROUTING}:{ACCOUNT_NUMBER[who]}", "agent": ROUTING,
                "name": HOLDER[who], "poll_interval_ms": 200}

    try:
        arb = cluster.add_node("arbiter", role="arbiter", bank=bank_config("escrow"))
        man = cluster.add_node("manufacturer", bank=bank_config("manufacturer"))
        car = cluster.add_node("carrier", bank=bank_config("carrier"), allow=[man.node_id])
        for node in (arb, man, car):
            node.start()
        for node in (man, car):
            node.api("POST", "/api/peers", {"url": arb.url})
        man.api("POST", "/api/peers", {"url": car.url})
        car.api("POST", "/api/peers", {"url": man.url})

        ch = man.api("POST", "/api/channels", {
            "peer": car.node_id, "arbiter": arb.node_id,
            "deposit": "5000.00 USD", "peer_deposit": "100.00 USD",
            "tariff": [f"mile={MILE_PRICE}", f"container-hour={HOUR_PRICE}"]})
        cid = ch["id"]
        opened = wait_for("the channel to open", lambda: _phase(man, cid, "open"), 30)
        assert opened["phase"] == "open"
        wait_for("the carrier to see it open", lambda: _phase(car, cid, "open"), 10)

        r = man.api("POST", f"/api/channels/{cid}/pay",
                    {"units": {"mile": "1"}, "reference": "SHIP-1", "repeat": MILE_UPDATES})
        assert r["acked_nonce_sent"] >= MILE_UPDATES, r
        car.api("POST", f"/api/channels/{cid}/pay",
                {"units": {"container-hour": "1"}, "repeat": HOURS})

        man.api("POST", f"/api/channels/{cid}/close", {})
        final = wait_for("the channel to settle", lambda: _phase(man, cid, "settled"), 30,
                         interval_s=0.2)
        wait_for("the carrier to see it settled", lambda: _phase(car, cid, "settled"), 10)
        assert clearing.wait_idle(15), "the clearing never caught up"
        assert clearing.errors == []

        # -- what the channel says, and the payouts computed here ------------------------------
        sent_m, sent_c = MILE_PRICE * MILE_UPDATES, HOUR_PRICE * HOURS
        owed = {"manufacturer": Decimal(DEPOSIT["manufacturer"]) / 100 - sent_m + sent_c,
                "carrier": Decimal(DEPOSIT["carrier"]) / 100 - sent_c + sent_m}
        payee = max(owed, key=lambda w: owed[w] - Decimal(DEPOSIT[w]) / 100)
        payer = "manufacturer" if payee == "carrier" else "carrier"
        total = sum(DEPOSIT.values())
        payout = {payee: int((owed[payee] * 100).to_integral_value(ROUND_FLOOR))}
        payout[payer] = total - payout[payee]
        assert payee == "carrier"
        assert payout == {"carrier": 11_942, "manufacturer": 498_058}
        statement = car.api("GET", f"/api/channels/{cid}/statement")
        assert statement["phase"] == "settled"
        assert Decimal(statement["received"]["precise"]) == sent_m
        assert Decimal(statement["sent"]["precise"]) == sent_c
        assert final["phase"] == "settled"
        channel_id = bytes.fromhex(cid)
        party = {"manufacturer": 0, "carrier": 1}
        side = {"manufacturer": "opener", "carrier": "peer"}
        for node in (man, car):
            seen = {(t["purpose"], t["party"], t["amount"]["amount"], t["amount"]["currency"],
                     t["reference"], t["status"])
                    for t in node.api("GET", f"/api/channels/{cid}/statement")["transfers"]}
            assert seen == {
                (purpose.value, side[who], f"{amount[who] / 100:.2f}", "USD",
                 bank_reference(channel_id, purpose, party[who]), "booked")
                for purpose, amount in ((Purpose.DEPOSIT, DEPOSIT), (Purpose.PAYOUT, payout))
                for who in party}, (node.name, seen)

        # -- what the bank says ----------------------------------------------------------------
        after = {who: bank.balances()[ACCOUNT_ID[who]] for who in ACCOUNT_ID}
        for who in ("manufacturer", "carrier"):
            assert after[who] - before[who] == payout[who] - DEPOSIT[who], (who, before, after)
        assert after["escrow"] == 0
        assert payout["manufacturer"] + payout["carrier"] == total
        assert sum(after.values()) == sum(before.values())

        expected = {  # (originator, receiver routing, receiver account, cents, addenda 05)
            (ACCOUNT_NUMBER[who], ROUTING, ACCOUNT_NUMBER["escrow"], DEPOSIT[who],
             bank_reference(channel_id, Purpose.DEPOSIT, party[who])) for who in party
        } | {
            (ACCOUNT_NUMBER["escrow"], ROUTING, ACCOUNT_NUMBER[who], payout[who],
             bank_reference(channel_id, Purpose.PAYOUT, party[who])) for who in party
        }
        files = gateway.posted()
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
        assert len(clearing.relayed) == 4
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
    except BaseException:
        _dump(cluster, bank, clearing)
        raise
    finally:
        cluster.stop()
        clearing.stop()
        gateway.stop()


def _phase(node: NodeHandle, cid: str, phase: str) -> dict[str, Any] | None:
    state = node.api("GET", f"/api/channels/{cid}")
    return state if state["phase"] == phase else None


def _dump(cluster: Cluster, bank: BankClient, clearing: Clearing) -> None:
    for handle in cluster.nodes.values():
        print(f"===== {handle.name}\n{handle.tail(30)}")
    print("===== clearing errors", *clearing.errors, sep="\n")
    print("===== advanced", clearing.advanced)
    try:
        print("===== payments", bank.payments())
        print("===== credits", bank.credits())
        print("===== balances", bank.balances())
    except Exception as exc:  # the bank may be what failed
        print("bank unreachable:", exc)
