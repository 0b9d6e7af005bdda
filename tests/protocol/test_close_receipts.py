"""Receipts never run ahead of the close a node has signed, and a node signs one close body
per channel (specs/0003 §7.3).

Otherwise a payer could keep streaming after the payee signed a close, collect receipts, and
then co-sign the payee's earlier, smaller close: paid for less than was acknowledged. With a
second close body the cap would move and the first body would still be valid at the arbiter.
"""

from __future__ import annotations

from protocol import channel as ch
from protocol.simulation import Simulation
from protocol.tariff import parse_tariff_line
from protocol.types import Quantity


def test_no_receipt_beyond_the_signed_close_and_no_second_close_body() -> None:
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
    # asked to close again, the payee sends the body it signed; it never signs a second one
    second = ch.step(ack.state, ch.ActionClose(sim.peer), now_ms=sim.tick())
    assert second.effects == (ch.SendClose(b1),)
    assert second.state.close == b1
    # a close request from the payer at nonce 2 is answered with the same body
    request = ch.close_body(sim.states[payer]).signed_by(sim.opener, "opener_signature")
    request = ch.CooperativeClose(request.channel_id, 2, proof.amount, request.peer_nonce,
                                  request.peer_amount, request.opener_signature,
                                  request.peer_signature).signed_by(sim.opener,
                                                                    "opener_signature")
    answered = ch.step(second.state, ch.ReceiveClose(request), now_ms=sim.tick())
    assert answered.effects == (ch.SendClose(b1),)
    assert answered.state.close == b1
    again = ch.step(answered.state, ch.ActionClose(sim.peer), now_ms=sim.tick())
    assert again.effects == (ch.SendClose(b1),)
    ack2 = ch.step(again.state, ch.ActionAcknowledge(sim.peer), now_ms=sim.now_ms)
    (receipt2,) = ack2.effects
    assert isinstance(receipt2, ch.SendReceipt)
    assert receipt2.receipt.nonce == 1
