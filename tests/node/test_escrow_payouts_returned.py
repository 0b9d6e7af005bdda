"""The arbiter shell's translation of the bank's answers about payouts into machine inputs
(node/escrow_payouts.py) and the persistence of what they lead to (returned attempts, an ACH
notification of change), without a bank: transfer rows as the rail left them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.bank import RETURN_WINDOW_S, read_bank
from node.escrow_payouts import NARRATIVE, bank_answers, correction, reason_code
from node.storage.codec import decode_escrow, encode_escrow
from node.storage.models import Transfer
from protocol import arbiter as arb
from protocol import transfers as tr
from protocol.messages import BankAccount
from protocol.simulation import Simulation
from rails.settings import RailConfigError
from tests.protocol.conftest import KM

NOC = ("C01 notification of change: incorrect DFI account number; corrected data "
       "'98765432101'")


def row(payout: arb.SubmitPayout, status: str, reason: str = "") -> Transfer:
    return Transfer(idempotency_key=payout.idempotency_key, channel_id="", purpose="payout",
                    party=payout.party, amount_minor=payout.amount, currency="EUR",
                    reference=payout.reference, creditor="{}", status=status, reason=reason,
                    end_to_end_id="E", created_ms=1, updated_ms=50)


def closed() -> tuple[Simulation, arb.Transition]:
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=5_000)
    sim.open()
    sim.pay(0, (300_000,))
    return sim, sim.close(0)


def test_reason_codes_and_corrections_are_read_from_the_rows_reason() -> None:
    assert reason_code("AC04 account closed") == "AC04"
    assert reason_code("R03 returned by the RDFI: no account") == "R03"
    assert reason_code("the bank said no") == NARRATIVE
    assert reason_code("") == NARRATIVE
    assert correction(NOC) == ("C01", "98765432101")
    assert correction("AC04 account closed") is None
    assert correction("C01 no data") is None


def test_each_answer_becomes_one_input_until_the_machine_took_it() -> None:
    sim, decided = closed()
    opener, peer = sorted((e for e in decided.effects if isinstance(e, arb.SubmitPayout)),
                          key=lambda e: e.party)
    rows = [row(opener, "booked"), row(peer, "rejected", "AC04 account closed")]
    inputs = bank_answers(decided.state, rows, sim.arbiter)
    assert [type(i) for i in inputs] == [arb.ObserveTransferBooked, arb.ObservePayoutReturned]
    returned = inputs[1]
    assert isinstance(returned, arb.ObservePayoutReturned)
    assert (returned.reference, returned.reason, returned.signer) == (
        peer.reference, "AC04", sim.arbiter)
    state = decided.state
    for event in inputs:
        state = arb.step(state, event, now_ms=sim.tick()).state
    assert bank_answers(state, rows, sim.arbiter) == []  # taken: nothing asked again
    # a row of another purpose, or a reference this escrow never paid, is no payout answer
    stray = row(peer, "returned", "MD07")
    stray.reference = "MLNOTOURS"
    deposit = row(opener, "booked")
    deposit.purpose = "deposit"
    assert bank_answers(state, [stray, deposit], sim.arbiter) == []
    # what the machine decided survives the codec, the returned attempt with its reason
    again = decode_escrow(encode_escrow(state))
    assert again == state
    assert [(t.party, t.status, t.reason) for t in again.transfers] == [
        (0, tr.TransferStatus.BOOKED, ""), (1, tr.TransferStatus.RETURNED, "AC04")]


def test_a_noc_and_its_correction_survive_the_codec() -> None:
    sim, decided = closed()
    state = decided.state
    fixed = tr.Correction(BankAccount("US.ABA", "021000021:98765432101", "Peer Inc"), "C01",
                          70)
    state = replace(state, corrections=(None, fixed))
    assert decode_escrow(encode_escrow(state)).corrections == (None, fixed)
    (peer,) = [e for e in decided.effects if isinstance(e, arb.SubmitPayout) and e.party == 1]
    inputs = bank_answers(decided.state, [row(peer, "booked", NOC)], sim.arbiter)
    assert [type(i) for i in inputs] == [arb.ObserveTransferBooked, arb.ObservePayoutCorrected]


def test_the_return_window_is_one_bank_setting() -> None:
    assert RETURN_WINDOW_S == 60 * 86_400  # ACH: unauthorized-entry returns up to 60 days
    assert read_bank({}).return_window_s == RETURN_WINDOW_S
    assert read_bank({"bank": {"return_window_s": 86_400}}).return_window_s == 86_400
    assert read_bank({"bank": {"return_window_s": 0}}).return_window_s == 0  # off
    # at most what the arbiter's machine remembers a booked payout for (ADR 0271)
    horizon_s = tr.RETURN_HORIZON_MS // 1000
    assert read_bank({"bank": {"return_window_s": horizon_s}}).return_window_s == horizon_s
    for bad in (-1, "60d", True, horizon_s + 1, 10**10):
        with pytest.raises(RailConfigError, match="return_window_s"):
            read_bank({"bank": {"return_window_s": bad}})


def test_a_forgotten_checkpoint_payout_booked_is_not_taken_for_the_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine forgets old booked attempts (protocol.transfers.bounded): their rows, still
    booked at the bank, must not book the close payout the bank has not booked yet."""
    monkeypatch.setattr(tr, "MAX_TRANSFERS", 2)
    monkeypatch.setattr(tr, "RETURN_HORIZON_MS", 0)  # forgotten once booked
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=0)
    sim.open()
    rows = []
    for _ in range(3):
        sim.pay(0, (100_000,))
        decided = sim.checkpoint(0)
        rows += [row(e, "booked") for e in decided.effects if isinstance(e, arb.SubmitPayout)]
        sim.book(decided)
    assert sim.escrow is not None
    known = {t.reference for t in sim.escrow.transfers}
    assert any(r.reference not in known for r in rows)  # checkpoint 1's attempt is forgotten
    sim.pay(0, (100_000,))
    closing = sim.close(0)
    close_rows = [row(e, "pending") for e in closing.effects if isinstance(e, arb.SubmitPayout)]
    assert closing.state.phase is arb.ArbiterPhase.PAYING
    assert bank_answers(closing.state, rows + close_rows, sim.arbiter) == []
