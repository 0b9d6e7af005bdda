"""Early funding is machine state (0003 §3, §4): the arbiter may confirm the deposits before the
peer's acceptance reaches the opener; the opener's machine keeps them in `proposed` and opens
when the acceptance lands — nothing held in memory beside the state."""

from __future__ import annotations

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.simulation import Simulation
from protocol.types import MinorUnits

from .conftest import KM


def test_confirmations_before_the_acceptance_open_the_channel_when_it_lands() -> None:
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=500)
    proposed = ch.propose(sim.terms, sim.opener, now_ms=1)
    proposal = proposed.effects[0].proposal  # type: ignore[union-attr]
    accepted = ch.accept(proposal, sim.peer, now_ms=2)
    acceptance = accepted.effects[0].acceptance  # type: ignore[union-attr]
    escrow = arb.register(proposal, acceptance, sim.arbiter.node_id, now_ms=3)
    confirmations = []
    for party, amount in ((0, 10_000), (1, 500)):
        t = arb.step(escrow, arb.ObserveDeposit(sim.arbiter, party, MinorUnits(amount),
                                                f"e{party}", "ref", 4), now_ms=4)
        escrow = t.state
        confirmations += [e.confirmation for e in t.effects
                          if isinstance(e, arb.SendFundingConfirmation)]

    state = proposed.state
    for conf in confirmations:
        t = ch.step(state, ch.ReceiveFunding(conf), now_ms=5)
        assert t.state.phase is ch.Phase.PROPOSED
        assert t.effects == ()
        state = t.state
    assert state.funded == (10_000, 500)
    again = ch.step(state, ch.ReceiveFunding(confirmations[0]), now_ms=6)
    assert again.state is state  # a repeat changes nothing, not even the time

    opened = ch.step(state, ch.ReceiveAcceptance(acceptance), now_ms=7)
    assert opened.state.phase is ch.Phase.OPEN
    assert [type(e) for e in opened.effects] == [ch.RegisterWithArbiter, ch.NotifyOpened]


def test_a_partial_early_confirmation_waits_for_the_rest() -> None:
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=500)
    proposed = ch.propose(sim.terms, sim.opener, now_ms=1)
    proposal = proposed.effects[0].proposal  # type: ignore[union-attr]
    acceptance = ch.accept(proposal, sim.peer, now_ms=2).effects[0].acceptance  # type: ignore[union-attr]
    escrow = arb.register(proposal, acceptance, sim.arbiter.node_id, now_ms=3)
    t = arb.step(escrow, arb.ObserveDeposit(sim.arbiter, 0, MinorUnits(10_000), "e0", "r", 4),
                 now_ms=4)
    (effect,) = t.effects
    assert isinstance(effect, arb.SendFundingConfirmation)
    state = ch.step(proposed.state, ch.ReceiveFunding(effect.confirmation), now_ms=5).state
    accepted = ch.step(state, ch.ReceiveAcceptance(acceptance), now_ms=6)
    assert accepted.state.phase is ch.Phase.ACCEPTED
    assert [type(e) for e in accepted.effects] == [ch.RegisterWithArbiter]
