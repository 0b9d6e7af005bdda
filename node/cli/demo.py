"""`meterline demo`: two companies, one channel, a day of freight, settled at the bank."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import click

from node.cli.fees import compare
from node.cli.render import amount, table
from node.cli.statement import as_table

DEPOSIT = Decimal("5000.00")  # EUR, the manufacturer's deposit
CHUNK = 1_000  # updates per admin call; each update is still signed, verified and receipted


@dataclass(frozen=True)
class Shipment:
    reference: str
    route: str
    km: int
    container_hours: int


DAY = (
    Shipment("SHIP-4711", "Hamburg → Munich", 775, 19),
    Shipment("SHIP-4712", "Rotterdam → Lyon", 1020, 13),
    Shipment("SHIP-4713", "Antwerp → Milan", 1095, 16),
    Shipment("SHIP-4714", "Bremen → Vienna", 1050, 12),
    Shipment("SHIP-4715", "Duisburg → Prague", 690, 8),
)
KM_STEP = Decimal("0.25")  # one signed update per quarter kilometre
HOUR_STEP = Decimal("0.05")  # one signed update per 3 minutes of container time


_TO_STDERR = {"on": False}
"""With --json the story goes to stderr and stdout carries only the JSON summary."""


def _echo(text: str, **kwargs: Any) -> None:
    click.secho(text, err=_TO_STDERR["on"], **kwargs)


def step(text: str) -> None:
    _echo(f"\n▸ {text}", bold=True)


def say(text: str) -> None:
    _echo(f"  {text}")


def progress(text: str) -> None:
    stream = sys.stderr if _TO_STDERR["on"] else sys.stdout
    if stream.isatty():
        _echo(f"\r\x1b[2K  {text}", nl=False)


async def bank_transactions(bank_url: str, account: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(
        f"{bank_url}/_sandbox/accounts/{account}"
    ) as resp:
        data = await resp.json()
    return list(data.get("transactions", []))


def euros(cents: int) -> str:
    return f"{Decimal(cents) / 100:,.2f} EUR"


def meter_day(c: Any, cid: str) -> tuple[int, Decimal, Decimal, float]:
    """Stream the day's usage; returns (updates, km, container-hours)."""
    man = c.manufacturer
    updates = 0
    started = time.monotonic()
    total_km = Decimal(0)
    total_hours = Decimal(0)
    owed: dict[str, Any] = {}
    for shipment in DAY:
        legs = [("km", KM_STEP, int(shipment.km / KM_STEP)),
                ("container-hour", HOUR_STEP, int(shipment.container_hours / HOUR_STEP))]
        for unit, each, count in legs:
            done = 0
            while done < count:
                n = min(CHUNK, count - done)
                owed = man.api("POST", f"/api/channels/{cid}/pay",
                               {"units": {unit: str(each)}, "reference": shipment.reference,
                                "repeat": n})
                done += n
                updates += n
                rate = updates / max(time.monotonic() - started, 1e-9)
                progress(f"{shipment.reference} {shipment.route:<20} {unit:<14} "
                         f"{done * each:>8} / {count * each:<8}  {updates:>6} updates  "
                         f"{rate:>7,.0f} updates/s  owed {amount(owed['sent'])}")
        total_km += shipment.km
        total_hours += shipment.container_hours
        if (sys.stderr if _TO_STDERR["on"] else sys.stdout).isatty():
            _echo("")
        say(f"{shipment.reference} {shipment.route:<20} {shipment.km:>5} km, "
            f"{shipment.container_hours:>3} container-hours — owed so far "
            f"{amount(owed['sent'])}")
    elapsed = time.monotonic() - started
    say(f"{updates:,} signed updates in {elapsed:.1f} s ({updates / elapsed:,.0f} updates/s), "
        "each verified, committed by the carrier and covered by its signed receipt")
    return updates, total_km, total_hours, elapsed


def keep_commands(c: Any, cid: str, root: Path) -> list[str]:
    """Commands that work on the kept daemons (the e2e test runs each of them)."""
    bank_dir = root.resolve() / "bank"
    arbiter, man, car = (h.directory.resolve() for h in (c.arbiter, c.manufacturer, c.carrier))
    return [
        f"meterline channel list --data-dir {car}",
        f"meterline channel show {cid[:12]} --data-dir {man}",
        f"meterline payments {cid[:12]} --data-dir {car}",
        f"meterline statement {cid[:12]} --data-dir {car}",
        f"meterline node info --data-dir {arbiter}",
        f"curl -s {c.cluster.bank_url}/_sandbox/accounts",
        "and stop them with:",
        *(f"meterline node stop --data-dir {d}" for d in (car, man, arbiter)),
        f"meterline bank stop --data-dir {bank_dir}",
    ]


@click.command()
@click.option("--keep", is_flag=True, help="Leave the daemons running and say how to reach them.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Where to put the demo's data [default: a new temporary dir].")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON summary on stdout (the story goes to stderr).")
def demo(keep: bool, directory: Path | None, as_json: bool) -> None:
    """Two companies on loopback: open a channel, meter a day of freight, settle at the bank.

    Starts a sandbox bank, an arbiter, a manufacturer and a carrier (each a real process with
    its own key and SQLite database), opens a channel funded by the manufacturer, streams tens of
    thousands of signed per-kilometre and per-container-hour updates, closes cooperatively,
    waits for the bank to book the payouts and prints the statement and the bank transfers.

    \b
    Example:
      meterline demo
      meterline demo --keep
    """
    from node.cluster import CARRIER, ESCROW, MANUFACTURER, ClusterError, start_companies, wait_for

    _TO_STDERR["on"] = as_json
    root = directory or Path(tempfile.mkdtemp(prefix="meterline-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    step(f"starting a bank, an arbiter and two companies in {root}")
    try:
        c = start_companies(root, manufacturer_balance=1_000_000, carrier_balance=0, say=say)
    except ClusterError as exc:
        raise click.ClickException(f"could not start the demo: {exc}") from None
    stopped = False
    try:
        start = c.balances()
        step("the manufacturer opens a channel to the carrier through the arbiter")
        say("tariff: km = 0.0123 EUR, container-hour = 1.75 EUR; deposit 5,000.00 EUR")
        cid = c.manufacturer.api("POST", "/api/channels", {
            "peer": c.carrier.node_id, "arbiter": c.arbiter.node_id, "deposit": "5000.00 EUR",
            "tariff": ["km=0.0123", "container-hour=1.75"], "dispute_window": "24h"})["id"]
        say(f"channel {cid}")
        say("the carrier accepted (manufacturer is on its allow-list); deposit paid by bank…")
        wait_for(lambda: c.manufacturer.api("GET", f"/api/channels/{cid}")["phase"] == "open",
                 "the arbiter to confirm the deposit")
        say("the arbiter saw the deposit on its escrow statement and confirmed it: channel open")

        step("a day of freight, metered unit by unit")
        updates, km, hours, elapsed = meter_day(c, cid)

        step("closing: both sign the final state, the arbiter pays out")
        c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
        wait_for(lambda: c.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "settled"
                 and c.manufacturer.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
                 "the bank to book the payouts")
        say("the arbiter's bank booked both payouts: channel settled")

        step("the carrier's statement")
        statement = c.carrier.api("GET", f"/api/channels/{cid}/statement")
        _echo(as_table(statement))

        step("what moved at the bank")
        rows = []
        for account in (MANUFACTURER, ESCROW, CARRIER):
            for t in asyncio.run(bank_transactions(c.cluster.bank_url, account)):
                sign = "+" if t["indicator"] == "Credit" else "-"
                rows.append((account, f"{sign}{euros(t['amount_minor'])}",
                             t.get("reference") or "", t.get("counterparty_name") or ""))
        _echo(table(["ACCOUNT", "AMOUNT", "REFERENCE", "COUNTERPARTY"], rows))
        end = c.balances()
        moved = {k: end[k] - start[k] for k in end}
        say(f"manufacturer {euros(moved[MANUFACTURER])}, carrier {euros(moved[CARRIER])}, "
            f"escrow {euros(moved[ESCROW])}: sums to {euros(sum(moved.values()))}")
        owed = c.carrier.api("GET", f"/api/channels/{cid}")["received"]
        say(f"{updates:,} metered updates ({km} km, {hours} container-hours, "
            f"{amount(owed)}) became 1 deposit and 2 payouts")

        step("what paying this usage costs, by each way of paying (assumptions stated)")
        fees = compare(Decimal(owed["amount"]), updates, DEPOSIT)
        for line in fees.lines(updates, DEPOSIT):
            say(line)
        if as_json:
            click.echo(json.dumps({
                "channel": cid,
                "updates": updates,
                "updates_per_s": round(updates / elapsed, 1),
                "km": str(km),
                "container_hours": str(hours),
                "paid": owed,
                "statement": statement,
                "bank_balance_changes_minor": moved,
                "bank_transactions": [
                    {"account": a, "amount": amt, "reference": ref, "counterparty": cp}
                    for a, amt, ref, cp in rows],
                "fees_if_paid_per_update": fees.as_json(),
                "data_dir": str(root) if keep else None,
            }, indent=2, sort_keys=True))
        if keep:
            step("the daemons keep running; try")
            for line in keep_commands(c, cid, root):
                say(line)
        else:
            c.cluster.stop()
            stopped = True
            shutil.rmtree(root, ignore_errors=True) if directory is None else None
            step("done: daemons stopped")
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; the daemons were stopped") from None
    finally:
        if not keep and not stopped:
            c.cluster.stop()
