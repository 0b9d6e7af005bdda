"""The whole lifecycle through the CLI only: every step is a `meterline` subprocess.

Follows the README quickstart (bank, three daemons, peers, open, accept, pay, statement, close)
and checks each error the CLI promises: an unknown channel prefix, an ambiguous one, a daemon that
is not running, a bad amount, a bad tariff, a closed channel.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node.cluster import Daemon, free_port, wait_for


def run(*args: str, home: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if home is not None:
        env["METERLINE_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    if ok:
        assert proc.returncode == 0, f"meterline {' '.join(args)}:\n{proc.stderr}"
    return proc


def js(*args: str, home: Path | None = None) -> Any:
    return json.loads(run(*args, "--json", home=home).stdout)


def fails(*args: str, home: Path | None = None) -> str:
    proc = run(*args, home=home, ok=False)
    assert proc.returncode != 0, f"meterline {' '.join(args)} should have failed"
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("Error: ")
    return message


@pytest.fixture
def quickstart(tmp_path: Path) -> Any:
    bank_port = free_port()
    bank_url = f"http://127.0.0.1:{bank_port}"
    daemons: list[Daemon] = []
    bank = Daemon("bank", tmp_path / "bank", bank_port, argv=[
        sys.executable, "-m", "node.cli", "bank", "start", "--data-dir", str(tmp_path / "bank"),
        "--listen", f"127.0.0.1:{bank_port}", "--json-logs"])
    bank.start()
    daemons.append(bank)
    homes: dict[str, Path] = {}
    try:
        for name, ident, balance in (("escrow", "40000100000001", "0.00 EUR"),
                                     ("manufacturer", "40000100000002", "10000.00 EUR"),
                                     ("carrier", "40000100000003", "0.00 EUR")):
            run("bank", "open-account", "--bank", bank_url, "--account-id", name,
                "--name", name.title(), "--identification", ident, "--balance", balance,
                "--keys-dir", str(tmp_path / f"{name}-keys"),
                "--out", str(tmp_path / f"{name}-bank.json"))
            port, admin = free_port(), free_port()
            home = tmp_path / name
            role = ["--role", "arbiter"] if name == "escrow" else []
            run("init", "--data-dir", str(home), "--name", name, *role,
                "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
                "--bank-config", str(tmp_path / f"{name}-bank.json"))
            node = Daemon(name, home, port, admin_port=admin, argv=[
                sys.executable, "-m", "node.cli", "node", "start", "--data-dir", str(home),
                "--json-logs"])
            node.start()
            daemons.append(node)
            homes[name] = home
        yield bank_url, homes, {d.name: d for d in daemons}
    finally:
        for d in reversed(daemons):
            d.stop()


def test_lifecycle_through_the_cli(quickstart: Any, tmp_path: Path) -> None:
    _bank_url, homes, daemons = quickstart
    man, car = homes["manufacturer"], homes["carrier"]
    urls = {name: f"http://127.0.0.1:{d.port}" for name, d in daemons.items()}

    status = js("node", "status", home=man)
    assert status["role"] == "node"
    assert status["name"] == "manufacturer"
    assert js("node", "status", home=homes["escrow"])["role"] == "arbiter"

    for home, others in ((man, ("escrow", "carrier")), (car, ("escrow", "manufacturer"))):
        for other in others:
            added = js("peer", "add", urls[other], home=home)
            assert added["name"] == other
    peers = js("peer", "list", home=man)["peers"]
    assert sorted(p["name"] for p in peers) == ["carrier", "escrow"]

    # bad input never gets as far as the peer
    assert "write 12.34 EUR or 12.35 EUR" in fails(
        "channel", "open", "carrier", "--arbiter", "escrow", "--deposit", "12.345 EUR",
        "--tariff", "km=0.01", home=man)
    assert "km=abc" in fails("channel", "open", "carrier", "--arbiter", "escrow",
                             "--deposit", "50.00 EUR", "--tariff", "km=abc", home=man)
    assert "XYZ" in fails("channel", "open", "carrier", "--arbiter", "escrow",
                          "--deposit", "50.00 XYZ", "--tariff", "km=0.01", home=man)

    opened = js("channel", "open", "carrier", "--arbiter", "escrow", "--deposit",
                "5000.00 EUR", "--tariff", "km=0.0123", "--tariff", "container-hour=1.75",
                "--dispute-window", "2h", home=man)
    cid = opened["id"]
    assert opened["phase"] == "proposed"  # the carrier has not allow-listed us
    waiting = js("channel", "list", home=car)["proposals"]
    assert [p["id"] for p in waiting] == [cid]
    accepted = js("channel", "accept", cid[:10], home=car)
    assert accepted["id"] == cid

    wait_for(lambda: js("channel", "show", cid[:12], home=man)["phase"] == "open",
             "the arbiter to confirm the deposit", timeout_s=60)
    show = js("channel", "show", cid[:12], home=man)
    for key in ("id", "peer", "arbiter", "phase", "currency", "deposit", "sent", "received",
                "balance", "nonce_sent", "nonce_received", "acked_nonce_sent", "units",
                "dispute_deadline", "settlement"):
        assert key in show
    assert show["deposit"]["ours"] == {"amount": "5000.00", "currency": "EUR"}

    paid = js("pay", cid[:8], "--units", "km=12.5", "--ref", "SHIPMENT-4711", home=man)
    assert paid["sent"]["precise"] == "0.15375"
    assert paid["sent"]["amount"] == "0.15"  # shown at the currency's exponent, rounded down
    assert paid["acked_nonce_sent"] == 1
    js("pay", cid[:8], "--units", "km=1", "--units", "container-hour=0.25",
       "--ref", "SHIPMENT-4712", "--repeat", "400", home=man)
    js("pay", cid[:8], "--amount", "3.20 EUR", "--ref", "TOLL", home=man)
    human = run("channel", "show", cid[:8], "--precise", home=man).stdout
    assert "183.27375 EUR" in human  # 0.15375 + 400 × (0.0123 + 0.4375) + 3.20

    assert "no unit" in fails("pay", cid[:8], "--units", "pallet=1", home=man)
    assert "UNIT=QUANTITY" in fails("pay", cid[:8], "--units", "km", home=man)
    assert "no channel starts with" in fails("channel", "show", "ffffffffff0", home=man)

    statement = js("statement", cid[:8], home=car)
    by_ref = Counter(i["reference"] for i in statement["items"])
    assert by_ref == {"SHIPMENT-4711": 1, "SHIPMENT-4712": 2, "TOLL": 1}
    assert statement["received"]["precise"] == "183.27375"
    rows = [r for r in csv.DictReader(io.StringIO(run("statement", cid[:8], "--format", "csv",
                                                      home=car).stdout)) if r["row"] == "item"]
    assert {r["reference"] for r in rows} == {"SHIPMENT-4711", "SHIPMENT-4712", "TOLL"}
    assert sum(Decimal(r["precise_amount"]) for r in rows) == Decimal("183.27375")
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal("183.27")  # they add up

    # what each side can spend (rounded towards zero) and would be paid now: the payout
    # rule, so the two payouts add up to the deposit
    assert js("channel", "show", cid[:8], home=man)["balance"]["amount"] == "4816.72"
    assert js("channel", "show", cid[:8], home=man)["balance"]["payout"] == "4816.73"
    assert js("channel", "show", cid[:8], home=car)["balance"]["payout"] == "183.27"
    closed = js("channel", "close", cid[:8], "--wait", home=man)
    assert closed["phase"] == "settled"
    payouts = {t["party"]: t["amount"]["amount"] for t in closed["settlement"]
               if t["purpose"] == "payout"}
    assert payouts == {"opener": "4816.73", "peer": "183.27"}
    assert "the channel is settled, not open" in fails(
        "pay", cid[:8], "--units", "km=1", home=man)

    # an ambiguous prefix: 17 proposals guarantee two ids share their first hex digit (the
    # carrier's operator rejects each: at most 3 wait from one opener)
    ids = [cid]
    for _ in range(16):
        ids.append(js("channel", "open", "carrier", "--arbiter", "escrow", "--deposit",
                      "1.00 EUR", "--tariff", "km=0.01", home=man)["id"])
        assert js("channel", "reject", ids[-1][:12], home=car)["phase"] == "rejected"
    first = Counter(i[0] for i in ids).most_common(1)[0][0]
    message = fails("channel", "show", first, home=man)
    assert "ambiguous" in message
    assert all(i in message for i in ids if i.startswith(first))

    daemons["carrier"].stop()
    message = fails("channel", "list", home=car)
    assert "not running" in message
    assert "meterline node start" in message
    assert json.loads(run("statement", cid[:8], "--json", home=man).stdout)["phase"] == "settled"
