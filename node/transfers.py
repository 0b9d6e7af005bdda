"""Bank transfers through the node's rail: submit with an idempotency key, track the status."""

from __future__ import annotations

import json
from typing import Any

import structlog
from sqlalchemy import select, update

from node.context import Context, now_ms
from node.storage.models import Outbox as OutboxRow
from node.storage.models import Transfer
from rails.errors import BankProtocolError, BankRejected, RailError, UnknownPayment
from rails.port import Account, AccountScheme, PaymentInstruction, PaymentRecord, PaymentStatus

log = structlog.get_logger()


def rail_account(data: dict[str, Any]) -> Account:
    scheme = AccountScheme(data["scheme"])
    ident = data["identification"]
    agent = data.get("agent") or None
    if scheme is AccountScheme.US_ABA and ":" in ident:
        agent, ident = ident.split(":", 1)
    return Account(data["name"], scheme, ident, agent)


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


class Transfers:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._backoff: dict[str, tuple[int, int]] = {}
        """Per idempotency key: failed status look-ups in a row, and when to ask next."""

    def own_account(self) -> Account:
        bank = self.ctx.config.bank
        return rail_account(
            {"scheme": bank.scheme, "identification": bank.identification,
             "name": bank.name or self.ctx.config.name, "agent": bank.agent}
        )

    async def submit_row(self, row: OutboxRow) -> None:
        """Outbox handler: pay what the row describes (idempotent by its key)."""
        await self.submit(row.channel_id, json.loads(row.payload))

    async def submit(self, channel_id: str, spec: dict[str, Any]) -> PaymentRecord:
        rail = self.ctx.rail
        if rail is None:
            raise RuntimeError("this node has no rail configured ([bank] rail in config.toml)")
        key = spec["idempotency_key"]
        async with self.ctx.db() as session, session.begin():
            if await session.get(Transfer, key) is None:
                session.add(Transfer(
                    idempotency_key=key, channel_id=channel_id, purpose=spec["purpose"],
                    party=spec["party"], amount_minor=spec["amount_minor"],
                    currency=spec["currency"], reference=spec["reference"],
                    creditor=json.dumps(spec["creditor"]), status="pending", reason="",
                    end_to_end_id="", created_ms=now_ms(), updated_ms=now_ms()))
        try:
            record = await rail.submit(PaymentInstruction(
                idempotency_key=key,
                debtor=self.own_account(),
                creditor=rail_account(spec["creditor"]),
                amount_minor=int(spec["amount_minor"]),
                currency=spec["currency"],
                reference=spec["reference"],
            ))
        except RailError as exc:
            if not final(exc):
                raise  # the outbox retries it with backoff, under the same key
            record = rejected(key, spec["amount_minor"], spec["currency"], exc)
        await self._save(record)
        log.info("transfer.submitted", channel=channel_id[:16], purpose=spec["purpose"],
                 amount_minor=spec["amount_minor"], status=record.status.value)
        return record

    async def _save(self, record: PaymentRecord) -> None:
        async with self.ctx.db() as session, session.begin():
            await session.execute(
                update(Transfer).where(Transfer.idempotency_key == record.idempotency_key).values(
                    status=record.status.value,
                    reason=" ".join(filter(None, [record.reason_code, record.reason]))[:200],
                    end_to_end_id=record.end_to_end_id, updated_ms=now_ms()))

    async def refresh(self) -> list[PaymentRecord]:
        """Ask the rail about every transfer not final yet; return the ones that changed."""
        rail = self.ctx.rail
        if rail is None:
            return []
        async with self.ctx.db() as session:
            rows = (await session.scalars(select(Transfer).where(
                Transfer.status.in_(("pending", "accepted"))))).all()
        changed = []
        now = now_ms()
        for row in rows:
            failures, not_before = self._backoff.get(row.idempotency_key, (0, 0))
            if now < not_before:
                continue
            try:
                record = await rail.status(row.idempotency_key)
            except RailError as exc:
                if not final(exc):
                    wait = min(RETRY_CAP_MS, RETRY_FIRST_MS * 2 ** min(failures, 16))
                    self._backoff[row.idempotency_key] = (failures + 1, now + wait)
                    log.warning("transfer.status_failed", key=row.idempotency_key,
                                error=str(exc), retry_in_ms=wait)
                    continue
                record = rejected(row.idempotency_key, row.amount_minor, row.currency, exc)
            self._backoff.pop(row.idempotency_key, None)
            if record.status.value != row.status:
                await self._save(record)
                changed.append(record)
        return changed

    async def for_channel(self, channel_id: str) -> list[Transfer]:
        async with self.ctx.db() as session:
            return list((await session.scalars(select(Transfer).where(
                Transfer.channel_id == channel_id).order_by(Transfer.created_ms))).all())
