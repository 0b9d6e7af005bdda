"""Network faults (issue 14): the two companies in their own network namespaces behind veth
pairs, the arbiter and the sandbox bank on the bridge (tests/faults/netns.py). A slow, lossy
link and a partition between payer and payee: the stream resumes and every update is
acknowledged once. A partition between payer and payee, and then between the payer and the
arbiter: the payee's unilateral close and the payer's watcher still bring the honest outcome
within the dispute window.

This kernel's ``tc`` may lack ``netem`` (``sch_netem``); the slow, lossy link is then ``tbf``:
a low rate with a short queue, which delays packets and drops what overflows it (the test prints
which it used). Skipped, saying why, where namespaces cannot be made (not root, no ``ip``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from node.cluster import ClusterError
from node.provision import balances, open_sandbox_account
from tests.faults.netns import Namespace, Net, NetNode, netem_available, netns_available, network

WHY_NOT = netns_available()
pytestmark = pytest.mark.skipif(WHY_NOT is not None,
                                reason=f"network-fault tests skipped: {WHY_NOT}")

SHORT_WINDOWS = {"policy": {"min_dispute_window_ms": 2_000, "watch_interval_ms": 200}}


@dataclass
class Companies:
    net: Net
    bank_url: str
    arbiter: NetNode
    man: NetNode
    car: NetNode
    ns_man: Namespace
    ns_car: Namespace

    def balances(self) -> dict[str, int]:
        return asyncio.run(balances(self.bank_url))

    def show(self, node: NetNode, cid: str) -> dict[str, Any]:
        shown: dict[str, Any] = node.api("GET", f"/api/channels/{cid}")
        return shown

    def open_channel(self, **extra: Any) -> str:
        cid: str = self.man.api("POST", "/api/channels", {
            "peer": self.car.node_id, "arbiter": self.arbiter.node_id,
            "deposit": "5000.00 EUR", "peer_deposit": "100.00 EUR",
            "tariff": ["km=0.0123", "container-hour=1.75"], **extra})["id"]
        wait_for(lambda: self.show(self.man, cid)["phase"] == "open"
                 and self.show(self.car, cid)["phase"] == "open", "the channel to open", 60)
        return cid

    def dump(self) -> None:
        for node in (self.arbiter, self.man, self.car):
            print(f"===== {node.name}\n{node.tail(25)}")


def wait_for(check: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ClusterError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="module")
def cos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Companies]:
    """One topology for the module: each test opens its own channel and heals what it broke."""
    with network(tmp_path_factory.mktemp("net")) as net:
        ns_man, ns_car = net.namespace("man", 2), net.namespace("car", 3)
        bank_url = net.start_bank()

        async def provision() -> list[dict[str, Any]]:
            specs = [("escrow", "Escrow Agent", "40000100000001", 0),
                     ("manufacturer", "Manufacturer GmbH", "40000100000002", 1_000_000),
                     ("carrier", "Carrier Ltd", "40000100000003", 50_000)]
            return [await open_sandbox_account(
                bank_url=bank_url, directory=net.root / f"bank-keys-{acct}", account_id=acct,
                name=name, identification=ident, opening_balance_minor=balance)
                for acct, name, ident, balance in specs]

        escrow, man_bank, car_bank = asyncio.run(provision())
        arbiter = net.add_node("arbiter", host=10, ns=None, role="arbiter", bank=escrow,
                               settings=SHORT_WINDOWS)
        man = net.add_node("manufacturer", host=2, ns=ns_man, bank=man_bank,
                           settings=SHORT_WINDOWS)
        car = net.add_node("carrier", host=3, ns=ns_car, bank=car_bank, settings=SHORT_WINDOWS,
                           allowed=[{"node_id": man.node_id, "max_peer_deposit": "100.00 EUR"}])
        for node in (arbiter, man, car):
            node.proc.start()
        for node in (man, car):
            node.api("POST", "/api/peers", {"url": arbiter.url})
        man.api("POST", "/api/peers", {"url": car.url})
        car.api("POST", "/api/peers", {"url": man.url})
        c = Companies(net, bank_url, arbiter, man, car, ns_man, ns_car)
        try:
            yield c
        except BaseException:
            c.dump()
            raise


def _partition(a: Namespace, b: Namespace) -> None:
    a.partition(b.address)
    b.partition(a.address)


def _heal(a: Namespace, b: Namespace) -> None:
    a.heal(b.address)
    b.heal(a.address)


def test_streams_resume_through_a_slow_lossy_link_and_a_partition(cos: Companies) -> None:
    cid = cos.open_channel()
    netem = netem_available(cos.ns_car.name)
    print("link faults with", "netem" if netem else "tbf (no sch_netem in this kernel)")
    # slow links both ways with short queues: delay, and drops when a burst overflows them
    for ns in (cos.ns_man, cos.ns_car):
        ns.shape(rate="1mbit", latency_ms=60, limit_bytes=4_000, loss_pct=5, netem=netem)
    started = time.monotonic()
    paid = cos.man.api("POST", f"/api/channels/{cid}/pay", {
        "units": {"km": "1"}, "reference": "SLOW-LINK", "repeat": 1_500}, timeout_s=120)
    print(f"1,500 updates over the shaped links in {time.monotonic() - started:.1f} s")
    assert paid["acked_nonce_sent"] == 1_500
    dropped = 0
    for ns in (cos.ns_man, cos.ns_car):
        stats = ns.exec("tc", "-s", "qdisc", "show", "dev", ns.dev).stdout
        print(ns.name, " ".join(stats.split()))
        dropped += int(stats.split("dropped ", 1)[1].split(",", 1)[0])
        ns.unshape()
    assert dropped > 0, "the shaped links dropped nothing: no loss was tested"
    assert cos.show(cos.car, cid)["nonce_received"] == 1_500

    # a partition between payer and payee: what is sent meanwhile waits, nothing is acked
    _partition(cos.ns_man, cos.ns_car)
    sent = cos.man.api("POST", f"/api/channels/{cid}/pay", {
        "units": {"km": "1"}, "reference": "PARTITIONED", "repeat": 500,
        "wait": False})["nonce_sent"]
    assert sent == 2_000
    time.sleep(2.0)
    assert cos.show(cos.man, cid)["acked_nonce_sent"] == 1_500
    assert cos.show(cos.car, cid)["nonce_received"] == 1_500
    _heal(cos.ns_man, cos.ns_car)
    wait_for(lambda: cos.show(cos.man, cid)["acked_nonce_sent"] == sent,
             "the stream to resume after the partition", 60)
    shown = cos.show(cos.car, cid)
    assert shown["nonce_received"] == sent
    assert shown["received"]["precise"] == "24.60"  # 2,000 km × 0.0123 EUR, each once


def test_a_partitioned_payee_closes_alone_and_the_watcher_still_brings_the_honest_outcome(
        cos: Companies) -> None:
    cid = cos.open_channel(dispute_window="8s")
    funded = cos.balances()
    cos.man.api("POST", f"/api/channels/{cid}/pay",
                {"units": {"km": "1"}, "reference": "SHIP-1", "repeat": 500})
    cos.car.api("POST", f"/api/channels/{cid}/pay",
                {"units": {"container-hour": "1"}, "reference": "RETURN", "repeat": 3})
    # payer and payee cannot reach each other; the payer cannot reach the arbiter either
    _partition(cos.ns_man, cos.ns_car)
    cos.ns_man.partition(cos.arbiter.host)
    forced = cos.car.api("POST", f"/api/channels/{cid}/close", {"force": True})
    assert forced["phase"] == "disputed"
    deadline_at = time.monotonic() + 8
    time.sleep(2.5)
    # the payer's link to the arbiter comes back inside the window; its watcher hands in the
    # carrier's proofs (5.25 EUR owed to it) before the window closes
    cos.ns_man.heal(cos.arbiter.host)
    assert time.monotonic() < deadline_at
    wait_for(lambda: cos.show(cos.man, cid)["phase"] == "settled"
             and cos.show(cos.car, cid)["phase"] == "settled",
             "the dispute window to end and the payouts to book", 90)
    final = cos.balances()
    assert final["manufacturer"] - funded["manufacturer"] == 500_000 - 615 + 525
    assert final["carrier"] - funded["carrier"] == 10_000 + 615 - 525
    assert final["escrow"] == funded["escrow"] - 510_000  # this channel's deposits, paid out
    _heal(cos.ns_man, cos.ns_car)
