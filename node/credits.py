"""The arbiter's unapplied credits and their refunds: protocol.refunds over storage and the rail.

A credit no channel took is a row of ``unapplied_credit`` (kept by :mod:`node.escrow`). Refunding
one is the ledger machine's decision (:func:`protocol.refunds.step`, ``ActionRefund``): the shell
feeds it the credit as stored, commits the new status and the refund's outbox row in ONE
transaction, and the outbox pays it with the idempotency key the machine derived from the bank
entry id — so a second ``refund``, a retry or a restart never pays twice (ADR 0270).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.context import Context, now_ms
from node.deliveries import transfer_spec
from node.errors import NodeError, NotFound
from node.escrow_payouts import reason_code
from node.outbox import Delivery, Outbox
from node.storage.models import Transfer
from node.storage.models import UnappliedCredit as CreditRow
from protocol import refunds
from protocol.errors import ProtocolError
from protocol.messages import BankAccount
from protocol.references import Purpose, refund_idempotency_key
from protocol.types import MinorUnits

log = structlog.get_logger()


def account_json(account: BankAccount | None) -> str:
    if account is None:
        return ""
    return json.dumps({"scheme": account.scheme, "identification": account.identification,
                       "name": account.name})


def account_of(text: str) -> BankAccount | None:
    """A stored account, or None (also for one that no longer validates)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        return checked_account(data["scheme"], data["identification"], data["name"])
    except (ValueError, KeyError, TypeError, NodeError):
        return None


def checked_account(scheme: str, identification: str, name: str) -> BankAccount:
    """A BankAccount whose every field passed its wire check (INVALID_ACCOUNT otherwise)."""
    account = BankAccount(scheme, identification, name)
    try:
        return BankAccount.from_wire(account.to_wire())
    except (ProtocolError, ValueError, TypeError) as exc:
        raise NodeError(f"not a bank account: {exc}", code="INVALID_ACCOUNT") from None


def sender_of(scheme: str, identification: str | None, name: str | None) -> BankAccount | None:
    """The account a statement entry came from, when the bank named one that validates."""
    if not identification:
        return None
    try:
        return checked_account(scheme, identification.replace(" ", ""), (name or "?")[:70])
    except NodeError:
        return None


def to_ledger(row: CreditRow) -> refunds.UnappliedCredit:
    """The stored credit as the ledger machine's record."""
    try:
        reason = refunds.CreditReason(row.kind)
    except ValueError:
        reason = refunds.CreditReason.UNMATCHED
    return refunds.UnappliedCredit(
        credit_id=row.entry_id, amount=MinorUnits(row.amount_minor), currency=row.currency,
        reason=reason, bank_reference=row.reference, booked_ms=row.booked_ms,
        sender=account_of(row.sender),
        channel_id=bytes.fromhex(row.channel_id) if row.channel_id else b"",
        status=refunds.CreditStatus(row.status), refund_account=account_of(row.refund_account),
        attempt=row.refund_attempt)


def refund_key(row: CreditRow) -> str:
    """The idempotency key of the credit's live refund attempt."""
    return refund_idempotency_key(row.entry_id, row.refund_attempt)


@dataclass(frozen=True, slots=True)
class CreditView:
    """One credit as the operator sees it, with its refund's bank transfer (if any)."""

    row: CreditRow
    transfer: Transfer | None


class Credits:
    """Unapplied credits: list, show, refund, and follow the refunds at the bank."""

    def __init__(self, ctx: Context, outbox: Outbox) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.lock = asyncio.Lock()

    async def all(self) -> list[CreditView]:
        """Every credit no channel took (refunded ones too, marked so), oldest first, each
        with its refund's transfer."""
        async with self.ctx.db() as session:
            rows = (await session.scalars(select(CreditRow).where(
                CreditRow.applied.is_(False)).order_by(CreditRow.booked_ms))).all()
            keys = {refund_key(r): r.entry_id for r in rows
                    if r.status != refunds.CreditStatus.HELD.value}
            transfers = {keys[t.idempotency_key]: t for t in (await session.scalars(
                select(Transfer).where(Transfer.idempotency_key.in_(keys)))).all()}
        return [CreditView(r, transfers.get(r.entry_id)) for r in rows]

    async def show(self, credit_id: str) -> CreditView:
        async with self.ctx.db() as session:
            row = await session.get(CreditRow, credit_id)
            if row is None or row.applied:
                raise NotFound(f"no unapplied credit {credit_id!r}", code="UNKNOWN_CREDIT")
            return CreditView(row, await session.get(Transfer, refund_key(row)))

    async def refund(self, credit_id: str, account: BankAccount | None = None) -> CreditView:
        """Refund a held credit to `account`, or else to the account it came from. Asked again
        while under way, it submits the same transfer under the same key (never twice)."""
        async with self.lock, self.ctx.repo.transaction() as session:
            row = await session.get(CreditRow, credit_id)
            if row is None or row.applied:
                raise NotFound(f"no unapplied credit {credit_id!r}", code="UNKNOWN_CREDIT")
            ledger = refunds.CreditLedger((to_ledger(row),))
            try:
                t = refunds.step(ledger, refunds.ActionRefund(credit_id, account),
                                 now_ms=now_ms())
                deliveries = [_delivery(e) for e in t.effects]
            except ValueError as exc:  # an entry id no reference derives from, a bad scheme
                raise NodeError(f"cannot refund it: {exc}", code="INVALID_ACCOUNT") from None
            credit = t.ledger.get(credit_id)
            row.status = credit.status.value
            row.refund_account = account_json(credit.refund_account)
            await self.outbox.add_all(session, row.channel_id, deliveries)
        self.outbox.kick()
        log.info("escrow.refund", credit=credit_id, amount_minor=row.amount_minor)
        return await self.show(credit_id)

    async def poll(self) -> None:
        """A refund the bank booked is marked refunded (ObserveRefundBooked); one it rejected
        or returned — before the booking was seen, or after it (ObserveRefundReturned) — is
        paid again as the next attempt, in the same transaction as its outbox row
        (ObserveRefundRejected: the ledger machine decides, ADR 0322)."""
        submitted = False
        async with self.lock, self.ctx.repo.transaction() as session:
            rows = [*(await session.scalars(select(CreditRow).where(
                CreditRow.status == refunds.CreditStatus.REFUNDING.value))).all(),
                *await self._returned(session)]
            for row in rows:
                transfer = await session.get(Transfer, refund_key(row))
                event: refunds.LedgerInput
                if transfer is None:
                    continue
                if row.status == refunds.CreditStatus.REFUNDED.value:
                    event = refunds.ObserveRefundReturned(row.entry_id, row.refund_attempt,
                                                          reason_code(transfer.reason))
                elif transfer.status == "booked":
                    event = refunds.ObserveRefundBooked(row.entry_id)
                elif transfer.status in ("rejected", "returned"):
                    event = refunds.ObserveRefundRejected(row.entry_id, row.refund_attempt,
                                                          reason_code(transfer.reason))
                else:
                    continue
                t = refunds.step(refunds.CreditLedger((to_ledger(row),)), event,
                                 now_ms=now_ms())
                credit = t.ledger.get(row.entry_id)
                row.status, row.refund_attempt = credit.status.value, credit.attempt
                await self.outbox.add_all(session, row.channel_id,
                                          [_delivery(e) for e in t.effects])
                submitted = submitted or bool(t.effects)
                what = ("escrow.refunded" if credit.status is refunds.CreditStatus.REFUNDED
                        else "escrow.refund_returned"
                        if isinstance(event, refunds.ObserveRefundReturned)
                        else "escrow.refund_rejected")
                log.info(what, credit=row.entry_id,
                         amount_minor=row.amount_minor, attempt=credit.attempt,
                         status=credit.status.value, reason=credit.rejection)
        if submitted:
            self.outbox.kick()


    async def _returned(self, session: AsyncSession) -> list[CreditRow]:
        """Refunded credits whose live attempt the bank has since returned. The transfer poll
        asks about booked refunds for `[bank] return_window_s` (node.transfers), so a return
        is a refund row turned "returned" within that window: usually none, and then no
        refunded credit is read at all."""
        since = now_ms() - self.ctx.config.bank.return_window_s * 1000
        keys = set((await session.scalars(select(Transfer.idempotency_key).where(
            Transfer.purpose == "refund", Transfer.status == "returned",
            Transfer.updated_ms >= since))).all())
        if not keys:
            return []
        refunded = (await session.scalars(select(CreditRow).where(
            CreditRow.status == refunds.CreditStatus.REFUNDED.value,
            CreditRow.applied.is_(False)))).all()
        return [row for row in refunded if refund_key(row) in keys]


def _delivery(effect: refunds.SubmitRefund) -> Delivery:
    return Delivery("refund", "", transfer_spec(
        effect.idempotency_key, effect.reference, Purpose.REFUND, 0, effect.amount,
        effect.currency, effect.account), recipient="", purpose=f"refund:{effect.idempotency_key}")
