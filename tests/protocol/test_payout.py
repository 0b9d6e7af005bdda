"""The one payout rule (protocol.payout): tables for the refund, the over-deposit, the zero floor
and the rounding at exponents 0, 2 and 3; the arbiter's machine pays by it."""

from __future__ import annotations

import pytest

from protocol import arbiter as arb
from protocol.messages import ChannelTerms
from protocol.payout import Payouts, cumulative_shares, exact_share, payouts
from protocol.simulation import Simulation
from protocol.types import Amount, MinorUnits

from .conftest import KM


def terms(deposits: tuple[int, int], currency: str = "EUR", scale: int = 6) -> ChannelTerms:
    sim = Simulation.create(tariff=(KM,), opener_deposit=deposits[0],
                            peer_deposit=deposits[1], currency=currency, scale=scale)
    return sim.terms


def P(opener: int, peer: int, residual: int = 0) -> Payouts:
    return Payouts(MinorUnits(opener), MinorUnits(peer), Amount(residual))


@pytest.mark.parametrize(
    ("deposits", "held", "sent", "currency", "expected"),
    [
        # never opened: what each side paid in goes back, whatever the totals say
        ((100, 50), (0, 0), (0, 0), "EUR", P(0, 0)),
        ((100, 50), (100, 0), (0, 0), "EUR", P(100, 0)),
        ((100, 50), (100, 49), (30_000, 0), "EUR", P(100, 49)),
        # open, exactly funded: deposit − sent + received, the payee rounded down
        ((100, 50), (100, 50), (0, 0), "EUR", P(100, 50)),
        ((10_000, 0), (10_000, 0), (12_345_678, 0), "EUR", P(8766, 1234, 5678)),
        # over-deposit: the extra goes back to whoever paid it in, on top of its share
        ((100, 50), (130, 50), (0, 0), "EUR", P(130, 50)),
        ((100, 0), (100, 7), (25_000, 0), "EUR", P(98, 9, 5_000)),
        ((1000, 0), (1005, 0), (1_999_999, 0), "JPY", P(1004, 1, 999_999)),
        # zero floor: a side cannot be owed less than nothing, the other gets all
        ((100, 0), (100, 0), (3_000_000, 0), "EUR", P(0, 100)),
        ((100, 0), (100, 0), (0, 5_000_000), "EUR", P(100, 0)),
        # exponents 0, 2 and 3 at scale 6
        ((1000, 0), (1000, 0), (1_999_999, 0), "JPY", P(999, 1, 999_999)),
        ((100, 100), (100, 100), (10_000, 0), "EUR", P(99, 101, 0)),
        ((100, 100), (100, 100), (10_001, 0), "EUR", P(100 - 1, 100 + 1, 1)),
        ((1000, 0), (1000, 0), (123_456, 0), "KWD", P(877, 123, 456)),
    ],
)
def test_payouts_table(deposits: tuple[int, int], held: tuple[int, int], sent: tuple[int, int],
                       currency: str, expected: Payouts) -> None:
    t = terms(deposits, currency)
    got = payouts(t, (MinorUnits(held[0]), MinorUnits(held[1])), *sent)
    assert got == expected
    assert got.opener + got.peer == sum(held)  # every minor unit held is paid, none twice


@pytest.mark.parametrize("exponent", [0, 2, 3])
def test_cumulative_shares_add_up_and_round_the_payee_down(exponent: int) -> None:
    unit = 10 ** (6 - exponent)
    for sent in (0, 1, unit - 1, unit, unit + 1, 37 * unit + 5, 500 * unit):
        s = cumulative_shares(opener_deposit=MinorUnits(1000), peer_deposit=MinorUnits(0),
                              opener_sent=Amount(sent), peer_sent=Amount(0), scale=6,
                              exponent=exponent)
        assert s.opener + s.peer == 1000
        assert s.peer == sent // unit  # the payee, rounded down
        assert s.residual == sent % unit  # left with the payer, never lost


def test_exact_share_is_what_payouts_rounds() -> None:
    t = terms((100, 20))
    held = (MinorUnits(103), MinorUnits(20))
    share = exact_share(t, held, 1, 234_567, 0)
    assert share == 20 * 10_000 + 234_567
    assert payouts(t, held, 234_567, 0).peer == share // 10_000
    # the floor: the opener sent more than it holds evidence for; its extra 3 still go back
    assert exact_share(t, held, 0, 1_234_567, 0) == 3 * 10_000
    assert exact_share(t, held, 1, 1_234_567, 0) == 120 * 10_000
    assert payouts(t, held, 1_234_567, 0) == P(3, 120)
    assert exact_share(t, (MinorUnits(40), MinorUnits(0)), 0, 5, 0) == 40 * 10_000  # refund


def test_the_arbiter_machine_pays_by_the_rule() -> None:
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=500)
    sim.open()
    sim.deposit(0, 25)  # an over-deposit after opening
    sim.pay(0, (123_457,))
    sim.pay(1, (1_000,))
    decided = sim.close()
    got = decided.state.payouts
    assert got == payouts(sim.terms, decided.state.deposited,
                          sim.states[0].sent.amount, sim.states[1].sent.amount)
    paid = {e.party: e.amount for e in decided.effects if isinstance(e, arb.SubmitPayout)}
    assert paid == {0: got.opener, 1: got.peer}
    # the opener sent 1.518521 EUR and got 0.0123 back: the peer is owed 5.00 + 1.506221
    assert (got.opener, got.peer, got.residual) == (10_025 - 150, 500 + 150, 6_221)
