"""Bank transfers through the node's rail: submit with an idempotency key, track the status.

What to pay crosses to the rail as a :class:`rails.port.TransferInstruction` (typed, stored in
the outbox by its own encoding), never as a loose dict.
"""

from __future__ import annotations

import json

import structlog
from sqlalchemy import select, update

from node.context import Context, now_ms
from node.storage.models import Outbox as OutboxRow
from node.storage.models import Transfer
from rails.errors import RailError
from rails.port import Account, PaymentRecord, TransferInstruction

log = structlog.get_logger()


class Transfers:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

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
        async with self.ctx.db() as session, session.begin():
            if await session.get(Transfer, key) is None:
                session.add(Transfer(
                    idempotency_key=key, channel_id=channel_id, purpose=instruction.purpose,
                    party=instruction.party, amount_minor=instruction.amount_minor,
                    currency=instruction.currency, reference=instruction.reference,
                    creditor=json.dumps(instruction.creditor_json()), status="pending",
                    reason="", end_to_end_id="", created_ms=now_ms(), updated_ms=now_ms()))
        record = await rail.submit(instruction.payment(self.own_account()))
        await self._save(record)
        log.info("transfer.submitted", channel=channel_id[:16], purpose=instruction.purpose,
                 amount_minor=instruction.amount_minor, status=record.status.value)
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
        for row in rows:
            try:
                record = await rail.status(row.idempotency_key)
            except RailError as exc:
                log.warning("transfer.status_failed", key=row.idempotency_key, error=str(exc))
                continue
            if record.status.value != row.status:
                await self._save(record)
                changed.append(record)
        return changed

    async def for_channel(self, channel_id: str) -> list[Transfer]:
        async with self.ctx.db() as session:
            return list((await session.scalars(select(Transfer).where(
                Transfer.channel_id == channel_id).order_by(Transfer.created_ms))).all())
