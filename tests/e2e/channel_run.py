"""The channel run the settlement end-to-end tests share, whatever rail carries the money.

An arbiter and two companies (manufacturer, carrier) as real ``meterline`` daemons, each with the
``[bank]`` config the test gives, talking to mock-bank through a
:class:`~tests.e2e.mockbank_clearing.Gateway` while a :class:`~tests.e2e.mockbank_clearing.Clearing`
carries each booked debit across. The manufacturer opens a channel with two tariff lines, pays
one line's updates, the carrier pays the other's back, the manufacturer closes, and the run waits
until both sides see it settled and the clearing has nothing left to do.

What stays in each test is what its scheme alone says: the accounts it sets up, the files the
nodes posted, the bank's acknowledgements.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from node.cluster import Cluster, NodeHandle
from protocol.references import Purpose, bank_reference
from tests.e2e.mockbank_clearing import BankClient, Clearing, DropFolder, Gateway
from tests.support import free_port, running, venv_bin

PARTY = {"manufacturer": 0, "carrier": 1}
"""Each company's party index in the channel (the opener is 0)."""
SIDE = {"manufacturer": "opener", "carrier": "peer"}
DEPOSIT = {"manufacturer": 500_000, "carrier": 10_000}
"""What each company puts in, in minor units of the test's currency (cents)."""
OPENING = {"manufacturer": 1_000_000, "carrier": 100_000, "escrow": 0}
"""Each mock-bank account's opening balance, in minor units."""
ACCOUNT_ID = {"manufacturer": "MANUFACTURER", "carrier": "CARRIER", "escrow": "ESCROW"}
"""Each party's account id at mock-bank."""


@dataclass(frozen=True)
class Line:
    """One tariff line and how many single-unit updates are paid on it."""

    unit: str
    price: Decimal
    count: int

    @property
    def total(self) -> Decimal:
        return self.price * self.count


@dataclass
class ChannelRun:
    """A settled channel and what ran it."""

    gateway: Gateway
    clearing: Clearing
    cluster: Cluster
    arb: NodeHandle
    man: NodeHandle
    car: NodeHandle
    cid: str
    sent_m: Decimal
    """What the manufacturer paid over the channel."""
    sent_c: Decimal
    """What the carrier paid back."""

    @property
    def channel_id(self) -> bytes:
        return bytes.fromhex(self.cid)


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


@contextmanager
def mock_bank(tmp_path: Path, *extra: str) -> Iterator[BankClient]:
    """A mock-bank process whose clock starts at 08:00 today (real UTC date); `extra` are
    more of its options."""
    port = free_port()
    today = dt.datetime.now(dt.UTC).date()
    argv = [venv_bin("mock-bank"), "--host", "127.0.0.1", "--port", str(port),
            "--db", str(tmp_path / "mock-bank.sqlite"), "--clock", f"{today}T08:00", "-q",
            *extra]
    with running(argv, port=port, log=tmp_path / "mock-bank.log"):
        yield BankClient(f"http://127.0.0.1:{port}")


@contextmanager
def run_two_company_channel(
        tmp_path: Path, bank: BankClient,
        bank_config: Callable[[str, str], dict[str, Any]], *,
        currency: str, forward: Line, back: Line, deposit: dict[str, int] = DEPOSIT,
        files: DropFolder | None = None, settles: bool = True,
) -> Iterator[ChannelRun]:
    """Run the channel to settled and yield it; the body's failures dump the logs.

    `bank_config(gateway_url, who)` is the ``[bank]`` table of ``who`` (``"escrow"`` for the
    arbiter). `deposit` is in minor units; the manufacturer pays `forward`, the carrier `back`.
    Everything is stopped when the body is done. `files` is where the clearing reads the
    payment files when the nodes send them to a folder (by default: what the gateway relayed).
    With `settles` False the run yields once both sides are closed (the test makes the bank
    return the payouts, so nothing settles yet).
    """
    gateway = Gateway(bank.base).start()
    clearing = Clearing(bank, files or gateway).start()
    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster")
    try:
        arb = cluster.add_node("arbiter", role="arbiter",
                               bank=bank_config(gateway.url, "escrow"))
        man = cluster.add_node("manufacturer", bank=bank_config(gateway.url, "manufacturer"))
        car = cluster.add_node("carrier", bank=bank_config(gateway.url, "carrier"),
                               allowed=[{"node_id": man.node_id, "max_peer_deposit":
                                         f"{deposit['carrier'] / 100:.2f} {currency}"}])
        for node in (arb, man, car):
            node.start()
        for node in (man, car):
            node.api("POST", "/api/peers", {"url": arb.url})
        man.api("POST", "/api/peers", {"url": car.url})
        car.api("POST", "/api/peers", {"url": man.url})

        ch = man.api("POST", "/api/channels", {
            "peer": car.node_id, "arbiter": arb.node_id,
            "deposit": f"{deposit['manufacturer'] / 100:.2f} {currency}",
            "peer_deposit": f"{deposit['carrier'] / 100:.2f} {currency}",
            "tariff": [f"{forward.unit}={forward.price}", f"{back.unit}={back.price}"]})
        cid = ch["id"]
        opened = wait_for("the channel to open", lambda: _phase(man, cid, "open"), 30)
        assert opened["phase"] == "open"
        wait_for("the carrier to see it open", lambda: _phase(car, cid, "open"), 10)

        r = man.api("POST", f"/api/channels/{cid}/pay",
                    {"units": {forward.unit: "1"}, "reference": "SHIP-1",
                     "repeat": forward.count})
        assert r["acked_nonce_sent"] >= forward.count, r
        car.api("POST", f"/api/channels/{cid}/pay",
                {"units": {back.unit: "1"}, "repeat": back.count})

        man.api("POST", f"/api/channels/{cid}/close", {})
        if not settles:
            for node in (man, car):
                wait_for("the channel to close", lambda n=node: _phase(n, cid, "closed"), 30)
            yield ChannelRun(gateway=gateway, clearing=clearing, cluster=cluster, arb=arb,
                             man=man, car=car, cid=cid, sent_m=forward.total,
                             sent_c=back.total)
            return
        final = wait_for("the channel to settle", lambda: _phase(man, cid, "settled"), 30,
                         interval_s=0.2)
        wait_for("the carrier to see it settled", lambda: _phase(car, cid, "settled"), 10)
        assert clearing.wait_idle(15), "the clearing never caught up"
        assert clearing.errors == []
        assert final["phase"] == "settled"

        run = ChannelRun(gateway=gateway, clearing=clearing, cluster=cluster, arb=arb,
                         man=man, car=car, cid=cid, sent_m=forward.total, sent_c=back.total)
        statement = car.api("GET", f"/api/channels/{cid}/statement")
        assert statement["phase"] == "settled"
        assert Decimal(statement["received"]["precise"]) == run.sent_m
        assert Decimal(statement["sent"]["precise"]) == run.sent_c
        yield run
    except BaseException:
        _dump(cluster, bank, clearing)
        raise
    finally:
        cluster.stop()
        clearing.stop()
        gateway.stop()


def expected_payouts(deposit: dict[str, int], sent_m: Decimal, sent_c: Decimal
                     ) -> tuple[str, dict[str, int]]:
    """(payee, payout in minor units), computed here: the net payee's balance rounded down to
    the cent, the payer gets the rest of the deposits."""
    owed = {"manufacturer": Decimal(deposit["manufacturer"]) / 100 - sent_m + sent_c,
            "carrier": Decimal(deposit["carrier"]) / 100 - sent_c + sent_m}
    payee = max(owed, key=lambda w: owed[w] - Decimal(deposit[w]) / 100)
    payer = "manufacturer" if payee == "carrier" else "carrier"
    payout = {payee: int((owed[payee] * 100).to_integral_value(ROUND_FLOOR))}
    payout[payer] = sum(deposit.values()) - payout[payee]
    return payee, payout


def check_settlement_transfers(run: ChannelRun, deposit: dict[str, int],
                               payout: dict[str, int], *, currency: str | None = None) -> None:
    """Each node's statement lists both deposits and both payouts, booked, under their bank
    references; with `currency`, each transfer's currency is checked as well."""
    def shape(purpose: str, party: str, amount: dict[str, str], reference: str,
              status: str) -> tuple[str, ...]:
        cur = () if currency is None else (amount["currency"],)
        return (purpose, party, amount["amount"], *cur, reference, status)

    want = {
        shape(purpose.value, SIDE[who],
              {"amount": f"{amount[who] / 100:.2f}", "currency": currency or ""},
              bank_reference(run.channel_id, purpose, PARTY[who]), "booked")
        for purpose, amount in ((Purpose.DEPOSIT, deposit), (Purpose.PAYOUT, payout))
        for who in PARTY}
    for node in (run.man, run.car):
        seen = {shape(t["purpose"], t["party"], t["amount"], t["reference"], t["status"])
                for t in node.api("GET", f"/api/channels/{run.cid}/statement")["transfers"]}
        assert seen == want, (node.name, seen)


def balances(bank: BankClient) -> dict[str, int]:
    """Each party's balance at mock-bank, in minor units."""
    held = bank.balances()
    return {who: held[acct] for who, acct in ACCOUNT_ID.items()}


def check_balances(before: dict[str, int], after: dict[str, int], deposit: dict[str, int],
                   payout: dict[str, int]) -> None:
    """Each company's account moved by its payout less its deposit; the escrow is empty."""
    for who in ("manufacturer", "carrier"):
        assert after[who] - before[who] == payout[who] - deposit[who], (who, before, after)
    assert after["escrow"] == 0
    assert payout["manufacturer"] + payout["carrier"] == sum(deposit.values())


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
