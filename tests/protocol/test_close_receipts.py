"""Receipts never run ahead of the close a node has signed (specs/0003 §7).

Otherwise a payer could keep streaming after the payee signed a close, collect receipts, and
then co-sign the payee's earlier, smaller close: paid for less than was acknowledged.
"""

from __future__ import annotations

from protocol import channel as ch
from protocol.simulation import Simulation
from protocol.tariff import parse_tariff_line
from protocol.types import Quantity


def test_no_receipt_beyond_the_signed_close_until_a_new_close_covers_it() -> None:
    sim = Simulation.create(tariff=(parse_tariff_line("km=0.01", scale=6),),
                            opener_deposit=100_000)
    sim.open()
    sim.pay(0, (1_000,))  # nonce 1, receipted
    payee, payer = 1, 0
    # the payee signs a close on what it holds now (nonce 1) ...
    first = ch.step(sim.states[payee], ch.ActionClose(sim.peer), now_ms=sim.tick())
    sim.states[payee] = first.state
    b1 = first.state.close
    assert b1 is not None
    assert b1.opener_nonce == 1
    # ... and a proof the payer had in flight lands after that (nonce 2)
    proof = ch.build_proof(sim.states[payer], ch.ActionPay(sim.opener, (Quantity(1_000),)),
                           now_ms=sim.tick())
    sim.states[payee] = ch.step(sim.states[payee], ch.ReceiveProof(proof),
                                now_ms=sim.now_ms).state
    assert sim.states[payee].received.nonce == 2
    ack = ch.step(sim.states[payee], ch.ActionAcknowledge(sim.peer), now_ms=sim.now_ms)
    (receipt,) = ack.effects
    assert isinstance(receipt, ch.SendReceipt)
    assert receipt.receipt.nonce == 1  # held, but not acknowledged past the signed close
    assert receipt.receipt.amount == b1.opener_amount
    # once the payee signs a close that carries nonce 2, it acknowledges nonce 2
    second = ch.step(ack.state, ch.ActionClose(sim.peer), now_ms=sim.tick())
    assert second.state.close is not None
    assert second.state.close.opener_nonce == 2
    ack2 = ch.step(second.state, ch.ActionAcknowledge(sim.peer), now_ms=sim.now_ms)
    (receipt2,) = ack2.effects
    assert isinstance(receipt2, ch.SendReceipt)
    assert receipt2.receipt.nonce == 2
