"""node.events derives the ERP's events from committed transitions (state before → after): each
change once, in order, with the amounts that moved — checked on the protocol's own simulation,
including what the daemon e2e tests cannot easily reach (checkpoint payouts, returned payouts,
late deposits held for refund)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from node.events import (
    Report,
    channel_changes,
    escrow_changes,
    matches,
    parse_types,
    payment_change,
    transfer_change,
)
from node.storage.models import Transfer
from protocol import arbiter as arb
from protocol import channel as ch
from protocol.simulation import Simulation
from protocol.types import MinorUnits
from rails.port import PaymentRecord, PaymentStatus

from .conftest import KM


def sim(peer_deposit: int = 5_000) -> Simulation:
    return Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=peer_deposit)


class Recorder:
    """Every event the shell would append, diffing each side's state as the simulation runs."""

    def __init__(self, s: Simulation) -> None:
        self.s = s
        self.node: list[ch.ChannelState | None] = [None, None]
        self.escrow: arb.ArbiterState | None = None
        self.events: dict[str, list[tuple[str, dict[str, Any]]]] = {
            "opener": [], "peer": [], "arbiter": []}

    def sync(self, effects: tuple[object, ...] = ()) -> None:
        for i, name in ((0, "opener"), (1, "peer")):
            if i < len(self.s.states) and self.s.states[i] is not self.node[i]:
                self.events[name] += channel_changes(self.node[i], self.s.states[i])
                self.node[i] = self.s.states[i]
        if self.s.escrow is not None and (self.s.escrow is not self.escrow or effects):
            self.events["arbiter"] += escrow_changes(self.escrow, self.s.escrow, effects)
            self.escrow = self.s.escrow

    def types(self, who: str) -> list[str]:
        return [t for t, _ in self.events[who]]


def test_the_lifecycle_on_each_side() -> None:
    s = sim()
    r = Recorder(s)
    s.open()
    r.sync()
    s.pay(0, (5_000,))
    r.sync()
    r.sync(s.close(0).effects)
    decided = s.escrow
    assert decided is not None
    s.settle(arb.Transition(decided, ()))
    r.sync()
    for side in ("opener", "peer"):
        assert r.types(side) == ["channel.proposed", "deposit.confirmed", "deposit.confirmed",
                                 "channel.opened", "channel.closed", "channel.settled"]
    deposits = [d for t, d in r.events["peer"] if t == "deposit.confirmed"]
    assert [(d["party"], d["amount"]) for d in deposits] == [("opener", "100.00"),
                                                             ("peer", "50.00")]
    settled = r.events["peer"][-1][1]
    assert settled["role"] == "peer"
    assert Decimal(settled["payout"]) == Decimal("50.00") + Decimal("0.06")  # 5 km × 0.0123
    assert r.types("arbiter") == ["channel.proposed", "deposit.confirmed", "deposit.confirmed",
                                  "channel.opened", "payout.booked", "payout.booked",
                                  "channel.settled"]


def test_a_state_seen_again_is_no_event() -> None:
    s = sim()
    s.open()
    state = s.states[1]
    assert channel_changes(state, state) == []
    assert s.escrow is not None
    assert escrow_changes(s.escrow, s.escrow, ()) == []


def test_checkpoint_paid_and_a_returned_payout_on_the_arbiter() -> None:
    s = sim(peer_deposit=0)
    s.open()
    r = Recorder(s)
    r.sync()
    r.events["arbiter"].clear()
    s.pay(0, (300_000,))
    decided = s.checkpoint(0)
    r.sync(decided.effects)
    s.book(decided)
    r.sync()
    paid = [d for t, d in r.events["arbiter"] if t == "checkpoint.paid"]
    assert len(paid) == 1
    assert paid[0]["checkpoint"] == 1
    assert paid[0]["party"] == "peer"
    assert Decimal(paid[0]["amount"]) > 0
    # a second checkpoint's payout comes back from the bank
    s.pay(0, (100_000,))
    second = s.checkpoint(0)
    r.sync(second.effects)
    (payout,) = [e for e in second.effects if isinstance(e, arb.SubmitPayout)]
    assert s.escrow is not None
    s.escrow = arb.step(s.escrow, arb.ObservePayoutReturned(payout.reference, "AC04", 1),
                        now_ms=s.tick()).state
    r.sync()
    returned = [d for t, d in r.events["arbiter"] if t == "payout.returned"]
    assert [(d["reason"], d["checkpoint"]) for d in returned] == [("AC04", 2)]


def test_a_late_deposit_held_for_refund_is_a_rejected_deposit() -> None:
    s = sim()
    s.open()
    s.close(0)
    assert s.escrow is not None
    held = arb.step(s.escrow, arb.ObserveDeposit(s.arbiter, 1, MinorUnits(700), "late-1",
                                                 "REF", s.now_ms), now_ms=s.tick())
    changes = escrow_changes(s.escrow, held.state, held.effects)
    assert [t for t, _ in changes] == ["deposit.rejected"]
    assert changes[0][1]["amount"] == "7.00"
    assert changes[0][1]["entry_id"] == "late-1"
    assert changes[0][1]["reason"] == "late"


def test_payments_are_aggregated_per_interval_and_add_up() -> None:
    s = sim()
    s.open()
    report, t, events = Report(), 1_000_000, []
    for _ in range(30):
        s.pay(0, (1_000,))
        t += 100  # a payment every 100 ms, interval 1 s
        due = payment_change(report, s.states[1], t, 1_000)
        if due is not None:
            events.append(due[0][1])
            report = due[1]
        assert payment_change(report, s.states[1], t, 1_000) is None or due is None
    rest = payment_change(report, s.states[1], t + 1_000, 1_000)
    assert rest is not None
    events.append(rest[0][1])
    assert rest[1].nonce == 30
    assert payment_change(rest[1], s.states[1], t + 5_000, 1_000) is None  # nothing new
    assert 3 <= len(events) <= 5
    assert sum(e["updates"] for e in events) == 30
    assert sum(Decimal(e["units"]["km"]) for e in events) == 30
    assert sum(Decimal(e["amount"]) for e in events) == Decimal(events[-1]["total_received"])
    assert [e["from_nonce"] for e in events[1:]] == [e["to_nonce"] + 1 for e in events[:-1]]
    # a phase change reports what is left at once (force), inside the interval
    s.pay(0, (1_000,))
    forced = payment_change(rest[1], s.states[1], t + 1_001, 1_000, force=True)
    assert forced is not None
    assert forced[0][1]["updates"] == 1


def test_a_refused_transfer_is_a_rejected_deposit_or_payout() -> None:
    row = Transfer(idempotency_key="k", channel_id="c", purpose="deposit", party=0,
                   amount_minor=500, currency="EUR", reference="R", creditor="{}",
                   status="pending", reason="", end_to_end_id="", created_ms=0, updated_ms=0)
    refused = PaymentRecord("k", "", PaymentStatus.REJECTED, 500, "EUR", reason_code="AM04",
                            reason="insufficient funds")
    change = transfer_change(row, refused)
    assert change is not None
    assert change[0] == "deposit.rejected"
    assert change[1]["reason_code"] == "AM04"
    assert change[1]["amount"] == "5.00"
    row.purpose = "payout"
    assert transfer_change(row, refused)[0] == "payout.rejected"  # type: ignore[index]
    returned = PaymentRecord("k", "", PaymentStatus.RETURNED, 500, "EUR", reason_code="AC04")
    assert transfer_change(row, returned)[0] == "payout.returned"  # type: ignore[index]
    row.status = "rejected"
    assert transfer_change(row, refused) is None  # seen before: no second event
    booked = PaymentRecord("k", "", PaymentStatus.BOOKED, 500, "EUR")
    row.status = "pending"
    assert transfer_change(row, booked) is None  # booked comes from the arbiter's state


@pytest.mark.parametrize(("text", "ok"), [
    ("*", True), ("channel.*", True), ("payment.received,payout.*", True),
    ("channel.exploded", False), ("nothing.*", False), ("", False), (" , ", False),
])
def test_event_type_filters(text: str, ok: bool) -> None:
    if not ok:
        with pytest.raises(ValueError, match=r"."):
            parse_types(text)
        return
    patterns = parse_types(text)
    assert matches(patterns, "payout.booked") == (text != "channel.*")
    assert matches(patterns, "channel.opened") == (text in ("*", "channel.*"))
