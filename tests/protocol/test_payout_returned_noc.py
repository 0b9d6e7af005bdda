"""An ACH notification of change (C01-C13) read back with a booked payout corrects the account
LATER payouts to that party go to — the machine's rule (specs/0004 §9, ADR 0272); a newer
account the party signs still wins."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import arbiter as arb
from protocol import transfers as tr
from protocol.errors import ErrorCode, LocalProtocolError
from protocol.messages import EMPTY_SIGNATURE, BankAccount, PayoutAccount
from protocol.simulation import Simulation

ABA = BankAccount("US.ABA", "021000021:12345678", "Peer Inc")


@pytest.mark.parametrize(("code", "data", "identification"), [
    ("C01", "98765432101", "021000021:98765432101"),
    ("C02", "011000015", "011000015:12345678"),
    ("C03", "011000015   555444333", "011000015:555444333"),
    ("C06", "777888999           22", "021000021:777888999"),
    ("C07", "011000015" + "44443333222".ljust(17) + "32", "011000015:44443333222"),
])
def test_each_account_correcting_code_names_the_corrected_account(
    code: str, data: str, identification: str,
) -> None:
    fixed = tr.corrected_account(ABA, code, data)
    assert fixed == BankAccount("US.ABA", identification, "Peer Inc")


@pytest.mark.parametrize(("code", "data"), [
    ("C05", "32"), ("C09", "NEWID"), ("C01", ""), ("C02", "12345"), ("C01", "12345678"),
    ("C01", "1" * 18),
])
def test_a_change_that_names_no_new_account_changes_nothing(code: str, data: str) -> None:
    assert tr.corrected_account(ABA, code, data) is None


def test_a_noc_redirects_the_next_checkpoint_payout_until_the_party_signs_a_newer_account(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(peer_deposit=0)
    sim.open()
    assert sim.escrow is not None
    named = PayoutAccount(sim.terms.channel_id, sim.peer.node_id, ABA, 10,
                          EMPTY_SIGNATURE).signed_by(sim.peer)
    sim.escrow = arb.step(sim.escrow, arb.ReceivePayoutAccount(named), now_ms=sim.tick()).state
    sim.pay(0, (300_000,))
    first = sim.checkpoint(0)
    (paid,) = [e for e in first.effects if isinstance(e, arb.SubmitPayout)]
    assert paid.account == ABA
    sim.book(first)
    # the RDFI booked it and says: the account number is 98765432101 now
    with pytest.raises(LocalProtocolError) as err:
        arb.step(sim.escrow, arb.ObservePayoutCorrected(paid.reference, "R01", "x", 20),
                 now_ms=sim.tick())
    assert err.value.code is ErrorCode.INVALID_FIELD
    corrected = arb.step(sim.escrow, arb.ObservePayoutCorrected(
        paid.reference, "C01", "98765432101", 20), now_ms=sim.tick())
    assert not corrected.effects  # nothing is paid again: the payout was booked
    again = arb.step(corrected.state, arb.ObservePayoutCorrected(
        paid.reference, "C01", "98765432101", 21), now_ms=sim.tick())
    assert again.state is corrected.state  # the same notice read again changes nothing
    sim.escrow = corrected.state
    sim.pay(0, (200_000,))
    second = sim.checkpoint(0)
    (later,) = [e for e in second.effects if isinstance(e, arb.SubmitPayout)]
    assert later.account.identification == "021000021:98765432101"
    assert later.reference != paid.reference
    sim.book(second)
    # the payee signs a newer account of its own: that wins over the bank's correction
    own = BankAccount("US.ABA", "011000015:4444", "Peer Inc")
    newer = PayoutAccount(sim.terms.channel_id, sim.peer.node_id, own, 30,
                          EMPTY_SIGNATURE).signed_by(sim.peer)
    sim.escrow = arb.step(sim.escrow, arb.ReceivePayoutAccount(newer), now_ms=sim.tick()).state
    sim.pay(0, (100_000,))
    (third,) = [e for e in sim.checkpoint(0).effects if isinstance(e, arb.SubmitPayout)]
    assert third.account == own
