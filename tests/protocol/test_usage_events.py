"""protocol.usage_events: the plan of a batch and the commitment a proof carries (0003 §5.4)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import channel as ch
from protocol.messages import BalanceProof
from protocol.simulation import Simulation
from protocol.tariff import TariffLine, TariffTier, tariff_amount
from protocol.types import Amount, Quantity
from protocol.usage_events import (
    Outcome,
    Recorded,
    UsageEvent,
    commitment,
    event_key,
    plan,
)

# 0.50 per unit up to 10 units, then 0.30 (amount scale 2, quantity scale 0)
TIERED = TariffLine("km", 0, (TariffTier(Quantity(10), Amount(50)), TariffTier(None, Amount(30))))
HOUR = TariffLine("hour", 0, (TariffTier(None, Amount(175)),))
NOW = 1_764_680_400_000
DAY = 86_400_000


def ev(event_id: str, km: int = 1, hour: int = 0, *, ref: str = "", at: int = NOW
       ) -> UsageEvent:
    return UsageEvent(event_id, (km, hour), ref, at)


def run(events: list[UsageEvent], *, recorded: dict[str, Recorded] | None = None,
        sent: tuple[int, int] = (0, 0), capacity: int = 10_000) -> list[tuple[str, int, str]]:
    p = plan(events, tariff=(TIERED, HOUR), sent_quantities=sent,
             sent_amount=tariff_amount((TIERED, HOUR), sent), capacity=capacity, next_nonce=7,
             recorded=recorded or {}, now_ms=NOW, window_ms=DAY)
    return [(d.outcome.value, d.amount, d.code) for d in p.decisions]


def test_duplicates_inside_a_batch_charge_once_and_answer_the_first_result() -> None:
    assert run([ev("a", 2), ev("b", 0, 1), ev("a", 2), ev("a", 3)]) == [
        ("accepted", 100, ""), ("accepted", 175, ""), ("duplicate", 100, ""),
        ("refused", 0, "EVENT_ID_REUSED")]


def test_an_id_recorded_before_is_a_duplicate_with_its_original_result_or_refused() -> None:
    old = ev("a", 2)
    recorded = {"a": Recorded(old.content, 3, 100)}
    p = plan([old, ev("a", 5)], tariff=(TIERED, HOUR), sent_quantities=(2, 0), sent_amount=100,
             capacity=10_000, next_nonce=7, recorded=recorded, now_ms=NOW, window_ms=DAY)
    assert [(d.outcome, d.nonce, d.amount, d.code) for d in p.decisions] == [
        (Outcome.DUPLICATE, 3, 100, ""), (Outcome.REFUSED, 0, 0, "EVENT_ID_REUSED")]
    assert p.accepted == ()
    assert p.reference == ""


def test_the_window_and_the_clock_bound_what_is_accepted() -> None:
    assert [r[2] for r in run([ev("old", at=NOW - DAY - 1), ev("edge", at=NOW - DAY),
                               ev("soon", at=NOW + 300_001), ev("zero", 0)])] == [
        "EVENT_TOO_OLD", "", "EVENT_IN_FUTURE", "NOTHING_TO_PAY"]


def test_capacity_refuses_the_event_that_does_not_fit_and_keeps_the_rest() -> None:
    assert run([ev("a", 4), ev("b", 4), ev("c", 1)], capacity=350) == [
        ("accepted", 200, ""), ("refused", 0, "CAPACITY_EXCEEDED"), ("accepted", 50, "")]


def test_room_bounds_how_many_new_ids_are_accepted() -> None:
    p = plan([ev("a"), ev("b"), ev("a"), ev("c")], tariff=(TIERED, HOUR), sent_quantities=(0, 0),
             sent_amount=0, capacity=10_000, next_nonce=1, recorded={}, now_ms=NOW,
             window_ms=DAY, room=1)
    assert [(d.outcome.value, d.code) for d in p.decisions] == [
        ("accepted", ""), ("refused", "DEDUP_FULL"), ("duplicate", ""), ("refused", "DEDUP_FULL")]
    assert p.quantities == (1, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), min_size=1, max_size=30),
       st.tuples(st.integers(0, 20), st.integers(0, 5)))
def test_events_price_as_their_sum_through_graduated_tiers(
        units: list[tuple[int, int]], sent: tuple[int, int]) -> None:
    """Pricing event by event adds up to the one proof that carries them all."""
    events = [ev(f"e{i}", km, hour) for i, (km, hour) in enumerate(units)]
    p = plan(events, tariff=(TIERED, HOUR), sent_quantities=sent,
             sent_amount=tariff_amount((TIERED, HOUR), sent), capacity=10**12, next_nonce=1,
             recorded={}, now_ms=NOW, window_ms=DAY)
    accepted = [e for e in events if any(e.quantities)]
    assert len(p.accepted) == len(accepted)
    total = tuple(s + sum(e.quantities[i] for e in accepted) for i, s in enumerate(sent))
    assert sum(d.amount for d in p.decisions) == (
        tariff_amount((TIERED, HOUR), total) - tariff_amount((TIERED, HOUR), sent))
    assert p.quantities == tuple(t - s for t, s in zip(total, sent, strict=True))


def test_the_commitment_binds_ids_contents_and_order() -> None:
    a, b = ev("a"), ev("b", 2)
    ref = commitment([(a.id, a.content), (b.id, b.content)])
    assert ref.startswith("ev1:")
    assert len(ref) == 47
    assert ref != commitment([(b.id, b.content), (a.id, a.content)])
    assert ref != commitment([(a.id, a.content), (b.id, ev("b", 3).content)])
    assert ref != commitment([(a.id, a.content), ("c", b.content)])
    assert ev("a", ref="x").content != a.content
    assert UsageEvent("a", (1, 0), "", NOW, "/src", "t").content != a.content
    assert event_key(bytes(32), "a") != event_key(b"\x01" * 32, "a")
    assert len(event_key(bytes(32), "a")) == 16


def test_a_proof_with_the_commitment_is_what_the_peer_accepts() -> None:
    """The reference fits the wire's usage reference: the peer's machine takes the proof."""
    sim = Simulation.create(tariff=(TIERED, HOUR), opener_deposit=10_000, peer_deposit=0,
                            salt=bytes(16))
    sim.open()
    events = [ev("a", 3), ev("b", 12, 1)]
    state = sim.states[0]
    p = plan(events, tariff=(TIERED, HOUR), sent_quantities=state.sent.quantities,
             sent_amount=state.sent.amount, capacity=state.capacity(state.us),
             next_nonce=state.sent.nonce + 1, recorded={}, now_ms=NOW, window_ms=DAY)
    t = ch.step(state, ch.ActionPay(sim.opener, tuple(Quantity(q) for q in p.quantities),
                                    Amount(0), p.reference), now_ms=NOW)
    proof = t.effects[0].proof  # type: ignore[union-attr]
    assert proof.reference == p.reference
    assert BalanceProof.decode(proof.encode()) == proof  # the wire's USAGE_REFERENCE takes it
    assert proof.amount == sum(d.amount for d in p.decisions)
    peer = ch.step(sim.states[1], ch.ReceiveProof(proof), now_ms=NOW).state
    assert peer.received.amount == proof.amount
