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
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from node.context import Context, now_ms
from node.storage.models import Outbox as OutboxRow

log = structlog.get_logger()
Handler = Callable[[OutboxRow], Awaitable[None]]
MAX_BACKOFF_S = 60.0


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
                              created_ms=now_ms(), attempts=0, done=False, last_error="",
                              next_attempt_ms=0))

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

    async def due(self, now: int) -> list[OutboxRow]:
        async with self.ctx.db() as session:
            rows = await session.scalars(
                select(OutboxRow)
                .where(OutboxRow.done.is_(False), OutboxRow.next_attempt_ms <= now)
                .order_by(OutboxRow.id)
            )
            return list(rows.all())

    async def _next_due_ms(self) -> int | None:
        async with self.ctx.db() as session:
            value = await session.scalar(
                select(func.min(OutboxRow.next_attempt_ms)).where(OutboxRow.done.is_(False))
            )
            return None if value is None else int(value)

    async def _run(self) -> None:
        """Carry out due rows in order. A failing row backs off on its own (exponentially, up
        to a minute) so one unreachable peer does not hold up every other delivery."""
        while True:
            self._wake.clear()
            for row in await self.due(now_ms()):
                handler = self.handlers[row.kind]
                try:
                    await handler(row)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # every failure is retried; it must not kill the worker
                    delay_ms = int(min(MAX_BACKOFF_S, 0.1 * 2 ** min(row.attempts, 10)) * 1000)
                    log.warning("outbox.retry", kind=row.kind, channel=row.channel_id[:16],
                                attempt=row.attempts + 1, retry_in_ms=delay_ms,
                                error=str(exc)[:300])
                    await self._mark(row.id, done=False, error=str(exc)[:1000],
                                     next_attempt_ms=now_ms() + delay_ms)
                    continue
                await self._mark(row.id, done=True, error="", next_attempt_ms=0)
            upcoming = await self._next_due_ms()
            timeout = None if upcoming is None else max(0.0, (upcoming - now_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _mark(self, row_id: int, *, done: bool, error: str, next_attempt_ms: int) -> None:
        async with self.ctx.db() as session, session.begin():
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id)
                .values(done=done, last_error=error, attempts=OutboxRow.attempts + 1,
                        next_attempt_ms=next_attempt_ms)
            )
