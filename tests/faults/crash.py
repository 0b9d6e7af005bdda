"""The crash suite's cluster and its checks: kill -9 of a real process, restart it, verify.

One cluster (the sandbox bank, an arbiter, a payer ``manufacturer`` and a payee ``carrier``, each a
real ``meterline`` process, node.cluster) serves every cycle of a run; a cycle kills one of the
four at one moment (tests/faults/crash_moments.py), restarts only that one, and checks:

- every update the payer holds a receipt for is in the payee's *committed* state (read from the
  killed side's SQLite file while it is down, from the live side's admin API);
- no nonce is ever signed twice with different content: every (channel, sender, nonce) seen in
  either node's committed state, in any cycle, carries one (amount, quantities, usage digest);
- payer and payee agree once both are up (nonces, acknowledgements, amounts, units, phase);
- the channel still works (one more update is signed and receipted), or, once closed, settles.

At the end of a run (:meth:`CrashRun.finish`) every channel is ``settled`` on both sides, each
payout (at a checkpoint or at the close) exists exactly once at the bank, each checkpoint payout
is the amount both nodes recorded, each channel's payouts (checkpoints + close) sum to its
deposits, the escrow
account is empty, no daemon has a delivery left to retry, and the money the nodes show is the
money the bank moved.

The choices (moment, victim, delays) come from one seed; a failure names the seed, the cycle and
the moment (:class:`CrashFailure`).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from node.cluster import ClusterError, Companies, Daemon, NodeHandle, start_companies
from node.storage.codec import decode_channel
from protocol import channel as ch
from protocol.references import Purpose, bank_reference

SHORT_WINDOWS = {"policy": {"min_dispute_window_ms": 2_000, "watch_interval_ms": 200}}
"""Dispute windows of a few seconds, so a unilateral close's window fits in a cycle."""
DISPUTE_WINDOW = "3s"
VICTIMS = ("payer", "payee", "arbiter", "bank")
LOST, DOUBLE, SERVER_ERRORS = "lost_updates", "double_payouts", "server_errors"


class CrashFailure(AssertionError):
    """A broken promise, with what replays the run."""


@dataclass
class Cycle:
    number: int
    moment: str
    victim: str
    detail: str = ""


@dataclass
class CrashRun:
    """One cluster, one seed, many kill -9 cycles."""

    root: Path
    seed: int
    companies: Companies = field(init=False)
    rng: random.Random = field(init=False)
    cycle: Cycle | None = None
    cid: str | None = None
    """The channel the next cycles use (None: the next cycle opens one)."""
    channels: list[str] = field(default_factory=list)
    signed: dict[tuple[str, int, int], tuple[Any, ...]] = field(default_factory=dict)
    survived: Counter[tuple[str, str]] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    """Where the time goes: restarting, waiting for agreement, the extra update."""
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.companies = start_companies(self.root, settings=SHORT_WINDOWS)

    # -- the processes -----------------------------------------------------------------------

    @property
    def payer(self) -> NodeHandle:
        return self.companies.manufacturer

    @property
    def payee(self) -> NodeHandle:
        return self.companies.carrier

    @property
    def arbiter(self) -> NodeHandle:
        return self.companies.arbiter

    def daemon(self, victim: str) -> Daemon:
        c = self.companies
        bank = c.cluster.bank
        assert bank is not None
        return {"payer": c.manufacturer, "payee": c.carrier, "arbiter": c.arbiter,
                "bank": bank}[victim]

    def stop(self) -> None:
        self.companies.cluster.stop()

    def fail(self, what: str) -> CrashFailure:
        c = self.cycle
        where = "at the end of the run" if c is None else (
            f"cycle {c.number}, moment {c.moment!r}, kill -9 of the {c.victim}"
            f"{' (' + c.detail + ')' if c.detail else ''}")
        return CrashFailure(f"crash suite seed {self.seed}, {where}: {what}\n"
                            f"(replay the choices with --seed {self.seed})")

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = check()
            except ClusterError as exc:  # a daemon still coming up, or answering 5xx
                last = exc
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise self.fail(f"timed out after {timeout_s:g} s waiting for {what}"
                        + (f" (last error: {last})" if last else ""))

    def api(self, handle: NodeHandle, method: str, path: str,
            body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """The admin API; a 5xx other than a peer being unreachable is counted and fails."""
        try:
            return handle.api(method, path, body, **kwargs)
        except ClusterError as exc:
            text = str(exc)
            if any(f": {code} " in text for code in range(500, 600)) and (
                    "PEER_UNAVAILABLE" not in text and "NOT_ACKNOWLEDGED" not in text):
                self.counts[SERVER_ERRORS] += 1
                raise self.fail(f"a 5xx from the admin API: {text}") from None
            raise

    def channel(self, handle: NodeHandle, cid: str) -> dict[str, Any]:
        view: dict[str, Any] = self.api(handle, "GET", f"/api/channels/{cid}")
        return view

    def kill(self, victim: str) -> None:
        """kill -9 of one process; with the payer or payee down, its committed state is read."""
        self.counts[f"kill {victim}"] += 1
        self.daemon(victim).stop(kill=True)
        if self.cid is not None:
            self.check_receipts(self.cid, down=victim)

    def restart(self, victim: str) -> None:
        started = time.monotonic()
        self.daemon(victim).start(timeout_s=60)
        self.seconds["restart"] += time.monotonic() - started

    # -- the per-cycle checks ---------------------------------------------------------------

    def committed(self, handle: NodeHandle, cid: str) -> ch.ChannelState | None:
        """The channel as `handle` committed it (its SQLite file; the process may be dead)."""
        db = handle.directory / "meterline.sqlite"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            row = conn.execute("SELECT state FROM channel WHERE id = ?", (cid,)).fetchone()
        if row is None:
            return None
        state = decode_channel(row[0])
        self.observe(cid, state)
        return state

    def observe(self, cid: str, state: ch.ChannelState) -> None:
        """Record what each nonce signed; the same nonce with other content is a double sign."""
        for sender, flow in enumerate(state.flows):
            if flow.nonce == 0:
                continue
            content = (flow.amount, flow.direct_amount, tuple(flow.quantities),
                       flow.usage_digest.hex())
            key = (cid, sender, flow.nonce)
            seen = self.signed.setdefault(key, content)
            self.counts["nonces observed"] += seen is content
            if seen != content:
                raise self.fail(f"nonce {flow.nonce} of party {sender} on {cid[:12]} was "
                                f"signed twice: {seen} and {content}")

    def check_receipts(self, cid: str, *, down: str | None = None) -> None:
        """Every update the payer holds a receipt for is in the payee's committed state."""
        if down == "payer":
            state = self.committed(self.payer, cid)
            acked = 0 if state is None else state.sent.acked_nonce
        else:
            acked = self.channel(self.payer, cid)["acked_nonce_sent"]
        if down == "payee":
            state = self.committed(self.payee, cid)
            received = 0 if state is None else state.received.nonce
        else:
            try:
                received = self.channel(self.payee, cid)["nonce_received"]
            except ClusterError as exc:
                if "404" not in str(exc):
                    raise
                received = 0
        self.counts["receipt checks"] += 1
        if received < acked:
            self.counts[LOST] += acked - received
            raise self.fail(f"the payer holds a receipt for update {acked}, the payee "
                            f"committed only {received}")

    def agree(self, cid: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until payer and payee, both up, say the same; return the payer's view."""
        def same() -> dict[str, Any] | None:
            a, b = self.channel(self.payer, cid), self.channel(self.payee, cid)
            if (a["phase"] == b["phase"] and a["nonce_sent"] == a["acked_nonce_sent"]
                    == b["nonce_received"] and a["sent"] == b["received"]
                    and a["received"] == b["sent"] and a["units"]["sent"]
                    == b["units"]["received"]):
                return a
            return None
        started = time.monotonic()
        view: dict[str, Any] = self.wait(f"payer and payee to agree on {cid[:12]}", same,
                                         timeout_s)
        self.seconds["agree"] += time.monotonic() - started
        for handle in (self.payer, self.payee):
            self.committed(handle, cid)
        return view

    def still_works(self, cid: str) -> None:
        """One more update, signed and receipted, seen by the payee."""
        started = time.monotonic()
        before = self.channel(self.payer, cid)["acked_nonce_sent"]
        after = self.pay(cid, 1)
        self.seconds["one more update"] += time.monotonic() - started
        if after["acked_nonce_sent"] != before + 1:
            raise self.fail(f"one more update after the restart: acked {before} → "
                            f"{after['acked_nonce_sent']}")
        self.agree(cid)

    def pay(self, cid: str, repeat: int, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.api(
            self.payer, "POST", f"/api/channels/{cid}/pay",
            {"units": {"km": "1"}, "reference": f"CRASH-{len(self.channels)}",
             "repeat": repeat}, **kwargs)
        return answer

    def settled(self, cid: str, timeout_s: float = 90.0) -> None:
        started = time.monotonic()
        self.wait(f"{cid[:12]} to settle on both sides",
                  lambda: all(self.channel(h, cid)["phase"] == "settled"
                              for h in (self.payer, self.payee)), timeout_s)
        self.seconds["settle"] += time.monotonic() - started

    def survive(self, cycle: Cycle) -> None:
        self.survived[(cycle.victim, cycle.moment)] += 1

    # -- the end of the run -----------------------------------------------------------------

    def bank(self, path: str) -> Any:
        with urllib.request.urlopen(self.companies.cluster.bank_url + path,
                                    timeout=30) as resp:
            return json.loads(resp.read())

    def finish(self) -> None:
        """Close what is open, then hold the bank's books against every channel."""
        self.cycle = None
        if self.cid is not None:
            self.api(self.payer, "POST", f"/api/channels/{self.cid}/close", {})
            self.cid = None
        for cid in self.channels:
            self.settled(cid)
        try:
            self.wait("every outbox to drain (nothing retried for ever)", self.drained, 60)
        except CrashFailure as exc:
            left = [f"{h.name}: {r['kind']} {r['purpose']} {r['channel'][:12]} to "
                    f"{r['recipient'][:12] or 'the bank'}, {r['attempts']} attempts, "
                    f"{r['last_error'][:160]}"
                    for h in (self.payer, self.payee, self.arbiter)
                    for r in self.api(h, "GET", "/api/outbox")["outbox"] if not r["refused"]]
            raise self.fail("outboxes still hold deliveries:\n" + "\n".join(left)) from exc
        self.wait("the escrow account to empty",
                  lambda: self.companies.balances()["escrow"] == 0, 60)
        escrow = self.bank("/_sandbox/accounts/escrow")["transactions"]
        by_reference = Counter(t["reference"] for t in escrow)
        amounts = {t["reference"]: t["amount_minor"] for t in escrow}
        for cid in self.channels:
            channel_id = bytes.fromhex(cid)
            deposits = [bank_reference(channel_id, Purpose.DEPOSIT, p) for p in (0, 1)]
            closing = [bank_reference(channel_id, Purpose.PAYOUT, p) for p in (0, 1)]
            checkpoints = self.checkpoint_payouts(cid)
            payouts = closing + sorted(checkpoints)
            for ref in deposits + payouts:
                if by_reference[ref] > 1:
                    self.counts[DOUBLE] += by_reference[ref] - 1
                    raise self.fail(f"{ref} of {cid[:12]} is booked at the bank "
                                    f"{by_reference[ref]} times")
            for ref, owed in checkpoints.items():
                if amounts.get(ref) != owed:
                    raise self.fail(f"checkpoint payout {ref} of {cid[:12]}: the nodes signed "
                                    f"{owed}, the bank moved {amounts.get(ref, 0)}")
            paid_in = sum(amounts.get(ref, 0) for ref in deposits)
            paid_out = sum(amounts.get(ref, 0) for ref in payouts)
            if paid_in != paid_out or paid_in == 0:
                raise self.fail(f"{cid[:12]}: deposits {paid_in} but payouts {paid_out} "
                                f"(checkpoints {sum(checkpoints.values())}, the close "
                                f"{paid_out - sum(checkpoints.values())})")
            for handle in (self.payer, self.payee):
                shown = {t["reference"]: t for t in self.channel(handle, cid)["settlement"]
                         if t["purpose"] == "payout"}
                for ref in closing:
                    moved = amounts.get(ref, 0)
                    amount = shown.get(ref, {}).get("amount") or {"amount": "0"}
                    if int(Decimal(amount["amount"]) * 100) != moved:
                        raise self.fail(f"{handle.name} shows payout {ref} as {amount}, the "
                                        f"bank moved {moved}")
            self.counts["payouts checked"] += sum(1 for ref in payouts if ref in amounts)

    def checkpoint_payouts(self, cid: str) -> dict[str, int]:
        """Each checkpoint payout the payer and payee recorded, by reference: both must list
        the same ones with the same amounts. Checkpoint 0 is the final close's payout (shown
        among the settlements once the arbiter told its outcome, ADR 0320): counted with the
        close, not here."""
        views = []
        for handle in (self.payer, self.payee):
            views.append({s["reference"]: int(Decimal(s["amount"]["amount"]) * 100)
                          for s in self.channel(handle, cid)["settlements"]
                          if s["checkpoint"] != 0})
        if views[0] != views[1]:
            raise self.fail(f"payer and payee list other checkpoint payouts on {cid[:12]}: "
                            f"{views[0]} and {views[1]}")
        self.counts["checkpoint payouts checked"] += len(views[0])
        return views[0]

    def drained(self) -> bool:
        """No daemon has a delivery left to make (pending rows; refused ones are final)."""
        return not any(not row["refused"] for handle in (self.payer, self.payee, self.arbiter)
                       for row in self.api(handle, "GET", "/api/outbox")["outbox"])

    def figures(self) -> dict[str, Any]:
        by_victim: Counter[str] = Counter()
        by_moment: Counter[str] = Counter()
        for (victim, moment), n in self.survived.items():
            by_victim[victim] += n
            by_moment[moment] += n
        return {"seed": self.seed, "cycles": sum(self.survived.values()),
                "seconds": round(time.monotonic() - self.started, 1),
                "channels": len(self.channels), "by_victim": dict(by_victim),
                "by_moment": dict(by_moment),
                "by_victim_and_moment": {f"{v}/{m}": n for (v, m), n
                                         in sorted(self.survived.items())},
                "seconds_in": {k: round(v, 1) for k, v in sorted(self.seconds.items())},
                "checks": {k: v for k, v in self.counts.items()
                           if k not in (LOST, DOUBLE, SERVER_ERRORS)},
                LOST: self.counts[LOST], DOUBLE: self.counts[DOUBLE],
                SERVER_ERRORS: self.counts[SERVER_ERRORS]}
