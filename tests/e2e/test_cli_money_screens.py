"""Honest money on every screen (issue 10), through the CLI only: each step is a `meterline`
subprocess against a real sandbox bank and real daemons on loopback.

- the balance shown is what `pay` accepts (rounded towards zero), beside what the payout rule
  would pay (ADR 0151);
- statement lines add up to their subtotals and to the net in JPY (0), EUR (2) and BHD (3)
  decimals, in JSON, in the table and in the CSV (ADR 0152);
- money text has one grammar (specs/0001 §2.1): each refusal says what to write instead;
- capacity and state refusals speak in money and words, never scaled integers or class names;
- two `--units` for one unit are refused;
- a deposit the bank refuses shows as `rejected` with the bank's reason and is not asked again;
  a deposit in a currency the node's account is not held in is refused before proposing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from node.cluster import Daemon, free_port, wait_for

_IDENT = count(1)


def run(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if home is not None:
        env["METERLINE_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def ok(*args: str, home: Path | None = None) -> str:
    proc = run(*args, home=home)
    assert proc.returncode == 0, f"meterline {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def js(*args: str, home: Path | None = None) -> Any:
    return json.loads(ok(*args, "--json", home=home))


def fails(*args: str, home: Path | None = None) -> str:
    """The one-line error the operator reads (no traceback, nothing on stdout)."""
    proc = run(*args, home=home)
    assert proc.returncode != 0, f"meterline {' '.join(args)} should have failed:\n{proc.stdout}"
    assert "Traceback" not in proc.stderr
    return " ".join(proc.stderr.split())


@dataclass
class Trio:
    """An arbiter, a manufacturer (opener) and a carrier, each with an account in `currency`."""

    bank_url: str
    homes: dict[str, Path]
    daemons: dict[str, Daemon]

    @property
    def man(self) -> Path:
        return self.homes["manufacturer"]

    @property
    def car(self) -> Path:
        return self.homes["carrier"]

    def open(self, deposit: str, *tariff: str) -> str:
        cid: str = js("channel", "open", "carrier", "--arbiter", "escrow", "--deposit", deposit,
                      *[a for t in tariff for a in ("--tariff", t)], "--dispute-window", "2h",
                      home=self.man)["id"]
        js("channel", "accept", cid[:12], home=self.car)
        return cid

    def wait_open(self, cid: str) -> None:
        wait_for(lambda: all(js("channel", "show", cid[:12], home=h)["phase"] == "open"
                             for h in (self.man, self.car)),
                 "the arbiter to confirm the deposit", timeout_s=90)


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("money-bank")
    port = free_port()
    daemon = Daemon("bank", root / "bank", port, argv=[
        sys.executable, "-m", "node.cli", "bank", "start", "--data-dir", str(root / "bank"),
        "--listen", f"127.0.0.1:{port}", "--json-logs"])
    daemon.start()
    try:
        yield f"http://127.0.0.1:{port}", root / "bank.log"
    finally:
        daemon.stop()


def start_trio(bank_url: str, root: Path, currency: str, manufacturer_balance: str,
               escrow_currency: str | None = None) -> Trio:
    homes: dict[str, Path] = {}
    daemons: dict[str, Daemon] = {}
    try:
        for name, balance in (("escrow", "0"), ("manufacturer", manufacturer_balance),
                              ("carrier", "0")):
            account_currency = escrow_currency if name == "escrow" and escrow_currency \
                else currency
            account = f"{name}-{next(_IDENT)}"  # one bank for the module: ids never repeat
            ok("bank", "open-account", "--bank", bank_url, "--account-id", account,
               "--name", name.title(), "--identification", f"{40_000_200_000_000 + next(_IDENT)}",
               "--balance", f"{balance} {account_currency}",
               "--keys-dir", str(root / f"{name}-keys"), "--out", str(root / f"{name}-bank.json"))
            port, admin = free_port(), free_port()
            home = root / name
            role = ["--role", "arbiter"] if name == "escrow" else []
            ok("init", "--data-dir", str(home), "--name", name, *role,
               "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
               "--bank-config", str(root / f"{name}-bank.json"))
            daemon = Daemon(name, home, port, admin_port=admin, argv=[
                sys.executable, "-m", "node.cli", "node", "start", "--data-dir", str(home),
                "--json-logs"])
            daemon.start()
            daemons[name], homes[name] = daemon, home
        urls = {n: f"http://127.0.0.1:{d.port}" for n, d in daemons.items()}
        for home, others in ((homes["manufacturer"], ("escrow", "carrier")),
                             (homes["carrier"], ("escrow", "manufacturer"))):
            for other in others:
                js("peer", "add", urls[other], home=home)
    except BaseException:
        for d in daemons.values():
            d.stop()
        raise
    return Trio(bank_url, homes, daemons)


@pytest.fixture
def trio_factory(bank: tuple[str, Path], tmp_path: Path) -> Iterator[Any]:
    started: list[Trio] = []

    def make(currency: str, manufacturer_balance: str, **kw: Any) -> Trio:
        root = tmp_path / f"{currency.lower()}{len(started)}"
        root.mkdir()
        trio = start_trio(bank[0], root, currency, manufacturer_balance, **kw)
        started.append(trio)
        return trio

    yield make
    for trio in started:
        for d in reversed(list(trio.daemons.values())):
            d.stop()


# -- the balance, the grammar, capacity and state refusals, --units -----------------------------


def test_balance_grammar_and_refusals_in_money(trio_factory: Any) -> None:
    t = trio_factory("EUR", "1000.00")
    man, car = t.man, t.car

    # one grammar: each refusal says what to write instead, before anything reaches a peer
    for deposit, says in (("3.205 EUR", "write 3.20 EUR or 3.21 EUR"),
                          ("0.001 EUR", "write 0.00 EUR or 0.01 EUR"),
                          ("1,5 EUR", "write 1.5 (a point, no thousands separators)"),
                          ("1e3 EUR", "write the number out in full (1e3 is 1000)"),
                          ("+100 EUR", "write 100 without the +"),
                          (".5 EUR", "write 0.5"),
                          ("18446744073709551616 EUR", "above the largest amount"),
                          ("EUR 100", "write the number first: 100 EUR")):
        assert says in fails("channel", "open", "carrier", "--arbiter", "escrow",
                             "--deposit", deposit, "--tariff", "km=0.0123", home=man), deposit
    assert "write 0.0123" in fails("channel", "open", "carrier", "--arbiter", "escrow",
                                   "--deposit", "100.00 EUR", "--tariff", "km=0,0123", home=man)
    # the node's account is held in EUR: the bank would refuse a GBP deposit, so it is not sent
    message = fails("channel", "open", "carrier", "--arbiter", "escrow", "--deposit",
                    "100.00 GBP", "--tariff", "km=0.0123", home=man)
    assert "bank account is held in EUR" in message
    assert "give the deposit in EUR" in message
    assert js("channel", "list", home=man)["channels"] == []
    assert js("channel", "list", home=car)["proposals"] == []

    cid = t.open("100.00 eur", "km=0.0123")  # a lower-case code is its upper-case code
    t.wait_open(cid)

    # a sub-cent channel amount is a channel amount (scale 6), shown exactly
    paid = js("pay", cid[:8], "--amount", "17.0675 EUR", "--ref", "TOLL", home=man)
    assert paid["sent"]["precise"] == "17.0675"
    bal = js("channel", "show", cid[:8], home=man)["balance"]
    assert bal == {"amount": "82.93", "precise": "82.9325", "currency": "EUR", "payout": "82.94"}
    peer_bal = js("channel", "show", cid[:8], home=car)["balance"]
    assert peer_bal["amount"] == peer_bal["payout"] == "17.06"  # the payee: rounded down
    assert Decimal(bal["payout"]) + Decimal(peer_bal["payout"]) == Decimal("100.00")
    human = ok("channel", "show", cid[:8], home=man)
    assert ("82.93 EUR to spend (exactly 82.9325 EUR); 82.94 EUR paid out if closed now"
            in human)
    listed = ok("channel", "list", home=man)
    assert "82.93 EUR" in listed
    assert "82.94" not in listed

    # the grammar at pay, and --units twice
    assert "write 1.5" in fails("pay", cid[:8], "--amount", "1,5 EUR", home=man)
    assert "km=1 and km=2" in fails("pay", cid[:8], "--units", "km=1", "--units", "km=2",
                                    home=man)
    assert "give each unit once" in fails("pay", cid[:8], "--units", "km=1", "--units",
                                          " km =2", home=man)
    assert "has 4 decimal places, more than the 3" in fails(
        "pay", cid[:8], "--units", "km=1.0001", home=man)

    # capacity in money: the shown amount can be paid, one cent more cannot
    message = fails("pay", cid[:8], "--amount", "82.94 EUR", home=man)
    assert "paying 82.94 EUR exceeds the 82.9325 EUR the payer can still pay" in message
    assert not re.search(r"\d{7,}", message), message  # no raw scaled integers
    js("pay", cid[:8], "--amount", "82.93 EUR", home=man)
    assert js("channel", "show", cid[:8], home=man)["balance"]["precise"] == "0.0025"

    closed = js("channel", "close", cid[:8], "--wait", home=man)
    assert closed["phase"] == "settled"
    message = fails("channel", "close", cid[:8], "--force", home=man)
    assert "Action" not in message, message
    assert "the channel is settled" in message


# -- statements add up in every exponent ------------------------------------------------------


def _dec(text: str) -> Decimal:
    return Decimal(text)


@pytest.mark.parametrize(
    ("currency", "exponent", "balance", "deposit", "tariff", "units"),
    [
        ("JPY", 0, "100000", "50000 JPY", ("km=1.7", "pallet=0.33"),
         ("km=3.3", "pallet=7", "km=0.1")),
        ("EUR", 2, "1000.00", "500.00 EUR", ("km=0.0123", "pallet=0.3333"),
         ("km=12.5", "pallet=7", "km=0.7")),
        ("BHD", 3, "1000.000", "500.000 BHD", ("km=0.00123", "pallet=0.03333"),
         ("km=12.5", "pallet=7", "km=0.7")),
    ],
)
def test_statement_lines_sum_to_the_net(trio_factory: Any, currency: str, exponent: int,
                                        balance: str, deposit: str, tariff: tuple[str, ...],
                                        units: tuple[str, ...]) -> None:
    t = trio_factory(currency, balance)
    cid = t.open(deposit, *tariff)
    t.wait_open(cid)
    refs = ["SHIPMENT-1", "Lieferschein-Nr. Ä-17", "=HYPERLINK(\"http://x\")", "@SUM(A1)",
            "-1+2", "+1"]
    for i, unit in enumerate(units * 2):
        js("pay", cid[:8], "--units", unit, "--ref", refs[i % len(refs)], home=t.man)
    # and the carrier pays some back, so the net has lines of both signs
    js("pay", cid[:8], "--units", units[0], "--ref", "RETURN", home=t.car)

    for home, sign in ((t.man, -1), (t.car, 1)):
        st = js("statement", cid[:8], home=home)
        assert st["exponent"] == exponent
        decimals = rf"\.[0-9]{{{exponent}}}" if exponent else ""
        places = re.compile(r"-?[0-9]+" + decimals)
        by_sub: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for item in st["items"]:
            assert places.fullmatch(item["allocated"]), item
            # within one minor unit of the exact amount, signed by direction
            exact = _dec(item["amount"]["precise"]) * (-1 if item["direction"] == "sent" else 1)
            assert abs(_dec(item["allocated"]) - exact) < Decimal(10) ** -exponent
            by_sub[(item["direction"], item["unit"])] += _dec(item["allocated"])
        assert {(s["direction"], s["unit"]): _dec(s["allocated"])
                for s in st["subtotals"]} == by_sub
        assert sum(by_sub.values()) == _dec(st["allocated"]["net"])
        assert _dec(st["allocated"]["sent"]) + _dec(st["allocated"]["received"]) == \
            _dec(st["allocated"]["net"])
        # the net is the exact net rounded towards zero: what the payout rule moves
        exact_net = _dec(st["net"]["precise"])
        step = Decimal(10) ** -exponent
        assert _dec(st["allocated"]["net"]) == (abs(exact_net) // step * step).copy_sign(exact_net)
        assert (sign * exact_net) > 0
        assert st["counterparty"]["name"] == ("carrier" if home == t.man else "manufacturer")
        assert st["period"] is not None

        rows = list(csv.DictReader(io.StringIO(ok("statement", cid[:8], "--format", "csv",
                                                   home=home))))
        assert {r["channel"] for r in rows} == {cid}
        assert {r["counterparty"] for r in rows} == {st["counterparty"]["name"]}
        assert {r["period_from"] for r in rows} == {st["period"]["from"]}
        items = [r for r in rows if r["row"] == "item"]
        assert len(items) == len(st["items"])
        for r in rows:
            if r["amount"]:
                assert places.fullmatch(r["amount"]), r  # a fixed number of decimals
            if r["precise_amount"]:
                assert re.fullmatch(rf"-?[0-9]+\.[0-9]{{{st['scale']}}}", r["precise_amount"])
        (net,) = [r for r in rows if r["row"] == "net"]
        assert sum(_dec(r["amount"]) for r in items) == _dec(net["amount"])
        for sub in (r for r in rows if r["row"] == "subtotal"):
            assert sum(_dec(r["amount"]) for r in items if (r["direction"], r["unit"]) ==
                       (sub["direction"], sub["unit"])) == _dec(sub["amount"])
        assert [r for r in rows if r["row"] == "transfer" and r["party"] == "opener"]
        # formula cells are neutralised, plain signed numbers stay numbers
        references = {r["reference"] for r in items}
        assert "Lieferschein-Nr. Ä-17" in references  # UTF-8, signed as typed
        assert "Lieferschein-Nr. Ä-17" in {i["reference"] for i in st["items"]}
        assert {"'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "'-1+2", "'+1"} <= references
        assert all(not c.startswith(("=", "+", "@", "\t", "\r")) for r in rows
                   for c in r.values())
        assert any(r["amount"].startswith("-") for r in items)

        table = ok("statement", cid[:8], home=home)
        assert f"net {st['allocated']['net']} {currency}" in table


# -- a deposit the bank refuses ---------------------------------------------------------------


def _bank_requests(log: Path, path_part: str) -> int:
    n = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "request" and path_part in str(entry.get("path", "")):
            n += 1
    return n


def test_a_refused_deposit_is_rejected_with_the_reason_and_not_asked_again(
        trio_factory: Any, bank: tuple[str, Path]) -> None:
    t = trio_factory("EUR", "10.00")  # less than the deposit
    cid = t.open("50.00 EUR", "km=0.0123")

    def rejected() -> dict[str, Any] | None:
        show = js("channel", "show", cid[:12], home=t.man)
        for tr in show["settlement"]:
            if tr["purpose"] == "deposit" and tr["party"] == "opener" and \
                    tr.get("status") == "rejected":
                return tr
        return None

    wait_for(lambda: rejected() is not None, "the bank to refuse the deposit", timeout_s=60)
    transfer = rejected()
    assert transfer is not None
    assert "InsufficientFunds" in transfer["reason"]
    assert "holds less than 50.00 EUR" in transfer["reason"]
    human = ok("channel", "show", cid[:12], home=t.man)
    assert re.search(r"deposit\s+opener\s+50\.00 EUR\s+ML[0-9A-F]{16}\s+rejected: .*"
                     r"InsufficientFunds", human), human
    # the node stops asking: no payment or consent request reaches the bank any more
    log = bank[1]
    before = _bank_requests(log, "/domestic-payment")
    time.sleep(3.0)  # 15 transfer polls at the node's 200 ms
    assert _bank_requests(log, "/domestic-payment") == before
    assert not [r for r in js("outbox", "list", home=t.man)["outbox"]
                if r["purpose"] == "deposit" and not r.get("refused")], "deposit still queued"
    assert js("channel", "show", cid[:12], home=t.man)["phase"] == "accepted"
