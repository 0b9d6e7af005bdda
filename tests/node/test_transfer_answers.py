"""A transfer's status is stored against the row as it is now: a poll that read the row before
`submit` stored the bank's refusal (CI 2026-12-03: the payout of an AC04 test lost its reason
this way) never erases the reason, and a stale answer never moves a final status back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node.context import now_ms
from node.storage.models import Event, Transfer
from rails.errors import BankRejected, IdempotencyConflict
from rails.port import (
    Account,
    AccountScheme,
    PaymentInstruction,
    PaymentRecord,
    PaymentStatus,
    TransferInstruction,
)
from tests.node.conftest import ServicesFactory, node_with_peers

KEY = "ml-race"


class SlowStatus:
    """A rail whose status answer waits until the test lets it go: the poll's read of the row
    then happens before, and its answer after, what the test does in between."""

    def __init__(self, answer: PaymentRecord) -> None:
        self.answer = answer
        self.asked = asyncio.Event()
        self.go = asyncio.Event()

    async def status(self, key: str) -> PaymentRecord:
        assert key == KEY
        self.asked.set()
        await self.go.wait()
        return self.answer


def record(status: PaymentStatus, code: str | None = None,
           reason: str | None = None) -> PaymentRecord:
    return PaymentRecord(KEY, "E2E-1", status, 11059, "EUR", reason_code=code, reason=reason)


async def stored(svc: object, key: str = KEY) -> Transfer:
    async with svc.ctx.db() as session:  # type: ignore[attr-defined]
        row = await session.get(Transfer, key)
    assert row is not None
    return row


async def refused_once_with_its_reason(svc: object) -> None:
    """The row holds the refusal with its reason, and one event of it was written."""
    row = await stored(svc)
    assert (row.status, row.reason) == ("rejected", "AC04 account closed")
    async with svc.ctx.db() as session:  # type: ignore[attr-defined]
        types = (await session.scalars(select(Event.type).where(
            Event.channel_id == "c" * 64))).all()
    assert types == ["payout.rejected"]


async def a_pending_payout(tmp_path: Path, services: ServicesFactory) -> object:
    svc = await node_with_peers(tmp_path, services, 1)
    async with svc.ctx.db() as session, session.begin():
        session.add(Transfer(idempotency_key=KEY, channel_id="c" * 64, purpose="payout",
                             party=1, amount_minor=11059, currency="EUR", reference="REF",
                             creditor="{}", status="pending", reason="", end_to_end_id="",
                             created_ms=now_ms(), updated_ms=now_ms()))
    return svc


async def test_a_poll_that_read_pending_keeps_the_refusal_submit_stored_with_its_reason(
        tmp_path: Path, services: ServicesFactory) -> None:
    svc = await a_pending_payout(tmp_path, services)
    rail = SlowStatus(record(PaymentStatus.REJECTED))  # the status answer: no reason
    svc.ctx.rail = rail  # type: ignore[attr-defined]
    transfers = svc.escrow.transfers  # type: ignore[attr-defined]
    poll = asyncio.create_task(transfers.refresh())
    await asyncio.wait_for(rail.asked.wait(), 5)  # the poll has read the row: pending
    assert await transfers._save(record(PaymentStatus.REJECTED, "AC04", "account closed"))
    rail.go.set()
    assert await poll == []  # nothing new in the poll's answer
    row = await stored(svc)
    assert (row.status, row.reason) == ("rejected", "AC04 account closed")


async def test_a_stale_answer_never_moves_a_final_status(
        tmp_path: Path, services: ServicesFactory) -> None:
    svc = await a_pending_payout(tmp_path, services)
    rail = SlowStatus(record(PaymentStatus.ACCEPTED))
    svc.ctx.rail = rail  # type: ignore[attr-defined]
    transfers = svc.escrow.transfers  # type: ignore[attr-defined]
    poll = asyncio.create_task(transfers.refresh())
    await asyncio.wait_for(rail.asked.wait(), 5)
    assert await transfers._save(record(PaymentStatus.BOOKED))
    rail.go.set()
    assert await poll == []
    assert (await stored(svc)).status == "booked"
    # what a booked transfer may still become: returned, with the reason; then nothing
    assert await transfers._save(record(PaymentStatus.RETURNED, "AC04", "closed"))
    assert not await transfers._save(record(PaymentStatus.BOOKED))
    assert not await transfers._save(record(PaymentStatus.REJECTED, "AM04"))
    row = await stored(svc)
    assert (row.status, row.reason) == ("returned", "AC04 closed")


async def test_a_refusal_stored_after_the_polls_bare_status_still_gains_its_reason(
        tmp_path: Path, services: ServicesFactory) -> None:
    """The other order: the poll's answer (rejected, no reason) lands first, then `submit`
    stores the bank's refusal with its reason; the reason is kept, and the event of the
    refusal (written at the change of status) is not written again."""
    svc = await a_pending_payout(tmp_path, services)
    transfers = svc.escrow.transfers  # type: ignore[attr-defined]
    assert await transfers._save(record(PaymentStatus.REJECTED))
    assert await transfers._save(record(PaymentStatus.REJECTED, "AC04", "account closed"))
    assert not await transfers._save(record(PaymentStatus.REJECTED, "AC04", "account closed"))
    await refused_once_with_its_reason(svc)


async def test_two_saves_at_once_are_one_after_the_other(
        tmp_path: Path, services: ServicesFactory) -> None:
    """The poll's bare answer and submit's refusal saved at the same moment (both reading
    "pending" before either writes, were it not for the save lock and the compare-and-set):
    the reason is kept and the refusal's event is written once."""
    svc = await a_pending_payout(tmp_path, services)
    transfers = svc.escrow.transfers  # type: ignore[attr-defined]
    saved = await asyncio.gather(
        transfers._save(record(PaymentStatus.REJECTED, "AC04", "account closed")),
        transfers._save(record(PaymentStatus.REJECTED)))
    assert saved == [True, False]
    await refused_once_with_its_reason(svc)


async def test_the_answer_to_the_submission_replaces_a_rejection_a_poll_inferred(
        tmp_path: Path, services: ServicesFactory) -> None:
    """A poll's status query refused (a 403 there is final, ADR 0153) stored "rejected"; the
    bank's answer to the submission itself says what it did with the payment and is stored; a
    poll's later "pending" is not."""
    svc = await a_pending_payout(tmp_path, services)
    transfers = svc.escrow.transfers  # type: ignore[attr-defined]
    assert await transfers._save(record(PaymentStatus.REJECTED, "HTTP403", "forbidden"))
    assert not await transfers._save(record(PaymentStatus.PENDING))
    assert await transfers._save(record(PaymentStatus.PENDING), submitted=True)
    assert (await stored(svc)).status == "pending"
    assert await transfers._save(record(PaymentStatus.BOOKED))
    assert not await transfers._save(record(PaymentStatus.PENDING), submitted=True)
    assert (await stored(svc)).status == "booked"


class ConflictedStatus:
    """A rail whose status query meets the submission still in flight under the same key."""

    async def status(self, key: str) -> PaymentRecord:
        raise IdempotencyConflict("the bank is already processing a request with this key")


async def test_a_key_conflict_on_the_status_query_is_asked_again_never_a_rejection(
        tmp_path: Path, services: ServicesFactory) -> None:
    svc = await a_pending_payout(tmp_path, services)
    svc.ctx.rail = ConflictedStatus()  # type: ignore[attr-defined]
    transfers = svc.escrow.transfers  # type: ignore[attr-defined]
    assert await transfers.refresh() == []
    assert (await stored(svc)).status == "pending"
    assert transfers._backoff[KEY][0] == 1  # asked again later, with backoff


async def test_the_poll_leaves_a_transfer_being_submitted_to_its_submission(
        tmp_path: Path, services: ServicesFactory) -> None:
    svc = await a_pending_payout(tmp_path, services)
    rail = SlowStatus(record(PaymentStatus.REJECTED))
    rail.go.set()
    svc.ctx.rail = rail  # type: ignore[attr-defined]
    transfers = svc.escrow.transfers  # type: ignore[attr-defined]
    transfers.submitting.add(KEY)  # as `submit` does while the bank has not answered
    assert await transfers.refresh() == []
    assert not rail.asked.is_set()
    transfers.submitting.discard(KEY)
    assert [r.status for r in await transfers.refresh()] == [PaymentStatus.REJECTED]
    assert rail.asked.is_set()


class SlowBank:
    """A rail whose status query (refused, 403: final for the poll, ADR 0153) and submission
    (booked) each wait until the test lets them go; it counts the submissions."""

    def __init__(self) -> None:
        self.asked, self.go = asyncio.Event(), asyncio.Event()
        self.submitting, self.pay = asyncio.Event(), asyncio.Event()
        self.submitted = 0

    async def status(self, key: str) -> PaymentRecord:
        self.asked.set()
        await self.go.wait()
        raise BankRejected("forbidden", "HTTP403")

    async def submit(self, instruction: PaymentInstruction) -> PaymentRecord:
        self.submitted += 1
        self.submitting.set()
        await self.pay.wait()
        return record(PaymentStatus.BOOKED)


def the_payout() -> TransferInstruction:
    return TransferInstruction(KEY, "payout", 1, 11059, "EUR", "REF", ACCOUNT)


ACCOUNT = Account("Peer GmbH", AccountScheme.IBAN, "DE89370400440532013000")


def with_bank(svc: object, *, answers: bool = True) -> tuple[SlowBank, Any]:
    """`svc`'s transfers on a SlowBank (answering at once unless `answers` is False)."""
    rail = SlowBank()
    if answers:
        rail.go.set()
        rail.pay.set()
    svc.ctx.rail = rail  # type: ignore[attr-defined]
    transfers = svc.escrow.transfers  # type: ignore[attr-defined]
    transfers.own_account = lambda: ACCOUNT
    return rail, transfers


async def test_a_poll_answer_arriving_once_the_submission_is_in_flight_is_left_to_it(
        tmp_path: Path, services: ServicesFactory) -> None:
    """The poll asked first; the outbox's attempt started while the bank had not answered the
    poll. The poll's inferred "rejected" must not be stored: the arbiter would take it as the
    payout refused and pay it again elsewhere, while the submission in flight books it."""
    svc = await a_pending_payout(tmp_path, services)
    rail, transfers = with_bank(svc, answers=False)
    poll = asyncio.create_task(transfers.refresh())
    await asyncio.wait_for(rail.asked.wait(), 5)
    submission = asyncio.create_task(transfers.submit("c" * 64, the_payout()))
    await asyncio.wait_for(rail.submitting.wait(), 5)
    rail.go.set()
    assert await poll == []
    assert (await stored(svc)).status == "pending"
    rail.pay.set()
    assert (await submission).status is PaymentStatus.BOOKED
    assert (await stored(svc)).status == "booked"


async def test_a_transfer_already_rejected_is_not_submitted_again(
        tmp_path: Path, services: ServicesFactory) -> None:
    """The outbox's first attempt failed transiently (the row stays pending, retried later);
    the poll's status query was then refused (403: final, ADR 0153) and the payout stored
    "rejected", which the arbiter takes as refused (it pays again to the account named next).
    The outbox's retry must not submit it to the bank once more: paid, it would be paid twice."""
    svc = await a_pending_payout(tmp_path, services)
    rail, transfers = with_bank(svc)
    assert [r.status for r in await transfers.refresh()] == [PaymentStatus.REJECTED]
    answer = await transfers.submit("c" * 64, the_payout())  # the outbox's retry
    assert rail.submitted == 0
    assert (answer.status, answer.reason_code) == (PaymentStatus.REJECTED, "HTTP403")
    assert (await stored(svc)).status == "rejected"


async def test_a_submission_starting_while_the_polls_rejection_is_written_is_not_sent(
        tmp_path: Path, services: ServicesFactory) -> None:
    """The outbox's retry starts while the poll is writing its inferred "rejected" (its
    transaction not committed yet, so the retry would read "pending"): either the retry sees
    the rejection and sends nothing, or the poll's rejection is not written."""
    svc = await a_pending_payout(tmp_path, services)
    rail, transfers = with_bank(svc)
    events = svc.ctx.events  # type: ignore[attr-defined]
    writing, written = asyncio.Event(), asyncio.Event()
    transfer = events.transfer

    async def slow_transfer(session: object, answer: PaymentRecord) -> None:
        writing.set()  # in the poll's save, before its write
        await written.wait()
        await transfer(session, answer)

    events.transfer = slow_transfer
    poll = asyncio.create_task(transfers.refresh())
    await asyncio.wait_for(writing.wait(), 5)
    submission = asyncio.create_task(transfers.submit("c" * 64, the_payout()))
    await asyncio.sleep(0.05)  # the retry reads the row meanwhile
    written.set()
    events.transfer = transfer
    rejections = await poll
    answer = await submission
    assert (rail.submitted, [r.status for r in rejections], answer.status) in (
        (0, [PaymentStatus.REJECTED], PaymentStatus.REJECTED),  # the rejection, nothing sent
        (1, [], PaymentStatus.BOOKED))  # or the poll's answer left to the submission


async def test_a_transfer_already_booked_is_not_submitted_again(
        tmp_path: Path, services: ServicesFactory) -> None:
    """The outbox's attempt stored the booking, then the step after it failed (the arbiter's
    bank answers met storage away): the outbox retries the row later. The bank must not be
    asked again: past its idempotency window the same key would pay a second time."""
    svc = await a_pending_payout(tmp_path, services)
    async with svc.ctx.db() as session, session.begin():  # type: ignore[attr-defined]
        row = await session.get(Transfer, KEY)
        assert row is not None
        row.status, row.end_to_end_id = "booked", "E2E-1"
    rail, transfers = with_bank(svc)
    answer = await transfers.submit("c" * 64, the_payout())  # the outbox's retry
    assert rail.submitted == 0
    assert (answer.status, answer.end_to_end_id) == (PaymentStatus.BOOKED, "E2E-1")
    assert (await stored(svc)).status == "booked"
