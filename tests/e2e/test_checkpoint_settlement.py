"""Long-lived channels between real daemons (issue 9): checkpoints that pay out of escrow while
the channel stays open, schedules on a clock the test passes, by hand, by threshold while
streaming; the final close pays exactly the rest. Real processes on loopback, the sandbox bank.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import CARRIER, ESCROW, MANUFACTURER, Companies, companies, wait_for
from tests.e2e.test_longlived_daemons import databases  # noqa: F401  (the fixture: SQLite, PG)

CENT = 10_000  # channel scale 6 → one EUR cent
KM = 12_300  # 0.0123 EUR per km at scale 6: 1.23 cents, so every km leaves 0.23 of a cent
DAY_MS = 86_400_000
DEPOSITS = (500_000, 10_000)  # 5000.00 EUR and 100.00 EUR in cents


def single_close(sent: tuple[int, int]) -> tuple[int, int]:
    """DESIGN §3 computed independently: what one close on these totals pays (the net payee
    rounded down to the cent, the payer the rest)."""
    owed = (DEPOSITS[0] * CENT - sent[0] + sent[1], DEPOSITS[1] * CENT - sent[1] + sent[0])
    payee = 0 if owed[0] > DEPOSITS[0] * CENT else 1
    paid = owed[payee] // CENT
    total = sum(DEPOSITS)
    return (paid, total - paid) if payee == 0 else (total - paid, paid)


def pay_km(c: Companies, cid: str, km: int, *, repeat: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = c.manufacturer.api(
        "POST", f"/api/channels/{cid}/pay",
        {"units": {"km": str(km)}, "reference": "LEG", "repeat": repeat})
    return out


def settle_close(c: Companies, cid: str) -> None:
    c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
    wait_for(lambda: c.manufacturer.api("GET", f"/api/channels/{cid}")["phase"] == "settled"
             and c.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
             "the final payouts to book")


def wait_balance(c: Companies, account: str, value: int, what: str) -> None:
    try:
        wait_for(lambda: c.balances()[account] == value, what, timeout_s=120)
    except Exception as exc:
        raise AssertionError(f"{exc}: {account} holds {c.balances()[account]}, not {value}; "
                             f"arbiter outbox {c.arbiter.api('GET', '/api/outbox')}") from None


@pytest.fixture
def cos(tmp_path: Path) -> Any:
    with companies(tmp_path) as c:
        yield c


def test_daily_checkpoint_three_simulated_days_then_close_pays_exactly_the_rest(
        tmp_path: Path, databases: dict[str, str] | None) -> None:  # noqa: F811
    with companies(tmp_path, databases=databases) as cos:
        three_days_then_close(cos)


def three_days_then_close(cos: Companies) -> None:
    cid = cos.open_channel()
    funded = cos.balances()
    # the carrier (the payee) settles daily; the manufacturer has no schedule and co-signs
    shown = cos.carrier.api("POST", f"/api/channels/{cid}/schedule", {"every": "1d"})
    assert shown["schedule"]["every_ms"] == DAY_MS
    base = shown["schedule"]["next_checkpoint_ms"] - DAY_MS
    paid_to_carrier = 0
    sent = 0
    for day, km in enumerate((7, 11, 13), start=1):
        pay_km(cos, cid, km)
        sent += km * KM
        at = base + day * DAY_MS + 1
        early = cos.carrier.api("POST", "/api/schedule/run", {"at_ms": at - 2})
        assert early["proposed"] == [], "not due before the day is over"
        assert cos.carrier.api("POST", "/api/schedule/run", {"at_ms": at})["proposed"] == [cid]
        base = at - day * DAY_MS  # the schedule counts from the checkpoint just signed
        owed = sent // CENT - paid_to_carrier  # the leftover below a cent is carried
        paid_to_carrier += owed
        wait_balance(cos, CARRIER, funded[CARRIER] + paid_to_carrier,
                     f"checkpoint {day}'s payout of {owed} cents at the bank")
        for side in (cos.carrier, cos.manufacturer):
            detail = side.api("GET", f"/api/channels/{cid}")
            assert detail["phase"] == "open"
            assert detail["checkpoint"]["seq"] == day
    settlements = cos.carrier.api("GET", f"/api/channels/{cid}")["settlements"]
    assert [(s["checkpoint"], s["party"]) for s in settlements] == [(1, "peer"), (2, "peer"),
                                                                  (3, "peer")]
    # 7 km = 8.61 → 8 cents (0.61 carried); 18 km = 22.14 → 14 more; 31 km = 38.13 → 16 more
    assert [s["amount"]["amount"] for s in settlements] == ["0.08", "0.14", "0.16"]
    assert len({s["reference"] for s in settlements}) == 3
    assert cos.balances()[MANUFACTURER] == funded[MANUFACTURER]  # the payer is paid nothing yet

    settle_close(cos, cid)
    final = cos.balances()
    expected = single_close((sent, 0))
    assert final[CARRIER] - funded[CARRIER] == expected[1]  # 100.38: checkpoints + the close
    assert final[MANUFACTURER] - funded[MANUFACTURER] == expected[0]
    assert final[ESCROW] == 0
    assert paid_to_carrier == 38
    assert expected[1] == DEPOSITS[1] + 38


def test_checkpoint_by_hand_with_wait_then_nothing_new(cos: Companies) -> None:
    cid = cos.open_channel()
    funded = cos.balances()
    pay_km(cos, cid, 100)
    out = cos.manufacturer.api("POST", f"/api/channels/{cid}/settle", {"wait": True})
    assert out["checkpoint"]["seq"] == 1
    assert out["phase"] == "open"
    wait_balance(cos, CARRIER, funded[CARRIER] + 123, "the checkpoint's 1.23 EUR")
    with pytest.raises(Exception, match="NOTHING_TO_SETTLE"):
        cos.manufacturer.api("POST", f"/api/channels/{cid}/settle", {})
    assert cos.balances()[CARRIER] == funded[CARRIER] + 123  # paid once


def test_threshold_checkpoint_during_heavy_streaming(tmp_path: Path) -> None:
    settings = {"policy": {"watch_interval_ms": 500}}
    with companies(tmp_path, settings=settings) as c:
        cid = c.open_channel()
        funded = c.balances()
        c.carrier.api("POST", f"/api/channels/{cid}/schedule", {"threshold": "5.00 EUR"})
        errors: list[BaseException] = []
        paid_out, rounds = threading.Event(), [0]

        def stream() -> None:
            """Rounds of 100 updates of 1.23 cents (1.23 EUR) until the payout is seen and two
            rounds more, at least 20 (a fast machine streams 20 before the bank books)."""
            try:
                after = 2
                while rounds[0] < 200 and (rounds[0] < 20 or after > 0):
                    pay_km(c, cid, 1, repeat=100)
                    rounds[0] += 1
                    after -= paid_out.is_set()
            except BaseException as exc:
                errors.append(exc)

        payer = threading.Thread(target=stream)
        payer.start()
        try:
            wait_for(lambda: c.balances()[CARRIER] > funded[CARRIER],
                     "a checkpoint payout while the payer streams", timeout_s=90)
            streaming = payer.is_alive()
            paid_out.set()
        finally:
            payer.join(timeout=180)
        assert not errors, errors
        assert streaming, "the checkpoint was paid while updates were still streaming"
        sent = rounds[0] * 100
        def cents(text: str) -> int:
            return int(text.replace(".", ""))

        def quiet() -> bool:
            """The schedule has nothing left to do (what is unpaid is under the threshold) and
            the bank has booked every settlement the carrier holds."""
            shown = c.carrier.api("GET", f"/api/channels/{cid}")
            paid = sum(cents(s["amount"]["amount"]) for s in shown["settlements"])
            return (cents(shown["unpaid"]["amount"]) < 500
                    and c.balances()[CARRIER] == funded[CARRIER] + paid)

        wait_for(quiet, "the last threshold checkpoint paid at the bank", timeout_s=120)
        detail = c.carrier.api("GET", f"/api/channels/{cid}")
        assert detail["nonce_received"] == sent
        assert detail["checkpoint"]["seq"] >= 1
        assert all(cents(s["amount"]["amount"]) >= 500 for s in detail["settlements"])
        settle_close(c, cid)
        final = c.balances()
        expected = single_close((sent * KM, 0))
        assert final[CARRIER] - funded[CARRIER] == expected[1]
        assert final[MANUFACTURER] - funded[MANUFACTURER] == expected[0]
        assert final[ESCROW] == 0


def cli(c: Companies, handle: str, *args: str) -> subprocess.CompletedProcess[str]:
    directory = getattr(c, handle).directory
    return subprocess.run([sys.executable, "-m", "node.cli", *args, "--data-dir",
                           str(directory)], capture_output=True, text=True, timeout=120,
                          check=False)


def test_checkpoint_and_topup_through_the_cli(cos: Companies) -> None:
    cid = cos.open_channel()
    funded = cos.balances()
    pay_km(cos, cid, 10)  # 0.123 EUR: 12 cents and 0.3 of a cent carried
    assert cli(cos, "carrier", "channel", "schedule", cid[:10], "--every", "1d",
               "--threshold", "50.00 EUR").returncode == 0
    bad = cli(cos, "carrier", "channel", "schedule", cid[:10], "--threshold", "50.00 USD")
    assert bad.returncode == 3, bad.stderr  # refused by the node: the channel is in EUR
    assert "EUR" in bad.stderr
    done = cli(cos, "manufacturer", "channel", "settle", cid[:10], "--wait")
    assert done.returncode == 0, done.stderr
    assert "checkpoint 1 signed by both" in done.stdout
    again = cli(cos, "manufacturer", "channel", "settle", cid[:10])
    assert again.returncode == 3
    assert "nothing new" in again.stderr
    wait_balance(cos, CARRIER, funded[CARRIER] + 12, "the checkpoint's 0.12 EUR")
    wait_for(lambda: [s["status"] for s in cos.carrier.api(
        "GET", f"/api/channels/{cid}")["settlements"]] == ["booked"],
        "the arbiter's word that the checkpoint payout was booked (ADR 0320)")
    shown = cli(cos, "carrier", "channel", "show", cid[:10]).stdout
    assert "schedule  every 1d, when 50.00 EUR is owed; next checkpoint " in shown
    assert re.search(r"#1\s+peer\s+0\.12 EUR\s+ML[0-9A-F]{16}\s+booked", shown), shown
    topped = cli(cos, "manufacturer", "channel", "topup", cid[:10], "25.00 EUR", "--wait")
    assert topped.returncode == 0, topped.stderr
    assert "top-ups confirmed: 25.00 EUR" in topped.stdout
    assert "top-ups   ours 0.00 EUR, peer 25.00 EUR" in cli(
        cos, "carrier", "channel", "show", cid[:10]).stdout
    statement = cli(cos, "carrier", "statement", cid[:10], "--format", "csv").stdout
    rows = [r for r in csv.DictReader(io.StringIO(statement)) if r["row"] == "checkpoint"]
    assert [(r["reference"], r["party"], r["amount"], r["status"]) for r in rows] == [
        ("1", "peer", "0.12", "booked")]
    below_a_cent = cli(cos, "manufacturer", "channel", "topup", cid[:10], "1.001 EUR")
    assert below_a_cent.returncode == 3, below_a_cent.stdout


def test_checkpoint_replayed_stale_or_forged_pays_nothing(cos: Companies) -> None:
    """A party replays its genuine checkpoint 1 after checkpoint 2, or hands in a renumbered
    body only it signed: the arbiter and the peer refuse each, and the bank moves nothing."""
    from dataclasses import replace

    from protocol.errors import ErrorCode
    from protocol.messages import EMPTY_SIGNATURE, Refusal
    from tests.adversarial.toolkit import Attacker

    cid = cos.open_channel()
    funded = cos.balances()
    attacker = Attacker.of(cos.manufacturer)
    pay_km(cos, cid, 100)
    cos.manufacturer.api("POST", f"/api/channels/{cid}/settle", {"wait": True})
    first = attacker.stored_state(cid).checkpoint
    assert first is not None
    assert first.fully_signed()
    pay_km(cos, cid, 100)
    cos.manufacturer.api("POST", f"/api/channels/{cid}/settle", {"wait": True})
    wait_balance(cos, CARRIER, funded[CARRIER] + 246, "both checkpoints' 1.23 EUR")
    wait_for(lambda: [s["status"] for s in cos.carrier.api(
        "GET", f"/api/channels/{cid}")["settlements"]] == ["booked", "booked"],
        "the arbiter's word that both checkpoint payouts were booked")
    before = cos.balances()
    shown = cos.carrier.api("GET", f"/api/channels/{cid}")
    forged = replace(first, seq=3, opener_signature=EMPTY_SIGNATURE,
                     peer_signature=EMPTY_SIGNATURE).signed_by(attacker.signer,
                                                               "opener_signature")
    cases = ((cos.arbiter.url, first, ErrorCode.NONCE_REPLAY),
             (cos.arbiter.url, forged, ErrorCode.BAD_SIGNATURE),
             (cos.carrier.url, first, ErrorCode.NONCE_REPLAY),
             (cos.carrier.url, forged, ErrorCode.AMOUNT_REGRESSION))
    for url, body, code in cases:
        answer = attacker.post(url, "/p2p/checkpoint", body)
        assert answer.status == 400, answer
        assert isinstance(answer.message, Refusal), answer
        assert ErrorCode(answer.message.code) is code, (url, answer)
    time.sleep(2)  # a payout it had wrongly submitted would book within a poll
    assert cos.balances() == before
    after = cos.carrier.api("GET", f"/api/channels/{cid}")
    assert after["checkpoint"] == shown["checkpoint"]
    assert after["checkpoint"]["seq"] == 2
    assert after["settlements"] == shown["settlements"]
