"""The node shows the money that moves: its balance's payout and the expected payouts are the
arbiter's payouts for the same totals (one rule, protocol.payout)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node import views
from protocol.simulation import Simulation
from protocol.tariff import TariffLine, TariffTier
from protocol.types import Amount, MinorUnits

KM = TariffLine("km", 3, (TariffTier(None, Amount(12_300)),))


@pytest.mark.parametrize("over", [0, 40])
def test_shown_balance_equals_the_arbiter_payout(over: int) -> None:
    """What each node shows as its balance is what the arbiter pays it for the same totals,
    including the over-deposit; and what a node expects once the close is signed, too."""
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=300)
    sim.open()
    if over:
        sim.deposit(1, over)
    sim.pay(0, (80_001,))
    sim.pay(1, (2_000,))
    shown = [views.balance(state)["payout"] for state in sim.states]
    decided = sim.close()
    assert decided.state.payouts is not None
    paid = (decided.state.payouts.opener, decided.state.payouts.peer)
    assert shown == [f"{p // 100}.{p % 100:02d}" for p in paid]
    for state in sim.states:
        assert views.expected_payouts(state) == paid


def test_never_opened_balance_is_the_refund() -> None:
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=300)
    sim.open()
    half = [replace(s, funded=(MinorUnits(10_000), MinorUnits(0))) for s in sim.states]
    assert views.balance(half[0])["payout"] == "100.00"
    assert views.balance(half[1])["payout"] == "0.00"
