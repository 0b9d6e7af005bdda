"""The storage codec keeps what checkpoints, top-ups and returned payouts add to the channel and
escrow states (issue 9): a restart must not forget what was paid out at checkpoints, or the
arbiter would pay it twice. Rows written before these fields existed still decode."""

from __future__ import annotations

import msgpack

from node.storage.codec import decode_channel, decode_escrow, encode_channel, encode_escrow
from protocol import arbiter as arb
from protocol.messages import EMPTY_SIGNATURE, BankAccount, PayoutAccount
from protocol.simulation import Simulation
from protocol.tariff import TariffLine, TariffTier
from protocol.transfers import TransferStatus
from protocol.types import Amount, MinorUnits

KM = TariffLine("km", 3, (TariffTier(None, Amount(12_300)),))


def long_lived() -> Simulation:
    """A channel with a top-up, two checkpoints, a returned payout paid again."""
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=0)
    sim.open()
    sim.topup(0, 2_000)
    sim.pay(0, (400_000,))
    first = sim.checkpoint(0)
    (payout,) = [e for e in first.effects if isinstance(e, arb.SubmitPayout)]
    assert sim.escrow is not None
    sim.escrow = arb.step(sim.escrow, arb.ObservePayoutReturned(payout.reference, "AC04", 5),
                          now_ms=sim.tick()).state
    account = PayoutAccount(sim.terms.channel_id, sim.peer.node_id,
                            BankAccount("IBAN", "FR7630006000011234567890189", "Peer SA"),
                            sim.tick(), EMPTY_SIGNATURE).signed_by(sim.peer)
    sim.escrow = arb.step(sim.escrow, arb.ReceivePayoutAccount(account), now_ms=sim.tick()).state
    sim.pay(0, (100_000,))
    sim.book(sim.checkpoint(1))
    return sim


def test_checkpoint_state_survives_a_restart() -> None:
    sim = long_lived()
    escrow = sim.escrow
    assert escrow is not None
    assert escrow.checkpoint is not None
    assert escrow.withdrawn == (0, 615)
    assert {t.status for t in escrow.transfers} == {TransferStatus.RETURNED,
                                                    TransferStatus.SUBMITTED,
                                                    TransferStatus.BOOKED}
    assert decode_escrow(encode_escrow(escrow)) == escrow
    for state in sim.states:
        assert state.checkpoint is not None
        assert state.topped_up == (2_000, 0)
        assert decode_channel(encode_channel(state)) == state


def test_topup_and_checkpoint_fields_default_for_rows_written_before() -> None:
    sim = long_lived()
    assert sim.escrow is not None
    old_escrow = msgpack.packb(msgpack.unpackb(encode_escrow(sim.escrow))[:15], use_bin_type=True)
    old_channel = msgpack.packb(msgpack.unpackb(encode_channel(sim.states[0]))[:15],
                                use_bin_type=True)
    escrow, channel = decode_escrow(old_escrow), decode_channel(old_channel)
    assert escrow.transfers == ()
    assert escrow.withdrawn == (MinorUnits(0), MinorUnits(0))
    assert channel.checkpoint is None
    assert channel.topped_up == (0, 0)
    assert escrow.deposited == sim.escrow.deposited
