"""Effects that must happen, committed with the state that produced them.

A row is written in the same transaction as the state change; a worker carries rows out after the
commit, in order, retrying with backoff until the handler succeeds. A restart re-reads what is not
done. Handlers must be idempotent (messages are; rail submissions carry idempotency keys).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from node.context import Context, now_ms
from node.storage.models import Outbox as OutboxRow

log = structlog.get_logger()
Handler = Callable[[OutboxRow], Awaitable[None]]
MAX_BACKOFF_S = 5.0


class Outbox:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.handlers: dict[str, Handler] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, session: AsyncSession, channel_id: str, kind: str, target: str,
            payload: bytes) -> None:
        if kind not in self.handlers:
            raise ValueError(f"no outbox handler for {kind!r}")
        session.add(OutboxRow(channel_id=channel_id, kind=kind, target=target, payload=payload,
                              created_ms=now_ms(), attempts=0, done=False, last_error=""))

    def kick(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def pending(self) -> list[OutboxRow]:
        async with self.ctx.db() as session:
            rows = await session.scalars(
                select(OutboxRow).where(OutboxRow.done.is_(False)).order_by(OutboxRow.id)
            )
            return list(rows.all())

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            self._wake.clear()
            failed = False
            for row in await self.pending():
                handler = self.handlers[row.kind]
                try:
                    await handler(row)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # every failure is retried; it must not kill the worker
                    failed = True
                    log.warning("outbox.retry", kind=row.kind, channel=row.channel_id[:16],
                                attempt=row.attempts + 1, error=str(exc)[:300])
                    await self._mark(row.id, done=False, error=str(exc)[:1000])
                    continue
                await self._mark(row.id, done=True, error="")
            if failed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            else:
                backoff = 0.1
                await self._wake.wait()

    async def _mark(self, row_id: int, *, done: bool, error: str) -> None:
        async with self.ctx.db() as session, session.begin():
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id)
                .values(done=done, last_error=error, attempts=OutboxRow.attempts + 1)
            )
