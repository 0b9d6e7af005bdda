"""The arbiter's service under the failures a review found: a late or early deposit, a forged
callback, a crash between booking and applying a payout. Real SQLite/PostgreSQL, no bank
needed: the credits go in through the same per-credit path the bank poll uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from node.storage.models import Transfer, UnappliedCredit
from protocol import arbiter as arb
from protocol.crypto import Signer
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    CallbackAddress,
    ChannelRegistration,
    UnilateralClose,
)
from protocol.references import Purpose, bank_reference
from tests.node.conftest import ServicesFactory, make_config, open_sim


def registration_of(sim: object) -> ChannelRegistration:
    escrow = sim.escrow  # type: ignore[attr-defined]
    return ChannelRegistration(escrow.proposal, escrow.acceptance)


async def arbiter_services(sim: object, db_url: str, tmp_path: Path,
                           services: ServicesFactory) -> Any:
    """The arbiter's services of `sim`'s channel, on a fresh database."""
    return await services(make_config(tmp_path / "arbiter", sim.arbiter,  # type: ignore[attr-defined]
                                      db_url=db_url, role="arbiter"))


async def unapplied(svc: object) -> list[UnappliedCredit]:
    async with svc.ctx.db() as session:  # type: ignore[attr-defined]
        return list((await session.scalars(select(UnappliedCredit))).all())


def with_callback(reg: ChannelRegistration, party: Signer, url: str, issued_ms: int,
                  signer: Signer | None = None) -> ChannelRegistration:
    callback = CallbackAddress(reg.proposal.terms.channel_id, party.node_id, url, issued_ms,
                               EMPTY_SIGNATURE).signed_by(signer or party)
    return ChannelRegistration(reg.proposal, reg.acceptance, callback)


async def test_a_forged_or_replayed_callback_changes_nothing(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    svc = await arbiter_services(sim, db_url, tmp_path, services)
    reg = registration_of(sim)
    cid = reg.proposal.terms.channel_id.hex()
    await svc.escrow.on_register(with_callback(reg, sim.peer, "http://peer.test", 100))
    assert svc.escrow.urls[cid] == ["", "http://peer.test"]
    # the opener (or anyone holding the registration) claims to be the peer
    forged = with_callback(reg, sim.peer, "http://attacker.test", 200, signer=sim.opener)
    with pytest.raises(RemoteProtocolError) as err:
        await svc.escrow.on_register(forged)
    assert err.value.code is ErrorCode.BAD_SIGNATURE
    assert svc.escrow.urls[cid] == ["", "http://peer.test"]
    stranger = Signer.from_label("x")
    with pytest.raises(RemoteProtocolError) as err:
        await svc.escrow.on_register(with_callback(reg, stranger, "http://attacker.test", 300))
    assert err.value.code is ErrorCode.NOT_A_PARTY
    # the peer moves: a newer callback replaces the address ...
    await svc.escrow.on_register(with_callback(reg, sim.peer, "http://peer-new.test", 400))
    assert svc.escrow.urls[cid] == ["", "http://peer-new.test"]
    # ... and its old, genuinely signed callback replayed by anyone changes nothing
    await svc.escrow.on_register(with_callback(reg, sim.peer, "http://peer.test", 100))
    assert svc.escrow.urls[cid] == ["", "http://peer-new.test"]
    assert svc.escrow.url_ms[cid] == [0, 400]


async def test_early_and_late_deposits_are_kept_and_never_stop_the_others(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    svc = await arbiter_services(sim, db_url, tmp_path, services)
    reg = registration_of(sim)
    terms = reg.proposal.terms
    cid = terms.channel_id.hex()
    ref0 = bank_reference(terms.channel_id, Purpose.DEPOSIT, 0)
    ref1 = bank_reference(terms.channel_id, Purpose.DEPOSIT, 1)

    # a deposit that lands before the channel is registered is kept, not dropped
    await svc.escrow._credit("e-1", ref0, terms.opener_deposit, terms.currency, "Opener", 1)
    assert [(c.entry_id, c.applied) for c in await unapplied(svc)] == [("e-1", False)]
    # ... and applied when the registration comes
    await svc.escrow.on_register(reg)
    assert svc.escrow.states[cid].deposited[0] == terms.opener_deposit
    assert [(c.entry_id, c.applied) for c in await unapplied(svc)] == [("e-1", True)]
    await svc.escrow._credit("e-2", ref1, terms.peer_deposit, terms.currency, "Peer", 2)
    assert svc.escrow.states[cid].phase is arb.ArbiterPhase.OPEN

    # the channel is closed: a late credit with its reference changes nothing in the channel,
    # is kept for a refund (the machine says so: HoldCredit), and the next credit still gets
    # through
    claim = UnilateralClose(terms.channel_id, sim.opener.node_id, None,
                            EMPTY_SIGNATURE).signed_by(sim.opener)
    decided = arb.step(svc.escrow.states[cid], arb.ReceiveUnilateralClose(claim), now_ms=10)
    await svc.escrow.commit(decided.state, ())
    await svc.escrow._credit("e-3", ref1, 1, terms.currency, "Griefer", 3)
    late = {c.entry_id: c for c in await unapplied(svc)}["e-3"]
    assert not late.applied
    assert late.reason == "held for refund: a late deposit"
    assert svc.escrow.states[cid].deposited == decided.state.deposited
    await svc.escrow._credit("e-4", "MLNOSUCHREFERENCE", 5, terms.currency, "Stranger", 4)
    assert {c.entry_id for c in await unapplied(svc) if not c.applied} == {"e-3", "e-4"}
    # what the operator sees (GET /api/escrows lists these as unapplied_credits)
    assert [c.entry_id for c in await svc.escrow.unapplied()] == ["e-3", "e-4"]


async def test_a_deposit_looked_up_before_the_registration_and_kept_after_it_is_applied(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    """The race a fresh-clone CI run hit: the credit poll finds no channel for a deposit, the
    registration commits and rematches while the poll is still writing that credit as
    unapplied, and the deposit was then never applied (the channel stayed `accepted`)."""
    sim = open_sim()
    svc = await arbiter_services(sim, db_url, tmp_path, services)
    reg = registration_of(sim)
    terms = reg.proposal.terms
    ref0 = bank_reference(terms.channel_id, Purpose.DEPOSIT, 0)
    note_credit = svc.ctx.repo.note_credit
    registered = False

    async def register_meanwhile(credit: Any) -> bool:
        nonlocal registered
        if not registered:  # the registration lands between the look-up and this write
            registered = True
            await svc.escrow.on_register(reg)
        return await note_credit(credit)

    svc.ctx.repo.note_credit = register_meanwhile  # type: ignore[method-assign]
    await svc.escrow._credit("e-1", ref0, terms.opener_deposit, terms.currency, "Opener", 1)
    assert registered
    assert svc.escrow.states[terms.channel_id.hex()].deposited[0] == terms.opener_deposit
    assert [(c.entry_id, c.applied) for c in await unapplied(svc)] == [("e-1", True)]


async def test_a_booked_payout_is_applied_even_after_a_crash(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    config = make_config(tmp_path / "arbiter", sim.arbiter, db_url=db_url, role="arbiter")
    svc = await services(config)
    reg = registration_of(sim)
    await svc.escrow.on_register(reg)
    decided = sim.close()
    await svc.escrow.commit(decided.state, ())
    cid = decided.state.channel_id.hex()
    # the rail said "booked" and the row was saved; the process died before applying it
    async with svc.ctx.db() as session, session.begin():
        for e in decided.effects:
            if isinstance(e, arb.SubmitPayout):
                session.add(Transfer(
                    idempotency_key=e.idempotency_key, channel_id=cid, purpose="payout",
                    party=e.party, amount_minor=e.amount, currency=e.currency,
                    reference=e.reference, creditor="{}", status="booked", reason="",
                    end_to_end_id="E2E", created_ms=1, updated_ms=2))
    again = await services(config)
    await again.escrow.load()
    assert again.escrow.states[cid].phase is arb.ArbiterPhase.PAYING
    await again.escrow.apply_bank_answers()
    assert again.escrow.states[cid].phase is arb.ArbiterPhase.SETTLED
    notices = [r for r in await again.outbox.pending() if r.target.endswith("/p2p/payout")]
    assert notices == []  # no callback registered: nothing addressed, nothing lost either


async def test_a_bank_credit_out_of_range_is_kept_without_its_number(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    """A bank answer naming 2^70 minor units must neither crash the poll nor reach a BIGINT."""
    sim = open_sim()
    svc = await arbiter_services(sim, db_url, tmp_path, services)
    reg = registration_of(sim)
    await svc.escrow.on_register(reg)
    ref0 = bank_reference(reg.proposal.terms.channel_id, Purpose.DEPOSIT, 0)
    await svc.escrow._credit("huge", ref0, 2**70, "EUR", "Bank", 1)
    await svc.escrow._credit("late", ref0, 5, "EUR", "Bank", 2**80)
    kept = {c.entry_id: c for c in await unapplied(svc)}
    assert kept["huge"].amount_minor == 0
    assert "out of range" in kept["huge"].reason
    assert "out of range" in kept["late"].reason
    assert svc.escrow.states[reg.proposal.terms.channel_id.hex()].deposited == (0, 0)
