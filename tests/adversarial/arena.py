"""The demo topology (node.cluster) with the hooks an attack needs.

Like :func:`node.cluster.start_companies` — a sandbox bank, an arbiter, a manufacturer and a
carrier as real ``meterline`` processes on loopback — plus:

- an extra bank account for the attacker (``attacker``), so a theft would show on the bank;
- optionally the arbiter behind an :class:`~tests.adversarial.toolkit.HttpProxy` (its public URL
  and the URL both companies add it by go through the proxy);
- optionally the carrier's public URL (its callback for the arbiter) through a
  :class:`~tests.adversarial.toolkit.TcpProxy` that the test can cut;
- short dispute windows and watch intervals through ``[policy]`` (and ``[limits]`` read
  timeouts when this build knows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.cluster import (
    CARRIER,
    ESCROW,
    MANUFACTURER,
    Cluster,
    ClusterError,
    Companies,
    NodeHandle,
    wait_for,
    wait_port,
)
from node.config import CONFIG_FILE, Limits, Policy
from protocol.payout import cumulative_shares

__all__ = ["ATTACKER", "CARRIER", "ESCROW", "MANUFACTURER", "Arena", "arena", "wait_for"]

ATTACKER = "attacker"
"""A bank account the attacker controls (opened at the sandbox bank, balance 0)."""

POLICY = {"min_dispute_window_ms": 4_000, "watch_interval_ms": 200}
"""A 4 s minimum (20 watch intervals): windows of 6–10 s keep the suite fast."""
TARIFF = ["km=0.0123", "container-hour=1.75"]


def supported(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Only the settings this build's config knows (the read timeouts land with another
    branch; until then the daemons would refuse to start)."""
    known = {"policy": Policy, "limits": Limits}[section].__dataclass_fields__
    return {k: v for k, v in values.items() if k in known}


def set_public_url(handle: NodeHandle, url: str) -> None:
    path = handle.directory / CONFIG_FILE
    text, n = re.subn(r'(?m)^public_url = ".*"$', f'public_url = "{url}"', path.read_text())
    assert n == 1, "config.toml has no public_url line"
    path.write_text(text)


@dataclass
class Arena:
    companies: Companies
    arbiter_url: str
    """The URL the companies know the arbiter by (the proxy's, when there is one)."""
    attacker_account: dict[str, Any]
    limits: dict[str, Any] = field(default_factory=dict)
    """The [limits] settings the daemons run with (those this build knows)."""
    proxies: list[Any] = field(default_factory=list)
    """The proxies in front of the arbiter / carrier, in the order asked for."""

    @property
    def cluster(self) -> Cluster:
        return self.companies.cluster

    @property
    def arbiter(self) -> NodeHandle:
        return self.companies.arbiter

    @property
    def manufacturer(self) -> NodeHandle:
        return self.companies.manufacturer

    @property
    def carrier(self) -> NodeHandle:
        return self.companies.carrier

    def balances(self) -> dict[str, int]:
        return self.companies.balances()

    def open_channel(self, *, window: str = "8s") -> str:
        """A channel from the manufacturer to the carrier with 50.00 EUR of the manufacturer's
        and nothing of the carrier's: the payee's money in it is exactly what its proofs say
        (and the carrier's allow-list entry asks it for no deposit)."""
        body = {"peer": self.carrier.node_id, "arbiter": self.arbiter.node_id,
                "deposit": "50.00 EUR", "tariff": TARIFF, "dispute_window": window}
        cid: str = self.manufacturer.api("POST", "/api/channels", body)["id"]
        wait_for(lambda: phase(self.manufacturer, cid) == "open" == phase(self.carrier, cid),
                 "the channel to open on both sides", timeout_s=30)
        return cid

    def pay(self, payer: NodeHandle, cid: str, *, km: int = 0, hours: int = 0,
            repeat: int = 1) -> dict[str, Any]:
        units = {k: str(v) for k, v in (("km", km), ("container-hour", hours)) if v}
        result: dict[str, Any] = payer.api("POST", f"/api/channels/{cid}/pay",
                                           {"units": units, "reference": "WORK",
                                            "repeat": repeat})
        return result

    def escrow(self, cid: str) -> dict[str, Any] | None:
        listing = self.arbiter.api("GET", "/api/escrows")["escrows"]
        return next((e for e in listing if e["id"] == cid), None)


def phase(handle: NodeHandle, cid: str) -> str:
    try:
        return str(handle.api("GET", f"/api/channels/{cid}")["phase"])
    except ClusterError:
        return "unknown"


def wait_settled_at_bank(a: Arena, cid: str, timeout_s: float) -> float:
    """Until the arbiter reports the channel settled (its payouts booked at the bank)."""
    start = time.monotonic()
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        escrow = a.escrow(cid)
        if escrow is not None and escrow["phase"] == "settled":
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"the channel was not settled within {timeout_s:.0f} s; the arbiter "
                         f"holds {a.escrow(cid)}")


def wait_decided(a: Arena, cid: str, timeout_s: float) -> tuple[int, int]:
    """Until the arbiter has decided the payouts; returns them (opener, peer) in cents."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        escrow = a.escrow(cid)
        if escrow is not None and escrow["payouts"] is not None:
            return (cents(escrow["payouts"]["opener"]["amount"]),
                    cents(escrow["payouts"]["peer"]["amount"]))
        time.sleep(0.1)
    raise AssertionError(f"the arbiter decided no payouts within {timeout_s:.0f} s; it holds "
                         f"{a.escrow(cid)}")


def cents(amount: str) -> int:
    whole, _, frac = amount.partition(".")
    return int(whole) * 100 + int(frac.ljust(2, "0"))


def payouts_minor(*, deposit: int, opener_sent: int, peer_sent: int) -> tuple[int, int]:
    """(opener, peer) payouts in cents for a channel where only the opener deposited."""
    p = cumulative_shares(opener_deposit=deposit, peer_deposit=0,  # type: ignore[arg-type]
                        opener_sent=opener_sent, peer_sent=peer_sent,  # type: ignore[arg-type]
                        scale=6, exponent=2)
    return int(p.opener), int(p.peer)


@contextmanager
def arena(root: Path, *, loop: Any = None, arbiter_proxy: Any = None,
          carrier_proxy: Any = None, limits: dict[str, Any] | None = None) -> Iterator[Arena]:
    """Start the four daemons. `arbiter_proxy(loop, port)` / `carrier_proxy(loop, port)` build
    proxies in front of those daemons' peer ports (their public URL becomes the proxy's)."""
    from node.provision import open_sandbox_account

    cluster = Cluster(root)
    proxies: list[Any] = []
    try:
        cluster.start_bank()

        async def provision() -> list[dict[str, Any]]:
            specs = [(ESCROW, "Escrow Agent", "40000100000001", 0),
                     (MANUFACTURER, "Manufacturer GmbH", "40000100000002", 1_000_000),
                     (CARRIER, "Carrier Ltd", "40000100000003", 50_000),
                     (ATTACKER, "Attacker Holdings", "40000100000666", 0)]
            return [await open_sandbox_account(
                bank_url=cluster.bank_url, directory=root / f"bank-keys-{acct}",
                account_id=acct, name=name, identification=ident,
                opening_balance_minor=balance) for acct, name, ident, balance in specs]

        escrow_bank, man_bank, car_bank, attacker_bank = asyncio.run(provision())
        settings: dict[str, dict[str, Any]] = {"policy": supported("policy", POLICY)}
        active_limits = supported("limits", limits or {})
        if active_limits:
            settings["limits"] = active_limits
        with ThreadPoolExecutor(2) as pool:  # `meterline init` is a process each: in parallel
            arbiter_f = pool.submit(cluster.add_node, "arbiter", role="arbiter",
                                    bank=escrow_bank, settings=settings)
            manufacturer = cluster.add_node("manufacturer", bank=man_bank, settings=settings)
            carrier = cluster.add_node("carrier", bank=car_bank, settings=settings,
                                       allow=[manufacturer.node_id])
            arbiter = arbiter_f.result()
        arbiter_url = arbiter.url
        if arbiter_proxy is not None:
            proxy = arbiter_proxy(loop, arbiter.port)
            proxies.append(proxy)
            arbiter_url = proxy.url
            set_public_url(arbiter, proxy.url)
        if carrier_proxy is not None:
            proxy = carrier_proxy(loop, carrier.port)
            proxies.append(proxy)
            set_public_url(carrier, proxy.url)
        start_together([arbiter, manufacturer, carrier])
        for handle in (manufacturer, carrier):
            handle.api("POST", "/api/peers", {"url": arbiter_url})
        manufacturer.api("POST", "/api/peers", {"url": carrier.url})
        carrier.api("POST", "/api/peers", {"url": manufacturer.url})
        yield Arena(Companies(cluster, arbiter, manufacturer, carrier), arbiter_url,
                    attacker_bank, active_limits, proxies)
    finally:
        stop_together([*cluster.nodes.values()])
        cluster.stop()
        for proxy in proxies:
            with contextlib.suppress(Exception):
                proxy.close()


def start_together(handles: list[NodeHandle], timeout_s: float = 60.0) -> None:
    """`Daemon.start` for several daemons at once: launch every process, then wait for each
    to listen (their start-up is mostly imports; the machine has more than one core)."""
    for handle in handles:
        handle.log_path = handle.directory.parent / f"{handle.name}.log"
        with handle.log_path.open("ab") as log:
            handle.process = subprocess.Popen(
                handle.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for handle in handles:
        wait_port(handle.admin_port or handle.port, timeout_s, handle)


def stop_together(handles: list[NodeHandle]) -> None:
    """SIGTERM every daemon first, then wait for each (what `Cluster.stop` does one by one)."""
    running = [h for h in handles if h.process is not None and h.process.poll() is None]
    for handle in running:
        assert handle.process is not None
        handle.process.send_signal(signal.SIGTERM)
    for handle in running:
        assert handle.process is not None
        try:
            handle.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            handle.process.kill()
            handle.process.wait()


def restart(handle: NodeHandle) -> None:
    """Start a daemon the test stopped (the attacker going back to its honest node)."""
    if handle.process is None or handle.process.poll() is not None:
        handle.start()

