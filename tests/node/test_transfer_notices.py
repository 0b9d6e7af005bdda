"""A node applies the arbiter's TransferNotices to its checkpoint settlements (ADR 0320) on a
real database: a notice not signed by the channel's arbiter is refused and changes nothing; the
same notice twice changes it once (one event); an older attempt or an outcome behind the one held
is ignored; a notice for a checkpoint the node does not hold yet is "not yet" when pushed and
left for the next watch when read from a status."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from node.storage.models import Event, Settlement
from protocol import arbiter as arb
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BankAccount,
    EscrowStatus,
    PayoutAccount,
    TransferNotice,
)
from protocol.simulation import Simulation
from tests.node.conftest import Services, ServicesFactory, make_config, open_sim

CORRECTED = BankAccount("IBAN", "FR7630006000011234567890189", "Peer SA")


def told(t: arb.Transition) -> TransferNotice:
    (notice,) = [e.notice for e in t.effects if isinstance(e, arb.SendTransferNotice)]
    return notice


async def payee_with_checkpoint(tmp_path: Path, services: ServicesFactory, db_url: str
                                ) -> tuple[Simulation, Services, arb.Transition]:
    """The peer's node holding checkpoint 1 fully signed (it pays the peer 3.69 EUR), and the
    arbiter's transition that submitted the payout."""
    sim = open_sim()
    sim.pay(0, (300_000, 0))
    decided = sim.checkpoint(0)
    svc = await services(make_config(tmp_path / "peer", sim.peer, db_url=db_url))
    await svc.channels.commit(sim.states[1], new=True)
    svc.channels.states[sim.terms.channel_id.hex()] = sim.states[1]
    return sim, svc, decided


def booked_notice(sim: Simulation, decided: arb.Transition) -> TransferNotice:
    """The arbiter's notice that the checkpoint's payout was booked (at bank time 99)."""
    (payout,) = [e for e in decided.effects if isinstance(e, arb.SubmitPayout)]
    return told(arb.step(decided.state, arb.ObserveTransferBooked(
        sim.arbiter, payout.reference, 99), now_ms=sim.tick()))


async def settlement(svc: Services, sim: Simulation, seq: int = 1) -> Settlement:
    async with svc.ctx.db() as session:
        row = await session.get(Settlement, (sim.terms.channel_id.hex(), seq, 1))
    assert row is not None
    return row


async def events(svc: Services) -> list[str]:
    async with svc.ctx.db() as session:
        return list((await session.scalars(select(Event.type).order_by(Event.id))).all())


async def test_checkpoint_notice_signed_by_another_key_is_refused(
    tmp_path: Path, services: ServicesFactory, db_url: str,
) -> None:
    sim, svc, decided = await payee_with_checkpoint(tmp_path, services, db_url)
    genuine = booked_notice(sim, decided)
    before = await events(svc)
    for signer in (sim.opener, sim.peer):  # a party cannot say its own payout was booked
        forged = genuine.signed_by(signer)
        with pytest.raises(ProtocolError) as refused:
            await svc.channels.checkpoints.notices.on_notice(forged)
        assert refused.value.code is ErrorCode.BAD_SIGNATURE
    tampered = TransferNotice(*[getattr(genuine, f) for f, _ in TransferNotice.FIELDS][:4],
                              "booked", "", 0, genuine.reference, 98, genuine.signature)
    with pytest.raises(ProtocolError):
        await svc.channels.checkpoints.notices.on_notice(tampered)
    row = await settlement(svc, sim)
    assert (row.status, row.attempt) == ("submitted", 0)
    assert await events(svc) == before


async def test_checkpoint_notice_twice_is_applied_once(
    tmp_path: Path, services: ServicesFactory, db_url: str,
) -> None:
    sim, svc, decided = await payee_with_checkpoint(tmp_path, services, db_url)
    (payout,) = [e for e in decided.effects if isinstance(e, arb.SubmitPayout)]
    booked = arb.step(decided.state, arb.ObserveTransferBooked(
        sim.arbiter, payout.reference, 99), now_ms=sim.tick())
    notice = told(booked)
    notices = svc.channels.checkpoints.notices
    assert await notices.on_notice(notice) is True
    row = await settlement(svc, sim)
    assert (row.status, row.reason, row.attempt, row.reference, row.changed_ms) == (
        "booked", "", 0, payout.reference, 99)
    assert (await events(svc)).count("checkpoint.paid") == 1
    # pushed again, and read again from the arbiter's status: nothing more
    assert await notices.on_notice(notice) is False
    status = arb.status(booked.state, sim.arbiter, bytes(16), now_ms=sim.tick())
    await notices.on_status(EscrowStatus.decode(status.encode()))
    assert (await events(svc)).count("checkpoint.paid") == 1
    assert (await settlement(svc, sim)).status == "booked"


async def test_checkpoint_notice_stale_attempt_or_outcome_is_ignored(
    tmp_path: Path, services: ServicesFactory, db_url: str,
) -> None:
    sim, svc, decided = await payee_with_checkpoint(tmp_path, services, db_url)
    (payout,) = [e for e in decided.effects if isinstance(e, arb.SubmitPayout)]
    rejected = arb.step(decided.state, arb.ObservePayoutReturned(
        payout.reference, "AC04", 50, sim.arbiter, rejected=True), now_ms=sim.tick())
    named = PayoutAccount(sim.terms.channel_id, sim.peer.node_id, CORRECTED, sim.tick(),
                          EMPTY_SIGNATURE).signed_by(sim.peer)
    repaid = arb.step(rejected.state, arb.ReceivePayoutAccount(named), now_ms=sim.tick())
    (again,) = [e for e in repaid.effects if isinstance(e, arb.SubmitPayout)]
    booked = arb.step(repaid.state, arb.ObserveTransferBooked(sim.arbiter, again.reference, 60),
                      now_ms=sim.tick())
    notices = svc.channels.checkpoints.notices
    # the later attempt arrives first (the rejection's push was lost)
    assert await notices.on_notice(told(booked)) is True
    # then the rejection of attempt 0: older, ignored — the booked attempt 1 stays what counts
    assert await notices.on_notice(told(rejected)) is False
    row = await settlement(svc, sim)
    assert (row.status, row.attempt, row.reference) == ("booked", 1, again.reference)
    # within one attempt an outcome never goes back: returned after booked stays returned
    returned = arb.step(booked.state, arb.ObservePayoutReturned(
        again.reference, "R03", 70, sim.arbiter), now_ms=sim.tick())
    assert await notices.on_notice(told(returned)) is True
    assert await notices.on_notice(told(booked)) is False
    row = await settlement(svc, sim)
    assert (row.status, row.reason, row.attempt) == ("returned", "R03", 1)
    assert [e for e in await events(svc) if e.startswith(("checkpoint.", "payout."))] == [
        "checkpoint.paid", "payout.returned"]


async def test_checkpoint_notice_before_the_checkpoint_is_held_is_not_yet(
    tmp_path: Path, services: ServicesFactory, db_url: str,
) -> None:
    sim, svc, decided = await payee_with_checkpoint(tmp_path, services, db_url)
    notice = booked_notice(sim, decided)
    ahead = TransferNotice(notice.channel_id, 2, notice.party, notice.amount, "booked", "", 0,
                           "ML0000000000000000", 99, EMPTY_SIGNATURE).signed_by(sim.arbiter)
    with pytest.raises(ProtocolError) as refused:
        await svc.channels.checkpoints.notices.on_notice(ahead)
    assert refused.value.code is ErrorCode.INVALID_STATE  # "not yet": the arbiter retries
    assert await svc.channels.checkpoints.notices.on_notice(ahead, pushed=False) is False
