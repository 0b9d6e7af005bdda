"""A sandbox bank, an arbiter and two companies as real processes, for the e2e suites."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.cluster import Cluster, NodeHandle
from node.provision import balances, open_sandbox_account

ESCROW, MANUFACTURER, CARRIER = "escrow", "manufacturer", "carrier"


@dataclass
class Companies:
    cluster: Cluster
    arbiter: NodeHandle
    manufacturer: NodeHandle
    carrier: NodeHandle

    def balances(self) -> dict[str, int]:
        return asyncio.run(balances(self.cluster.bank_url))

    def open_channel(self, **extra: Any) -> str:
        body = {"peer": self.carrier.node_id, "arbiter": self.arbiter.node_id,
                "deposit": "5000.00 EUR", "peer_deposit": "100.00 EUR",
                "tariff": ["km=0.0123", "container-hour=1.75"], **extra}
        cid: str = self.manufacturer.api("POST", "/api/channels", body)["id"]
        wait_for(lambda: self.manufacturer.api("GET", f"/api/channels/{cid}")["phase"] == "open"
                 and self.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "open",
                 "the channel to open on both sides")
        return cid


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def companies(root: Path, *, manufacturer_balance: int = 1_000_000,
              carrier_balance: int = 50_000) -> Iterator[Companies]:
    cluster = Cluster(root)
    try:
        cluster.start_bank()

        async def provision() -> list[dict[str, Any]]:
            specs = [(ESCROW, "Escrow Agent", "40000100000001", 0),
                     (MANUFACTURER, "Manufacturer GmbH", "40000100000002",
                      manufacturer_balance),
                     (CARRIER, "Carrier Ltd", "40000100000003", carrier_balance)]
            return [await open_sandbox_account(
                bank_url=cluster.bank_url, directory=root / f"bank-keys-{acct}",
                account_id=acct, name=name, identification=ident,
                opening_balance_minor=balance) for acct, name, ident, balance in specs]

        escrow_bank, man_bank, car_bank = asyncio.run(provision())
        arbiter = cluster.add_node("arbiter", role="arbiter", bank=escrow_bank)
        manufacturer = cluster.add_node("manufacturer", bank=man_bank)
        carrier = cluster.add_node("carrier", bank=car_bank, allow=[manufacturer.node_id])
        for handle in (arbiter, manufacturer, carrier):
            handle.start()
        for handle in (manufacturer, carrier):
            handle.api("POST", "/api/peers", {"url": arbiter.url})
        manufacturer.api("POST", "/api/peers", {"url": carrier.url})
        carrier.api("POST", "/api/peers", {"url": manufacturer.url})
        yield Companies(cluster, arbiter, manufacturer, carrier)
    finally:
        cluster.stop()
