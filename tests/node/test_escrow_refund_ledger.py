"""The arbiter's refunds of unapplied credits over real SQLite and PostgreSQL (no bank: the
refund's transfer row is what the outbox would hand the rail; its key is all that matters)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from node.context import now_ms
from node.errors import NodeError
from node.storage.models import Transfer
from protocol import arbiter as arb
from protocol.errors import ErrorCode, LocalProtocolError
from protocol.messages import EMPTY_SIGNATURE, UnilateralClose
from protocol.references import Purpose, bank_reference, refund_idempotency_key
from rails.port import TransferInstruction
from tests.node.conftest import ServicesFactory, make_config, open_sim
from tests.node.test_escrow_hardening import registration_of


async def test_a_late_deposit_is_refunded_once_and_never_rematched(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    config = make_config(tmp_path / "arbiter", sim.arbiter, db_url=db_url, role="arbiter")
    svc = await services(config)
    reg = registration_of(sim)
    terms = reg.proposal.terms
    await svc.escrow.on_register(reg)
    cid = terms.channel_id.hex()
    claim = UnilateralClose(terms.channel_id, sim.opener.node_id, None,
                            EMPTY_SIGNATURE).signed_by(sim.opener)
    decided = arb.step(svc.escrow.states[cid], arb.ReceiveUnilateralClose(claim), now_ms=10)
    await svc.escrow.commit(decided.state, ())
    ref0 = bank_reference(terms.channel_id, Purpose.DEPOSIT, 0)
    await svc.escrow._credit("late-1", ref0, 700, terms.currency, "Opener", 5)

    (held,) = [v.row for v in await svc.escrow.credits.all()]
    assert (held.kind, held.status, held.channel_id) == ("late", "held", cid)
    first = await svc.escrow.credits.refund("late-1")
    assert first.row.status == "refunding"
    again = await svc.escrow.credits.refund("late-1")  # asked twice: the same transfer
    assert again.row.status == "refunding"
    rows = [r for r in await svc.outbox.rows(include_done=True) if r.kind == "refund"]
    assert len(rows) == 1  # one pending row per refund (the second replaced the first)
    spec = TransferInstruction.decode(rows[0].payload)
    assert spec.idempotency_key == refund_idempotency_key("late-1")
    assert (spec.amount_minor, spec.purpose) == (700, "refund")
    assert spec.creditor.identification == terms.accounts()[0].identification

    # a restart: the status survives; the bank books the refund; it is refunded
    restarted = await services(config)
    await restarted.escrow.load()
    with pytest.raises(LocalProtocolError) as err:
        await restarted.escrow.credits.refund("late-1", terms.accounts()[1])
    assert err.value.code is ErrorCode.INVALID_STATE  # under way to another account: refused
    async with restarted.ctx.db() as session, session.begin():
        session.add(Transfer(
            idempotency_key=spec.idempotency_key, channel_id=cid, purpose="refund", party=0,
            amount_minor=700, currency=terms.currency, reference=spec.reference,
            creditor="{}", status="booked", reason="", end_to_end_id="E2E", created_ms=1,
            updated_ms=2))
    await restarted.escrow.credits.poll()
    view = await restarted.escrow.credits.show("late-1")
    assert view.row.status == "refunded"
    assert view.transfer is not None
    assert view.transfer.status == "booked"
    with pytest.raises(LocalProtocolError) as err:
        await restarted.escrow.credits.refund("late-1")
    assert err.value.code is ErrorCode.INVALID_STATE
    # re-registering the channel rematches held credits: a refunded one is no deposit
    await restarted.escrow.on_register(reg)
    assert restarted.escrow.states[cid].deposited == decided.state.deposited
    async with restarted.ctx.db() as session:
        keys = (await session.scalars(select(Transfer.idempotency_key))).all()
    assert list(keys) == [spec.idempotency_key]

    # the bank returns the booked refund (the transfer poll asks about booked refunds for
    # the return window): the money is back in escrow, so it is refunded again, attempt 1
    async with restarted.ctx.db() as session, session.begin():
        row = await session.get(Transfer, spec.idempotency_key)
        assert row is not None
        row.status, row.reason, row.updated_ms = "returned", "AC04 account closed", now_ms()
    await restarted.escrow.credits.poll()
    view = await restarted.escrow.credits.show("late-1")
    assert (view.row.status, view.row.refund_attempt) == ("refunding", 1)
    pending = [TransferInstruction.decode(r.payload) for r in
               await restarted.outbox.rows(include_done=True) if r.kind == "refund"]
    assert [p.idempotency_key for p in pending][-1] == refund_idempotency_key("late-1", 1)
    assert (pending[-1].amount_minor, pending[-1].creditor.identification) == (
        700, terms.accounts()[0].identification)
    await restarted.escrow.credits.poll()  # the old attempt's return is not taken twice
    assert (await restarted.escrow.credits.show("late-1")).row.refund_attempt == 1


async def test_an_unmatched_credit_without_a_sender_needs_an_account(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    svc = await services(make_config(tmp_path / "arbiter", sim.arbiter, db_url=db_url,
                                     role="arbiter"))
    await svc.escrow._credit("stray-1", "NOTHING", 5, "EUR", "Stranger", 4)
    with pytest.raises(LocalProtocolError) as err:
        await svc.escrow.credits.refund("stray-1")
    assert err.value.code is ErrorCode.INVALID_STATE
    with pytest.raises(NodeError) as missing:
        await svc.escrow.credits.refund("stray-2")
    assert missing.value.code == "UNKNOWN_CREDIT"
    assert (await svc.escrow.credits.show("stray-1")).row.status == "held"
    assert [r for r in await svc.outbox.rows(include_done=True) if r.kind == "refund"] == []


async def kept_unmatched(db_url: str, tmp_path: Path, services: ServicesFactory,
                         entry_id: str) -> tuple[Any, Any]:
    """An arbiter holding a credit of 100.00 EUR with the opener's deposit reference of a
    channel not registered yet (kept unmatched); the channel's registration, not applied."""
    sim = open_sim()
    svc = await services(make_config(tmp_path / "arbiter", sim.arbiter, db_url=db_url,
                                     role="arbiter"))
    reg = registration_of(sim)
    terms = reg.proposal.terms
    ref0 = bank_reference(terms.channel_id, Purpose.DEPOSIT, 0)
    await svc.escrow._credit(entry_id, ref0, 10_000, terms.currency, "Opener", 5)
    return svc, reg


async def test_a_credit_refunded_before_its_channel_registered_is_no_deposit_when_read_again(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    """The credit page is read again after a crash (or a failed credit) before its cursor was
    saved: a credit the operator refunded meanwhile must not fund the channel too."""
    svc, reg = await kept_unmatched(db_url, tmp_path, services, "early-1")
    terms = reg.proposal.terms
    cid, ref0 = terms.channel_id.hex(), bank_reference(terms.channel_id, Purpose.DEPOSIT, 0)
    (kept,) = [v.row for v in await svc.escrow.credits.all()]
    assert (kept.kind, kept.status) == ("unmatched", "held")
    refunding = await svc.escrow.credits.refund("early-1", terms.accounts()[0])
    assert refunding.row.status == "refunding"
    await svc.escrow.on_register(reg)
    assert svc.escrow.states[cid].deposited == (0, 0)  # the rematch skips it: being refunded
    # the same page read again: the same bank entry
    await svc.escrow._credit("early-1", ref0, 10_000, terms.currency, "Opener", 5)
    assert svc.escrow.states[cid].deposited == (0, 0)
    view = await svc.escrow.credits.show("early-1")
    assert view.row.status == "refunding"


async def test_a_refund_asked_while_its_credit_is_applied_as_a_deposit_is_refused(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    """The channel registers and its rematch applies a credit kept unmatched; the operator's
    refund of that credit arrives while the deposit is being committed. The refund must wait
    and then find the credit applied (never both: refunded and paid out of escrow)."""
    svc, reg = await kept_unmatched(db_url, tmp_path, services, "early-2")
    terms = reg.proposal.terms
    cid = terms.channel_id.hex()
    applying, go_on = asyncio.Event(), asyncio.Event()
    apply = svc.escrow._apply

    async def slow_apply(channel: str, event: object) -> object:
        if isinstance(event, arb.ObserveDeposit):
            applying.set()  # the deposit is decided, not yet committed
            await go_on.wait()
        return await apply(channel, event)

    svc.escrow._apply = slow_apply
    registering = asyncio.create_task(svc.escrow.on_register(reg))
    await asyncio.wait_for(applying.wait(), 10)
    refunding = asyncio.create_task(svc.escrow.credits.refund("early-2", terms.accounts()[0]))
    await asyncio.sleep(0.1)  # the refund reads the credit now, if nothing holds it back
    go_on.set()
    await asyncio.wait_for(registering, 10)
    with pytest.raises(NodeError) as refused:
        await asyncio.wait_for(refunding, 10)
    assert refused.value.code == "UNKNOWN_CREDIT"  # applied: no refund of a deposit
    assert svc.escrow.states[cid].deposited == (10_000, 0)
    assert [r for r in await svc.outbox.rows(include_done=True) if r.kind == "refund"] == []
