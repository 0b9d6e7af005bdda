"""The event log: every state change the ERP cares about, with a stable id and a type.

An event is derived (node.event_changes) from a committed state transition — the state before
and after, at the one place each service commits (ChannelService.commit, EscrowService.commit,
Transfers._save) — and is appended IN THAT TRANSACTION: a change that committed has its event,
a rolled-back one has none (ADR 0210). Ids are monotonic in commit order (on PostgreSQL an
advisory transaction lock serializes the appends), so ``after=ID`` never skips an event that
committed late.

Payments received are aggregated: at most one ``payment.received`` per channel per
``[limits] payment_event_interval_ms``, covering every proof since the last one (the cursor in
``payment_report`` is written with the event, so a crash neither loses nor repeats an amount);
a ticker reports what is left once the interval has passed, and a phase change reports it first.

Consumers: ``GET /api/events`` (node.api.events_out, server-sent events or JSON pages) and the
webhooks (node.webhooks). Events older than ``[limits] event_retention_ms`` (90 days) that every
webhook receiver has had are pruned hourly.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, or_, select, text
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from node.background import take_turns
from node.channel_states import ChannelStates
from node.event_changes import (
    EVENT_TYPES,
    Change,
    Report,
    channel_changes,
    escrow_changes,
    matches,
    parse_types,
    payment_change,
    transfer_change,
)
from node.storage.models import Event, PaymentReport, Transfer, WebhookEndpoint
from protocol import arbiter as arb
from protocol import channel as ch
from rails.port import PaymentRecord

log = structlog.get_logger()

PG_LOCK_KEY = 0x6D6C_6576  # "mlev": serializes event appends on PostgreSQL (ADR 0210)
PAGE_MAX = 500
PRUNE_EVERY_S = 3600.0


def event_json(row: Event) -> dict[str, Any]:
    return {"id": row.id, "type": row.type, "channel_id": row.channel_id or None,
            "created_ms": row.created_ms, "data": json.loads(row.data)}


def _report_of(row: PaymentReport) -> Report:
    return Report(row.nonce, row.amount, tuple(json.loads(row.quantities)), row.reported_ms)


# -- the log (I/O) -----------------------------------------------------------------------------


class EventLog:
    """Appends the events of each commit in its transaction; wakes readers after the commit."""

    def __init__(self, db: async_sessionmaker[AsyncSession], interval_ms: int,
                 retention_ms: int = 90 * 86_400_000) -> None:
        self.db = db
        self.interval_ms = interval_ms
        self.retention_ms = retention_ms
        self.reports: dict[str, Report] = {}
        self.unreported: set[str] = set()
        """Channels with payments received after their last `payment.received`."""
        self._new = asyncio.Event()
        self.closing = False
        """Set at shutdown: live streams end (their clients resume with Last-Event-ID)."""
        self.generation = 0
        """Counts commits that appended events: a reader notes it before it reads a page."""

    def close(self) -> None:
        self.closing = True
        self.notify()

    # -- the hooks, one per commit point --------------------------------------------------------

    async def channel(self, session: AsyncSession, before: ch.ChannelState | None,
                      after: ch.ChannelState) -> None:
        """In the channel commit's transaction: its events, and the payments due."""
        changes = channel_changes(before, after) if before is None or (
            before.phase is not after.phase or before.funded != after.funded) else []
        if after.received.nonce > (before.received.nonce if before else 0) or changes:
            await self._payments(session, after, force=bool(changes), first=changes)

    def without_rows(self, before: ch.ChannelState, after: ch.ChannelState) -> bool:
        """Whether the channel commit of `after` appends no event (:meth:`channel` would write
        nothing): no phase or funding change, and nothing received, or a payment received that
        is not due for its report yet, noted for the ticker as :meth:`channel` notes it. Such a
        commit needs no session (node.storage.direct)."""
        if before.phase is not after.phase or before.funded != after.funded:
            return False
        if after.received.nonce <= before.received.nonce:
            return True
        cid = after.channel_id.hex()
        report = self.reports.get(cid)
        if report is None or payment_change(report, after, now(), self.interval_ms) is not None:
            return False  # a report to read first, or one to write
        if after.received.nonce > report.nonce:
            self.unreported.add(cid)
        return True

    async def escrow(self, session: AsyncSession, before: arb.ArbiterState | None,
                     after: arb.ArbiterState, effects: Sequence[object]) -> None:
        """In the escrow commit's transaction (arbiter mode)."""
        if before is after and not effects:
            return
        changes = escrow_changes(before, after, effects)
        if changes:
            await self._append(session, after.channel_id.hex(), changes)

    async def transfer(self, session: AsyncSession, record: PaymentRecord) -> None:
        """In the transaction that saves a transfer's new status (before it is written)."""
        row = await session.get(Transfer, record.idempotency_key)
        change = None if row is None else transfer_change(row, record)
        if change is not None and row is not None:
            await self._append(session, row.channel_id, [change])

    async def append(self, session: AsyncSession, cid: str, changes: Sequence[Change]) -> None:
        """In the caller's transaction: events it derived itself (node.transfer_notices)."""
        await self._append(session, cid, changes)

    # -- payments received ----------------------------------------------------------------------

    async def _report(self, session: AsyncSession, cid: str) -> Report:
        report = self.reports.get(cid)
        if report is None:
            row = await session.get(PaymentReport, cid)
            report = Report() if row is None else _report_of(row)
            self.reports.setdefault(cid, report)
        return report

    async def _load_reports(self, cids: Sequence[str]) -> None:
        """Every channel's last report in one query (a restart of 10,000 channels asked for
        them one session each, in the first seconds the node serves, issue 13); a channel
        with none has reported nothing."""
        async with self.db() as session:
            rows = (await session.scalars(select(PaymentReport))).all()
        for row in rows:
            self.reports.setdefault(row.channel_id, _report_of(row))
        for cid in cids:
            self.reports.setdefault(cid, Report())

    async def _payments(self, session: AsyncSession, state: ch.ChannelState, *,
                        force: bool, first: Sequence[Change] = ()) -> bool:
        """Report what is due (always before a phase change: `first` comes after it); True
        when a `payment.received` was written."""
        cid = state.channel_id.hex()
        report = await self._report(session, cid)
        due = payment_change(report, state, now(), self.interval_ms, force=force)
        changes = list(first)
        if due is None:
            if state.received.nonce > report.nonce:
                self.unreported.add(cid)
        else:
            change, new = due
            changes.insert(0, change)
            await self._save_report(session, cid, new)
            self._after_commit(session, lambda: self._reported(cid, new))
        if changes:
            await self._append(session, cid, changes)
        return due is not None

    async def _save_report(self, session: AsyncSession, cid: str, report: Report) -> None:
        row = await session.get(PaymentReport, cid)
        values = {"nonce": report.nonce, "amount": report.amount,
                  "quantities": json.dumps(list(report.quantities)),
                  "reported_ms": report.reported_ms}
        if row is None:
            session.add(PaymentReport(channel_id=cid, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)

    def _reported(self, cid: str, report: Report) -> None:
        self.reports[cid] = report
        self.unreported.discard(cid)

    async def flush_payments(self, states: Callable[[], ChannelStates],
                             lock: Callable[[str], asyncio.Lock], *, all_: bool = False) -> int:
        """Report the payments whose interval has passed (every channel with `all_`: after a
        restart); returns how many events were written."""
        written = 0
        cids = list(states()) if all_ else list(self.unreported)
        if all_:
            await self._load_reports(cids)
        for i, cid in enumerate(cids):
            await take_turns(i)
            held, report = states(), self.reports.get(cid)
            if cid not in held or (report is not None
                                   and held.received_nonce(cid) <= report.nonce):
                self.unreported.discard(cid)  # nothing new since its report: no session, and
                continue  # no state decoded (a restart of 10,000 channels decoded them all)
            async with lock(cid):
                state = states().get(cid)
                if state is None:
                    continue
                async with self.db() as session, session.begin():
                    report = await self._report(session, cid)
                    if state.received.nonce <= report.nonce:
                        self.unreported.discard(cid)
                        continue
                    written += await self._payments(session, state, force=False)
        return written

    async def run_payments(self, states: Callable[[], ChannelStates],
                           lock: Callable[[str], asyncio.Lock]) -> None:
        """The ticker: what a channel received since its last report goes out once the
        interval has passed, even if nothing else happens on it."""
        await self._guard(self.flush_payments(states, lock, all_=True))
        tick = max(0.05, min(5.0, self.interval_ms / 4000))
        pruned = 0.0
        while True:
            await asyncio.sleep(tick)
            if self.unreported:
                await self._guard(self.flush_payments(states, lock))
            if time.monotonic() - pruned > PRUNE_EVERY_S:
                pruned = time.monotonic()
                await self._guard(self.prune(now()))

    @staticmethod
    async def _guard(work: Awaitable[int]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # logged; the next tick tries again
            log.warning("events.payments_failed", error=str(exc)[:300])

    # -- appending and reading ------------------------------------------------------------------

    async def _append(self, session: AsyncSession, cid: str, changes: Sequence[Change]) -> None:
        bind = session.bind
        if bind is not None and bind.dialect.name == "postgresql":
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        stamp = now()
        await session.execute(insert(Event), [
            {"type": type_, "channel_id": cid, "created_ms": stamp,
             "data": json.dumps(data, sort_keys=True, separators=(",", ":"))}
            for type_, data in changes])
        self._after_commit(session, self.notify)

    @staticmethod
    def _after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
        def fire(_session: object) -> None:
            callback()

        sa_event.listen(session.sync_session, "after_commit", fire, once=True)

    def notify(self) -> None:
        """Wake every reader waiting for new events."""
        self.generation += 1
        woken, self._new = self._new, asyncio.Event()
        woken.set()

    async def wait(self, timeout_s: float, seen: int | None = None) -> bool:
        """Until new events committed (True), or `timeout_s` passed (False); at once when
        some committed since the reader noted `generation` as `seen`."""
        if seen is not None and seen != self.generation:
            return True
        try:
            await asyncio.wait_for(self._new.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def page(self, after: int, limit: int = 100,
                   types: Sequence[str] | None = None) -> list[Event]:
        """Events with ids above `after`, oldest first (at most `limit`, of `types`)."""
        query = select(Event).where(Event.id > after).order_by(Event.id)
        if types is not None and "*" not in types:
            query = query.where(or_(*(Event.type.startswith(t[:-1]) if t.endswith(".*")
                                      else Event.type == t for t in types)))
        async with self.db() as session:
            return list((await session.scalars(query.limit(min(limit, PAGE_MAX)))).all())

    async def prune(self, now_ms: int) -> int:
        """Delete events older than the retention that every webhook receiver has had; never
        the newest (so an id is never handed out twice). Returns how many went."""
        async with self.db() as session, session.begin():
            newest = await session.scalar(select(func.max(Event.id)))
            if newest is None:
                return 0
            owed = await session.scalar(select(func.min(WebhookEndpoint.cursor)))
            upto = min(newest - 1, newest if owed is None else owed)
            done = await session.execute(delete(Event).where(
                Event.created_ms < now_ms - self.retention_ms, Event.id <= upto))
        return int(getattr(done, "rowcount", 0) or 0)

    async def last_id(self) -> int:
        async with self.db() as session:
            return int(await session.scalar(select(func.max(Event.id))) or 0)


def now() -> int:
    return time.time_ns() // 1_000_000


__all__ = ["EVENT_TYPES", "PAGE_MAX", "EventLog", "Report", "channel_changes", "escrow_changes",
           "event_json", "matches", "parse_types", "payment_change", "transfer_change"]
