"""The moments of a channel's life the crash suite kills a process in, and one cycle of it.

Each moment is reached by waiting on observable state (the admin API, the bank's ledger and its
fault book), then a random delay inside the moment's window gives variety; the victim is killed
with SIGKILL and restarted. The moments:

- ``funding``: a channel was just proposed; the deposits go to the bank, the arbiter confirms;
- ``stream``: a ``pay`` of hundreds of updates is being signed and receipted;
- ``close``: a cooperative close is being signed and sent to the arbiter;
- ``payout``: the arbiter's payout request is at the bank, whose answer is held back by an
  injected delay (booked-but-unanswered, or not yet booked);
- ``dispute``: a unilateral close's dispute window is running;
- ``checkpoint``: a checkpoint proposed by hand (``POST /api/channels/{id}/settle``) is being
  co-signed (payer or payee killed), or its payout is at the bank, whose answer is held back by
  an injected delay (arbiter or bank killed); the channel stays open and goes on streaming.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from node.cluster import ClusterError
from protocol.references import Purpose, bank_reference
from tests.faults.crash import DISPUTE_WINDOW, SERVER_ERRORS, CrashRun, Cycle

PISP_PAYMENTS = "/open-banking/v3.1/pisp/domestic-payments"


class Background:
    """An admin call running in a thread while its process may be killed under it."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: Exception | None = None

        def run() -> None:
            try:
                self.result = call()
            except Exception as exc:  # the process was killed under it: said by the caller
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout_s: float = 120.0) -> None:
        self.thread.join(timeout_s)


def open_channel(run: CrashRun) -> str:
    body = {"peer": run.payee.node_id, "arbiter": run.arbiter.node_id,
            "deposit": "5000.00 EUR", "peer_deposit": "100.00 EUR",
            "tariff": ["km=0.0123", "container-hour=1.75"],
            "dispute_window": DISPUTE_WINDOW}
    cid: str = run.api(run.payer, "POST", "/api/channels", body)["id"]
    run.channels.append(cid)
    return cid


def opened(run: CrashRun, cid: str) -> None:
    run.wait(f"{cid[:12]} to open on both sides",
             lambda: all(run.channel(h, cid)["phase"] == "open"
                         for h in (run.payer, run.payee)), 90)


def funding(run: CrashRun, cycle: Cycle) -> None:
    if cycle.victim == "payer":
        # the proposal call itself may be cut off: kill while it is answered, then find it
        before = {c["id"] for c in run.api(run.payer, "GET", "/api/channels")["channels"]}
        call = Background(lambda: open_channel(run))
        time.sleep(run.rng.uniform(0.0, 0.6))
        run.kill(cycle.victim)
        call.join()
        run.restart(cycle.victim)
        new = [c["id"] for c in run.api(run.payer, "GET", "/api/channels")["channels"]
               if c["id"] not in before]
        if not new:  # killed before the proposal was stored: nothing happened, propose again
            cycle.detail = "before the proposal was stored"
            cid = open_channel(run)
        else:
            cid = new[0]
            if cid not in run.channels:
                run.channels.append(cid)
    else:
        cid = open_channel(run)
        time.sleep(run.rng.uniform(0.0, 0.4))
        cycle.detail = f"payer saw {run.channel(run.payer, cid)['phase']}"
        run.kill(cycle.victim)
        time.sleep(run.rng.uniform(0.0, 0.5))
        run.restart(cycle.victim)
    opened(run, cid)
    run.cid = cid
    run.agree(cid)
    run.still_works(cid)


def stream(run: CrashRun, cycle: Cycle) -> None:
    cid = run.cid
    assert cid is not None
    start = run.channel(run.payee, cid)["nonce_received"]
    repeat = run.rng.randint(60, 300)
    call = Background(lambda: run.pay(cid, repeat, timeout_s=120))
    at = start + run.rng.randint(1, repeat // 2)
    run.wait("the stream to get going",
             lambda: run.channel(run.payee, cid)["nonce_received"] >= at or call.error
             or call.result, 60)
    time.sleep(run.rng.uniform(0.0, 0.15))
    run.kill(cycle.victim)
    cycle.detail = f"{repeat} updates from nonce {start}, killed after {at - start}+"
    run.restart(cycle.victim)
    call.join()
    if cycle.victim != "payer" and call.error is not None:
        raise run.fail(f"the pay call failed though its node stayed up: {call.error}")
    run.agree(cid)
    run.check_receipts(cid)
    run.still_works(cid)


def _closing(run: CrashRun, cycle: Cycle, body: dict[str, Any], window: tuple[float, float],
             ) -> None:
    cid = run.cid
    assert cid is not None
    call = Background(lambda: run.api(run.payer, "POST", f"/api/channels/{cid}/close", body))
    time.sleep(run.rng.uniform(*window))
    cycle.detail = f"payer saw {run.channel(run.payer, cid)['phase']}"
    run.kill(cycle.victim)
    call.join()
    run.restart(cycle.victim)
    if run.channel(run.payer, cid)["phase"] == "open":  # cut off before anything was signed
        run.api(run.payer, "POST", f"/api/channels/{cid}/close", body)
        cycle.detail += ", close asked again"
    run.settled(cid)
    run.cid = None
    run.agree(cid)


def close(run: CrashRun, cycle: Cycle) -> None:
    _closing(run, cycle, {}, (0.0, 0.8))


def dispute(run: CrashRun, cycle: Cycle) -> None:
    """A unilateral close (the payer forces it) and a kill inside the 3 s window."""
    cid = run.cid
    assert cid is not None
    forced = run.api(run.payer, "POST", f"/api/channels/{cid}/close", {"force": True})
    if forced["phase"] != "disputed":
        raise run.fail(f"a forced close answered {forced['phase']}")
    time.sleep(run.rng.uniform(0.0, 2.0))
    cycle.detail = f"payee saw {run.channel(run.payee, cid)['phase']}"
    run.kill(cycle.victim)
    time.sleep(run.rng.uniform(0.0, 1.0))
    run.restart(cycle.victim)
    run.settled(cid)
    run.cid = None
    run.agree(cid)


def payout(run: CrashRun, cycle: Cycle) -> None:
    """The arbiter's payout request is at the bank; the bank holds its answer back."""
    cid = run.cid
    assert cid is not None
    booked_first = run.rng.random() < 0.5 if cycle.victim == "arbiter" else False
    fault = {"kind": "delay", "method": "POST", "path": PISP_PAYMENTS, "count": 1,
             "delay_ms": 4_000, "after_processing": booked_first}
    added = run.companies.cluster.bank_url + "/_sandbox/faults"
    _post(added, fault)
    run.api(run.payer, "POST", f"/api/channels/{cid}/close", {})
    run.wait("the payout request to reach the bank",
             lambda: not run.bank("/_sandbox/faults")["faults"], 60)
    if booked_first:
        refs = {bank_reference(bytes.fromhex(cid), Purpose.PAYOUT, p) for p in (0, 1)}
        run.wait("the bank to book the payout", lambda: any(
            t["reference"] in refs
            for t in run.bank("/_sandbox/accounts/escrow")["transactions"]), 10)
    time.sleep(run.rng.uniform(0.0, 0.5))
    cycle.detail = "booked, answer held back" if booked_first else "answer held back"
    run.kill(cycle.victim)
    run.restart(cycle.victim)
    run.settled(cid)
    run.cid = None
    run.agree(cid)


def checkpoint(run: CrashRun, cycle: Cycle) -> None:
    """Settle without closing, and a kill while it is co-signed or while its payout is paid."""
    cid = run.cid
    assert cid is not None
    run.pay(cid, run.rng.randint(10, 40))  # something new to settle (km=1 is 1.23 cents)
    before = _checkpoint_seq(run, cid)
    settle = f"/api/channels/{cid}/settle"
    if cycle.victim in ("payer", "payee"):
        call = Background(lambda: run.payer.api("POST", settle, {"wait": True}))
        # co-signing takes tens of ms on loopback: most kills land inside it, some after
        time.sleep(run.rng.choice((0.0, run.rng.uniform(0.0, 0.04), run.rng.uniform(0.0, 0.3))))
        held = _checkpoint_seq(run, cid) > before
        cycle.detail = (f"checkpoint {before + 1} "
                        + ("co-signed" if held else "not yet co-signed") + " at the kill")
        run.kill(cycle.victim)
        run.restart(cycle.victim)
        call.join()
        _no_server_error(run, call.error)
        if not _advanced(run, cid, before, 15):  # killed before the proposal was stored
            try:
                run.api(run.payer, "POST", settle, {"wait": True})
            except ClusterError as exc:
                if ": 409 " not in str(exc):
                    raise
            cycle.detail += ", settle asked again"
    else:
        booked_first = run.rng.random() < 0.5
        _post(run.companies.cluster.bank_url + "/_sandbox/faults",
              {"kind": "delay", "method": "POST", "path": PISP_PAYMENTS, "count": 1,
               "delay_ms": 4_000, "after_processing": booked_first})
        run.api(run.payer, "POST", settle, {"wait": True})
        run.wait("the checkpoint payout to reach the bank",
                 lambda: not run.bank("/_sandbox/faults")["faults"], 60)
        if booked_first:
            refs = set(_references(run, cid, before + 1))
            run.wait("the bank to book the checkpoint payout", lambda: refs & {
                t["reference"]
                for t in run.bank("/_sandbox/accounts/escrow")["transactions"]}, 10)
        time.sleep(run.rng.uniform(0.0, 0.5))
        cycle.detail = (f"checkpoint {before + 1} "
                        + ("booked, answer held back" if booked_first else "answer held back"))
        run.kill(cycle.victim)
        run.restart(cycle.victim)
    if not _advanced(run, cid, before, 60):
        raise run.fail(f"checkpoint {before + 1} never signed by both sides")
    seq = _checkpoint_seq(run, cid)
    refs = set(_references(run, cid, seq))
    run.wait(f"checkpoint {seq}'s payouts to be booked at the bank", lambda: refs <= {
        t["reference"] for t in run.bank("/_sandbox/accounts/escrow")["transactions"]}, 90)
    run.agree(cid)
    run.check_receipts(cid)
    run.still_works(cid)


def _checkpoint_seq(run: CrashRun, cid: str) -> int:
    latest = run.channel(run.payer, cid)["checkpoint"]
    return 0 if latest is None else int(latest["seq"])


def _advanced(run: CrashRun, cid: str, before: int, timeout_s: float) -> bool:
    """Both sides hold a checkpoint past `before` within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            seqs = [run.channel(h, cid)["checkpoint"] for h in (run.payer, run.payee)]
        except ClusterError:
            seqs = [None]
        if all(s is not None and s["seq"] > before for s in seqs):
            return True
        time.sleep(0.1)
    return False


def _references(run: CrashRun, cid: str, seq: int) -> list[str]:
    return [s["reference"] for s in run.channel(run.payer, cid)["settlements"]
            if s["checkpoint"] == seq]


def _no_server_error(run: CrashRun, error: Exception | None) -> None:
    """A settle cut off by the kill may fail; a 5xx from a node that stayed up is counted,
    but for the peer being down (PEER_UNAVAILABLE) or the co-signature not yet in
    (NOT_COSIGNED, documented 504: it is sent again until it is)."""
    text = str(error or "")
    if any(f": {code} " in text for code in range(500, 600)) and not any(
            known in text for known in ("PEER_UNAVAILABLE", "NOT_COSIGNED",
                                        "NOT_ACKNOWLEDGED")):
        run.counts[SERVER_ERRORS] += 1
        raise run.fail(f"a 5xx from the admin API during a checkpoint: {text}")


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30):
        pass


MOMENTS: dict[str, tuple[Callable[[CrashRun, Cycle], None], tuple[str, ...]]] = {
    "funding": (funding, ("payer", "payee", "arbiter", "bank")),
    "stream": (stream, ("payer", "payee", "arbiter", "bank")),
    "close": (close, ("payer", "payee", "arbiter", "bank")),
    "payout": (payout, ("arbiter", "bank")),
    "dispute": (dispute, ("payer", "payee", "arbiter")),
    "checkpoint": (checkpoint, ("payer", "payee", "arbiter", "bank")),
}
"""Each moment and the processes a kill in it makes sense for (the bank holds no state of a
dispute window; the payer and payee are not part of a payout's request)."""
ENDINGS = ("close", "payout", "dispute")


def next_moment(run: CrashRun) -> str:
    """A channel is opened (funding), streamed on and settled without closing a few times, then
    ended one of three ways."""
    if run.cid is None:
        return "funding"
    draw = run.rng.random()
    if draw < 0.55:
        return "stream"
    if draw < 0.7:
        return "checkpoint"
    return run.rng.choice(ENDINGS)


def one_cycle(run: CrashRun, number: int) -> Cycle:
    moment = next_moment(run)
    action, victims = MOMENTS[moment]
    cycle = Cycle(number, moment, run.rng.choice(victims))
    run.cycle = cycle
    try:
        action(run, cycle)
    except ClusterError as exc:
        raise run.fail(str(exc)) from None
    run.survive(cycle)
    return cycle
