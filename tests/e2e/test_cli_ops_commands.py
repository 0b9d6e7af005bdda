"""The commands an operator runs every day, through `meterline` subprocesses against a real
sandbox bank, arbiter and two companies (node.cluster): node info, channel list filters by name,
a held proposal's full terms before accept, the payment history, exit codes a script can act on,
and `demo --keep` printing commands that work."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cluster import Companies, start_companies
from node.lockfile import holder
from tests.e2e.cli_ops import json_error, meterline, stop_all


@pytest.fixture(scope="module")
def companies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Companies]:
    c = start_companies(tmp_path_factory.mktemp("ops"))
    try:
        yield c
    finally:
        c.cluster.stop()


def home(handle: object) -> str:
    return str(handle.directory)  # type: ignore[attr-defined]


def test_a_held_proposal_shows_its_full_terms_before_accept(companies: Companies) -> None:
    man, car = home(companies.manufacturer), home(companies.carrier)
    opened = json.loads(meterline(
        "channel", "open", "manufacturer", "--arbiter", "arbiter", "--deposit", "10.00 EUR",
        "--tariff", "pallet=2.50:100,2.00", "--dispute-window", "36h", "--json",
        "--data-dir", car).stdout)
    cid = opened["id"]
    listed = meterline("channel", "list", "--data-dir", man).stdout
    assert f"{cid[:16]}  from carrier, asks us to deposit 0.00 EUR: the opener is not on the " \
           "allow-list" in listed
    shown = meterline("channel", "show", cid[:10], "--data-dir", man).stdout
    assert f"proposal  {cid}" in shown
    assert "phase     awaiting-acceptance: nothing is signed until `meterline channel accept`" \
        in shown
    assert f"peer      carrier ({companies.carrier.node_id})" in shown
    assert f"arbiter   arbiter ({companies.arbiter.node_id})" in shown
    assert "deposit   ours 0.00 EUR, peer 10.00 EUR" in shown
    assert "tariff    pallet=2.5:100,2 EUR per unit" in shown
    assert "dispute   window 36 h" in shown
    assert "accounts  ours 40000100000002 (Manufacturer GmbH)" in shown
    terms = json.loads(meterline("channel", "show", cid, "--json", "--data-dir", man).stdout)
    assert terms["dispute_window_ms"] == 36 * 3_600_000
    assert meterline("channel", "reject", cid[:10], "--data-dir", man).returncode == 0
    gone = json_error("channel", "show", cid, "--data-dir", man, status=3)
    assert gone["code"] == "UNKNOWN_CHANNEL"


def test_pay_list_payments_info_and_exit_codes(companies: Companies) -> None:
    man, car = home(companies.manufacturer), home(companies.carrier)
    opened = json.loads(meterline(
        "channel", "open", "carrier", "--arbiter", "arbiter", "--deposit", "500.00 EUR",
        "--tariff", "km=0.0123", "--wait", "--json", "--data-dir", man, timeout=300).stdout)
    cid = opened["id"]
    assert opened["phase"] == "open"
    # 2,500 updates: three admin calls, every update signed and receipted
    paid = meterline("pay", cid[:12], "--units", "km=1", "--ref", "R-1", "--repeat", "2500",
                     "--data-dir", man, timeout=300).stdout
    assert "paid: sent 30.75 EUR in total, update 2500 acknowledged by the peer" in paid
    meterline("pay", cid[:12], "--amount", "1.00 EUR", "--ref", "TOLL", "--data-dir", man)

    page = meterline("payments", cid[:12], "--limit", "1", "--data-dir", car).stdout
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:00:00Z  received   (km|amount) ", page), page
    assert f"rows 1–1 of 2; next page: meterline payments {cid[:12]} --offset 1 --limit 1" \
        in page
    history = json.loads(meterline("payments", cid[:12], "--ref", "R-1", "--json",
                                   "--data-dir", car).stdout)
    (row,) = history["items"]
    assert (row["direction"], row["unit"], row["quantity"], row["updates"]) == (
        "received", "km", "2500", 2500)
    assert row["amount"]["amount"] == "30.75"

    listed = meterline("channel", "list", "--phase", "open", "--peer", "carrier",
                       "--data-dir", man).stdout
    assert re.search(rf"{cid[:16]}  open\s+carrier\s+arbiter\s+opener\s+31.75 EUR", listed), \
        listed
    assert "no channels match" in meterline("channel", "list", "--phase", "settled",
                                            "--peer", "carrier", "--data-dir", man).stdout
    assert json_error("channel", "list", "--peer", "nobody", "--data-dir", man,
                      status=2)["code"] == "UNKNOWN_PEER"

    info = meterline("node", "info", "--data-dir", man).stdout
    assert f"node      {companies.manufacturer.node_id}" in info
    assert re.search(r"name      manufacturer \(node\), meterline \d", info)
    assert f"peer API  {companies.manufacturer.url}" in info
    assert "peers     arbiter (arbiter), carrier (node)" in info
    assert "open 1" in info
    assert re.search(r"EUR       sent \d+\.\d\d EUR, received 0\.00 EUR", info)

    # refused by the node (3), timed out waiting (5)
    wrong = json_error("pay", cid[:12], "--amount", "1.00 USD", "--data-dir", man, status=3)
    assert wrong["code"] == "WRONG_CURRENCY"
    assert json_error("channel", "show", "ffffffff", "--data-dir", man,
                      status=3)["code"] == "UNKNOWN_CHANNEL"
    waited = json_error("channel", "wait", cid[:12], "--phase", "settled", "--timeout", "1",
                        "--data-dir", man, status=5)
    assert waited["code"] == "TIMED_OUT"
    assert "gave up after 1 s waiting for settled: (it is open)" in waited["message"]

    # closed and settled channels stay listed
    meterline("channel", "close", cid[:12], "--wait", "--data-dir", man, timeout=300)
    settled = meterline("channel", "list", "--phase", "settled", "--data-dir", man).stdout
    assert f"{cid[:16]}  settled" in settled


def test_demo_keep_prints_commands_that_work(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    out = meterline("demo", "--keep", "--dir", str(root), timeout=300).stdout
    tail = out[out.index("the daemons keep running; try"):]
    commands = [line.strip() for line in tail.splitlines()
                if line.strip().startswith("meterline ")]
    dirs = [root / n for n in ("carrier", "manufacturer", "arbiter", "bank")]
    try:
        assert "pkill" not in out
        stops = [c for c in commands if " stop " in c]
        assert len(stops) == 4
        for command in [c for c in commands if c not in stops] + stops:
            meterline(*shlex.split(command)[1:])
        assert all(holder(d) is None for d in dirs)
    finally:
        stop_all(*dirs)
    assert "one invoice + one transfer a month" in out
    assert "the deposit's capital: 5,000.00 EUR locked, at an assumed 4 % a year" in out


def test_updates_the_peer_has_not_acknowledged_exit_5_not_4(companies: Companies) -> None:
    """A peer that went away: the node is running, the update is signed and stored and will be
    resent — "timed out waiting" (5), never "not running" (4)."""
    man = home(companies.manufacturer)
    cid = json.loads(meterline(
        "channel", "open", "carrier", "--arbiter", "arbiter", "--deposit", "50.00 EUR",
        "--tariff", "km=0.0123", "--wait", "--json", "--data-dir", man, timeout=300).stdout)["id"]
    companies.carrier.stop()
    try:
        error = json_error("pay", cid[:12], "--units", "km=1", "--data-dir", man, status=5,
                           timeout=120)
        assert error["code"] == "NOT_ACKNOWLEDGED"
        assert "will be resent when it is back" in error["message"]
    finally:
        companies.carrier.start()
    shown = json.loads(meterline("channel", "show", cid[:12], "--json", "--data-dir", man).stdout)
    assert shown["nonce_sent"] == 1  # signed and kept
