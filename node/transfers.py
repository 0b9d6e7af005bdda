"""Bank transfers through the node's rail: submit with an idempotency key, track the status.

What to pay crosses to the rail as a :class:`rails.port.TransferInstruction` (typed, stored in
the outbox by its own encoding), never as a loose dict.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from sqlalchemy import CursorResult, and_, bindparam, or_, select, update

from node.context import Context, now_ms
from node.storage.models import Outbox as OutboxRow
from node.storage.models import Transfer
from rails.errors import (
    BankProtocolError,
    BankRejected,
    IdempotencyConflict,
    RailError,
    UnknownPayment,
)
from rails.port import Account, PaymentRecord, PaymentStatus, Rail, TransferInstruction

log = structlog.get_logger()


RETURNABLE = ("payout", "refund")
"""What the arbiter pays out: re-polled for returns for `[bank] return_window_s` after booking
(ADR 0271)."""
NOT_FINAL = ("pending", "accepted", "unreconciled")
_TO_ASK = select(Transfer).where(or_(
    Transfer.status.in_(NOT_FINAL),
    and_(Transfer.status == "booked", Transfer.purpose.in_(RETURNABLE),
         Transfer.updated_ms >= bindparam("since"))))
"""What each poll asks the rail about, in one constant statement (compiled once: built anew at
every poll, its two queries were a few per cent of a busy node's event loop, issue 13)."""
AFTER_FINAL = {"booked": ("returned",), "rejected": (), "returned": ()}
"""What a final status may still become through a poll: a booked transfer can come back
(returned); a rejected or returned one never changes again. The same status may still gain its
reason (the bank's refusal stored after a poll stored the bare status) or a notification of
change. The bank's answer to the submission itself may also replace a "rejected" a poll
inferred from an error of its status query (ADR 0153: a 403 there is final) — that
answer, not the inference, is what the bank did with the payment."""
AFTER_FINAL_SUBMITTED = {**AFTER_FINAL, "rejected": (*NOT_FINAL, "booked")}
RETURN_POLL_FACTOR = 20
"""A booked transfer in the return window is asked again every 20 polls (10 s at the default
500 ms), not at every one."""
RETRY_FIRST_MS = 1_000
RETRY_CAP_MS = 60_000
"""How often a transfer whose status the rail could not give is asked again: from 1 s,
doubling, at most once a minute (not at every poll)."""


def final(exc: RailError) -> bool:
    """Whether the rail's error is the bank's final word on this payment: a refusal of the
    payment itself (insufficient funds, a currency the account is not held in, an instruction
    the rail cannot carry) ends the transfer as ``rejected``; a bank that is away, an answer
    that did not parse and a refusal of our credentials (the operator can fix those, and the
    same key then still pays once) are transient."""
    if exc.retryable or isinstance(exc, BankProtocolError | UnknownPayment):
        return False
    return not (isinstance(exc, BankRejected) and exc.reason_code == "HTTP401")


def rejected(key: str, amount_minor: int, currency: str, exc: RailError) -> PaymentRecord:
    """The record of a payment the bank refused, with its reason as the bank gave it."""
    code = getattr(exc, "reason_code", None) or exc.code
    reason = str(exc).removesuffix(f" ({code})")
    return PaymentRecord(key, "", PaymentStatus.REJECTED, int(amount_minor), currency,
                         reason_code=code, reason=reason)


class _Changed(Exception):
    """The row changed between the read and the write of a save: nothing is written."""


class Transfers:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.saving = asyncio.Lock()
        self.submitting: set[str] = set()
        """Keys whose submission is in flight: the poll leaves them to `submit`, which stores
        the bank's answer (asked meanwhile, the bank answers with a bare status or a key
        conflict, and the reason or the payment could be lost)."""
        self._backoff: dict[str, tuple[int, int]] = {}
        self._return_checked: dict[str, int] = {}
        """Per booked transfer in the return window: when to ask the rail about it again."""
        """Per idempotency key: failed status look-ups in a row, and when to ask next."""

    def own_account(self) -> Account:
        settings = self.ctx.config.bank.settings
        if settings is None:
            raise RuntimeError("this node has no bank account ([bank] and [rails.*] in "
                               "config.toml)")
        return settings.account(self.ctx.config.name)

    async def submit_row(self, row: OutboxRow) -> None:
        """Outbox handler: pay what the row describes (idempotent by its key)."""
        await self.submit(row.channel_id, TransferInstruction.decode(row.payload))

    async def submit(self, channel_id: str, instruction: TransferInstruction) -> PaymentRecord:
        rail = self.ctx.rail
        if rail is None:
            raise RuntimeError("this node has no rail configured ([bank] rail in config.toml)")
        key = instruction.idempotency_key
        self.submitting.add(key)  # before the row exists: no poll reads it in between
        try:
            return await self._submit(rail, channel_id, instruction)
        finally:
            self.submitting.discard(key)

    async def _submit(self, rail: Rail, channel_id: str,
                      instruction: TransferInstruction) -> PaymentRecord:
        key = instruction.idempotency_key
        # under the save lock: a poll's save in progress (its "rejected" not committed yet)
        # is seen here, or sees this submission in `submitting` and writes nothing
        async with self.saving, self.ctx.db() as session, session.begin():
            row = await session.get(Transfer, key)
            if row is not None and row.status in AFTER_FINAL:
                # the outbox's retry of a payment whose end is known: refused or returned (a
                # poll stored it meanwhile, and what follows a refusal may already have paid
                # elsewhere), or booked (the row's outcome was stored, the step after it
                # failed): never sent to the bank again, where it could still be booked —
                # after the bank's idempotency window (24 h in UK Open Banking) a second time
                code, _, text = row.reason.partition(" ")
                return PaymentRecord(key, row.end_to_end_id, PaymentStatus(row.status),
                                     row.amount_minor, row.currency, reason_code=code or None,
                                     reason=text or None)
            if row is None:
                session.add(Transfer(
                    idempotency_key=key, channel_id=channel_id, purpose=instruction.purpose,
                    party=instruction.party, amount_minor=instruction.amount_minor,
                    currency=instruction.currency, reference=instruction.reference,
                    creditor=json.dumps(instruction.creditor_json()), status="pending",
                    reason="", end_to_end_id="", created_ms=now_ms(), updated_ms=now_ms()))
        try:
            record = await rail.submit(instruction.payment(self.own_account()))
        except RailError as exc:
            if not final(exc):
                raise  # the outbox retries it with backoff, under the same key
            record = rejected(key, instruction.amount_minor, instruction.currency, exc)
        await self._save(record, submitted=True)
        log.info("transfer.submitted", channel=channel_id[:16], purpose=instruction.purpose,
                 amount_minor=instruction.amount_minor, status=record.status.value)
        return record

    async def _save(self, record: PaymentRecord, *, submitted: bool = False) -> bool:
        """Store the rail's answer (`submitted`: its answer to the submission) against the row
        as it is now: the poll may have read the row before `submit` stored the bank's
        refusal, and its later answer (the same status, often without the reason) must not
        erase the reason, nor a stale "pending" overwrite a final status. One save at a time
        (`self.saving`: read, decide and write are one step however the two interleave), and
        the write is a compare-and-set on what was read. Whether the row changed."""
        key = record.idempotency_key
        after = AFTER_FINAL_SUBMITTED if submitted else AFTER_FINAL
        try:
            async with self.saving, self.ctx.db() as session, session.begin():
                if not submitted and key in self.submitting:
                    return False  # left to the submission in flight, whose answer counts
                row = await session.get(Transfer, key)
                if row is None:
                    return False
                status = record.status.value
                if row.status in after and status != row.status and status not in after[row.status]:
                    return False  # a stale answer after the final one
                reason = " ".join(filter(None, [record.reason_code, record.reason]))[:200]
                if status == row.status and (not reason or reason == row.reason) \
                        and (record.end_to_end_id or "") in ("", row.end_to_end_id):
                    return False  # nothing new: the same answer again
                if status == row.status and not reason:
                    reason = row.reason
                seen = (row.status, row.reason)
                await self.ctx.events.transfer(session, record)
                written: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
                    update(Transfer).where(Transfer.idempotency_key == key,
                                           Transfer.status == seen[0], Transfer.reason == seen[1])
                    .values(status=status, reason=reason,
                            end_to_end_id=record.end_to_end_id or row.end_to_end_id,
                            updated_ms=now_ms()))
                if written.rowcount != 1:  # changed under us (another process): the next poll
                    raise _Changed  # reads it again; the event above is rolled back with it
        except _Changed:
            return False
        return True

    async def refresh(self) -> list[PaymentRecord]:
        """Ask the rail about every transfer not final yet, and about booked payouts and
        refunds still inside the return window; return the ones that changed."""
        rail = self.ctx.rail
        if rail is None:
            return []
        now = now_ms()
        window_ms = self.ctx.config.bank.return_window_s * 1000
        async with self.ctx.db() as session:
            found = (await session.scalars(_TO_ASK, {"since": now - window_ms})).all()
        rows = [r for r in found if r.status in NOT_FINAL]
        booked = [r for r in found if r.status == "booked"]
        changed = [r for r in [await self._returned(rail, row, now) for row in booked] if r]
        for row in rows:
            failures, not_before = self._backoff.get(row.idempotency_key, (0, 0))
            if now < not_before or row.idempotency_key in self.submitting:
                continue
            try:
                record = await rail.status(row.idempotency_key)
            except RailError as exc:
                # a conflict of the idempotency key here is the submission still in flight
                # under that key (the outbox's attempt), never the bank's word on the payment:
                # inferring "rejected" from it could let the payout be paid again elsewhere
                if not final(exc) or isinstance(exc, IdempotencyConflict):
                    wait = min(RETRY_CAP_MS, RETRY_FIRST_MS * 2 ** min(failures, 16))
                    self._backoff[row.idempotency_key] = (failures + 1, now + wait)
                    log.warning("transfer.status_failed", key=row.idempotency_key,
                                error=str(exc), retry_in_ms=wait)
                    continue
                record = rejected(row.idempotency_key, row.amount_minor, row.currency, exc)
            self._backoff.pop(row.idempotency_key, None)
            if record.status.value != row.status and await self._save(record):
                changed.append(record)
                if record.status is PaymentStatus.UNRECONCILED:
                    # the statement disagrees with the payment: for the operator, never settled
                    log.error("transfer.unreconciled", key=row.idempotency_key,
                              channel=row.channel_id[:16], reason_code=record.reason_code,
                              reason=record.reason)
        return changed

    async def _returned(self, rail: Rail, row: Transfer, now: int) -> PaymentRecord | None:
        """A booked transfer asked again (at most every RETURN_POLL_FACTOR polls): returned
        since (pacs.004, an ACH return), or booked with a notification of change (an ACH
        NOC, C01-C13) whose reason is kept. Nothing else changes a booked transfer — an
        error or an odd answer from the bank never makes it less than booked."""
        if now < self._return_checked.get(row.idempotency_key, 0):
            return None
        self._return_checked[row.idempotency_key] = (
            now + self.ctx.config.bank.poll_interval_ms * RETURN_POLL_FACTOR)
        try:
            record = await rail.status(row.idempotency_key)
        except RailError as exc:
            log.warning("transfer.return_check_failed", key=row.idempotency_key, error=str(exc))
            return None
        reason = " ".join(filter(None, [record.reason_code, record.reason]))[:200]
        if record.status is PaymentStatus.RETURNED and await self._save(record):
            log.error("transfer.returned", key=row.idempotency_key, channel=row.channel_id[:16],
                      reason_code=record.reason_code, reason=record.reason)
            return record
        if record.status is PaymentStatus.BOOKED and reason and reason != row.reason \
                and await self._save(record):  # a notification of change: the data it names
            log.warning("transfer.changed", key=row.idempotency_key, reason=reason)
        return None

    async def payouts_by_channel(self) -> dict[str, list[Transfer]]:
        """Every payout row, grouped by channel, oldest first — in one query (the arbiter's
        poll reads them all at once, not one query per channel in escrow)."""
        grouped: dict[str, list[Transfer]] = {}
        async with self.ctx.db() as session:
            for row in (await session.scalars(select(Transfer).where(
                    Transfer.purpose == "payout").order_by(Transfer.created_ms))).all():
                grouped.setdefault(row.channel_id, []).append(row)
        return grouped

    async def for_channel(self, channel_id: str) -> list[Transfer]:
        async with self.ctx.db() as session:
            return list((await session.scalars(select(Transfer).where(
                Transfer.channel_id == channel_id).order_by(Transfer.created_ms))).all())
