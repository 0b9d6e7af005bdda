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

import datetime as dt
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest

from node.cluster import Cluster, NodeHandle
from protocol.references import Purpose, bank_reference
from tests.e2e.mockbank_clearing import (
    BankClient,
    Clearing,
    Gateway,
    iban,
    read_pain001,
)
from tests.support import free_port, running, venv_bin

BIC = "MOCKNL2A"
KM_PRICE = Decimal("0.012345")
HOUR_PRICE = Decimal("1.755")
KM_UPDATES = 10_000
HOURS = 3
DEPOSIT = {"manufacturer": 500_000, "carrier": 10_000}  # minor units (EUR cents)
OPENING = {"manufacturer": 1_000_000, "carrier": 100_000, "escrow": 0}
ACCOUNT_ID = {"manufacturer": "MANUFACTURER", "carrier": "CARRIER", "escrow": "ESCROW"}
HOLDER = {"manufacturer": "Manufacturer B.V.", "carrier": "Carrier GmbH",
          "escrow": "Escrow Agent"}
PAIN002_NS = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"


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
    # Bank time starts this morning: the nodes' files ask for execution today (real UTC date),
    # which is then neither in the past (DT01) nor after the 15:00 cutoff.
    today = dt.datetime.now(dt.UTC).date()
    argv = [venv_bin("mock-bank"), "--host", "127.0.0.1", "--port", str(port),
            "--db", str(tmp_path / "mock-bank.sqlite"), "--clock", f"{today}T08:00", "-q"]
    with running(argv, port=port, log=tmp_path / "mock-bank.log"):
        yield BankClient(f"http://127.0.0.1:{port}")


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
    before = {who: bank.balances()[ACCOUNT_ID[who]] for who in ACCOUNT_ID}
    assert before == OPENING

    gateway = Gateway(bank.base).start()
    clearing = Clearing(bank, gateway).start()
    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster")

    def bank_config(who: str) -> dict[str, Any]:
        return {"rail": "sepa", "url": gateway.url, "scheme": "IBAN",
                "identification": ibans[who], "agent": BIC, "name": HOLDER[who],
                "poll_interval_ms": 200}

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
            "deposit": "5000.00 EUR", "peer_deposit": "100.00 EUR",
            "tariff": [f"km={KM_PRICE}", f"container-hour={HOUR_PRICE}"]})
        cid = ch["id"]
        opened = wait_for("the channel to open", lambda: _phase(man, cid, "open"), 30)
        assert opened["phase"] == "open"
        wait_for("the carrier to see it open", lambda: _phase(car, cid, "open"), 10)

        r = man.api("POST", f"/api/channels/{cid}/pay",
                    {"units": {"km": "1"}, "reference": "SHIP-1", "repeat": KM_UPDATES})
        assert r["acked_nonce_sent"] >= KM_UPDATES, r
        car.api("POST", f"/api/channels/{cid}/pay",
                {"units": {"container-hour": "1"}, "repeat": HOURS})

        man.api("POST", f"/api/channels/{cid}/close", {})
        final = wait_for("the channel to settle", lambda: _phase(man, cid, "settled"), 30,
                         interval_s=0.2)
        wait_for("the carrier to see it settled", lambda: _phase(car, cid, "settled"), 10)
        assert clearing.wait_idle(15), "the clearing never caught up"
        assert clearing.errors == []

        # -- what the channel says -------------------------------------------------------------
        sent_m, sent_c = KM_PRICE * KM_UPDATES, HOUR_PRICE * HOURS
        owed = {"manufacturer": Decimal(DEPOSIT["manufacturer"]) / 100 - sent_m + sent_c,
                "carrier": Decimal(DEPOSIT["carrier"]) / 100 - sent_c + sent_m}
        payee = max(owed, key=lambda w: owed[w] - Decimal(DEPOSIT[w]) / 100)
        payer = "manufacturer" if payee == "carrier" else "carrier"
        total = sum(DEPOSIT.values())
        payout = {payee: int((owed[payee] * 100).to_integral_value(ROUND_FLOOR))}
        payout[payer] = total - payout[payee]
        assert payee == "carrier"
        assert payout == {"carrier": 21818, "manufacturer": 488182}
        statement = car.api("GET", f"/api/channels/{cid}/statement")
        assert statement["phase"] == "settled"
        assert Decimal(statement["received"]["precise"]) == sent_m
        assert Decimal(statement["sent"]["precise"]) == sent_c
        assert final["phase"] == "settled"
        channel_id = bytes.fromhex(cid)
        party = {"manufacturer": 0, "carrier": 1}
        side = {"manufacturer": "opener", "carrier": "peer"}
        for node in (man, car):
            seen = {(t["purpose"], t["party"], t["amount"]["amount"], t["reference"],
                     t["status"])
                    for t in node.api("GET", f"/api/channels/{cid}/statement")["transfers"]}
            assert seen == {
                (purpose.value, side[who], f"{amount[who] / 100:.2f}",
                 bank_reference(channel_id, purpose, party[who]), "booked")
                for purpose, amount in ((Purpose.DEPOSIT, DEPOSIT), (Purpose.PAYOUT, payout))
                for who in party}, (node.name, seen)

        # -- what the bank says ----------------------------------------------------------------
        after = {who: bank.balances()[ACCOUNT_ID[who]] for who in ACCOUNT_ID}
        for who in ("manufacturer", "carrier"):
            assert after[who] - before[who] == payout[who] - DEPOSIT[who], (who, before, after)
        assert after["escrow"] == 0
        assert payout["manufacturer"] + payout["carrier"] == total

        expected = {  # (debtor, creditor, amount, reference) of every transfer the run made
            (ibans[who], ibans["escrow"], DEPOSIT[who],
             bank_reference(channel_id, Purpose.DEPOSIT, party[who])) for who in party
        } | {
            (ibans["escrow"], ibans[who], payout[who],
             bank_reference(channel_id, Purpose.PAYOUT, party[who])) for who in party
        }
        files = gateway.posted()
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
        assert len(clearing.relayed) == 4

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
