"""Effects that must happen, committed with the state that produced them (specs/0005 §2.1).

A row is written in the same transaction as the state change; after the commit it is carried out
by the scheduler here, retried with backoff until it is delivered or its recipient refuses it
with a signed `Refusal`. A restart re-reads what is pending. Handlers must be idempotent
(messages are; rail submissions carry idempotency keys).

The guarantees, and why:

- *Per key, only the latest row is pending.* A row's key is (channel, recipient, purpose); a
  newer row for the same key replaces the pending (or delivered) one in the same transaction,
  and a refusal replaces the key's earlier refused row, so the table holds at most two rows per
  key, bounded by channels × recipients × purposes, whatever a peer makes us send.
- *Lanes.* Rows for one recipient share a lane with at most `LANE_WIDTH` attempts in flight
  (`BANK_LANE_WIDTH` for the node's own bank);
  recipients never wait for each other (a target that never answers holds up only its own lane)
  — up to `MAX_IN_FLIGHT` non-urgent attempts in all, so that recipients anyone can create
  cannot make the node hold unbounded sockets.
- *Urgent rows* (evidence, dispute and payout notices, closes, unilateral claims) are in no
  lane: each gets its own task as soon as it is due, with a short backoff cap, so no other row
  can ever be ahead of one.
- *Only a signed refusal ends a row.* A connection error, a timeout, a 5xx, a body that is not a
  message, an unsigned `Error` or a `Refusal` that does not verify for the row's recipient and
  exact payload are transient: the row is retried, forever (dedup bounds the rows).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog
from sqlalchemy import ColumnElement, and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from node.background import stop_tasks
from node.context import Context, now_ms
from node.peerclient import Refused
from node.storage.models import Outbox as OutboxRow
from protocol.errors import ErrorCode, ProtocolError

log = structlog.get_logger()
Handler = Callable[[OutboxRow], Awaitable[None]]
"""Carries out one row: returns when delivered, raises `Refused` for the recipient's refusal
and anything else for a failure to retry."""

LANE_WIDTH = 4
"""Attempts in flight at once for one recipient (non-urgent rows)."""
BANK_LANE_WIDTH = 16
"""Attempts in flight at once to the node's own bank (recipient ""): deposits and payouts of
thousands of channels go out together (issue 13), each idempotent by its key, and the bank is
one the operator chose, not a recipient anyone can create."""
MAX_IN_FLIGHT = 64
"""Non-urgent attempts in flight at once, all lanes together: recipients anyone can create
(Sybil keys registering channels at an arbiter) cannot make the node hold unbounded sockets.
Nothing time-critical is non-urgent, and everything a node needs from an arbiter it also asks
for itself (specs/0005 §4.1), so a non-urgent row that waits here costs time, never money."""
ATTEMPT_TIMEOUT_S = 10.0
"""T: the longest one attempt to a peer may take (connect, send, read the bounded answer)."""
BANK_ATTEMPT_TIMEOUT_S = 120.0
"""One bank submission (recipient ""); idempotent by its key, so a cut one is simply redone."""
FIRST_BACKOFF_S = 0.1
URGENT_BACKOFF_CAP_S = 2.0
"""B: the longest an urgent row waits between two attempts."""
BACKOFF_CAP_S = 60.0
NOT_YET = frozenset({ErrorCode.INVALID_STATE, ErrorCode.UNKNOWN_CHANNEL, ErrorCode.INTERNAL})
"""Refusal codes that mean "not yet" (the recipient is a step behind, or failed on its own
side: INTERNAL "may be retried", 0002 §6.1): retried, not final. An unknown code is INTERNAL."""
_IN_CHUNK = 500
"""Ids per IN (...) when loading rows (SQLite's parameter limit)."""
SCAN_ROWS = 64
"""Due rows read at a time, in id order, while choosing what to start."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row to add: what to do (`kind`, `target`, `payload`), for whom (`recipient`, a node
    id in hex, "" for the bank), why (`purpose`, the dedup key within the channel) and whether
    it is time-critical (`urgent`)."""

    kind: str
    target: str
    payload: bytes
    recipient: str
    purpose: str
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt decided: delivered, refused for good, or to be retried."""

    done: bool
    refused: bool
    error: str

    @property
    def retry(self) -> bool:
        return not (self.done or self.refused)


DELIVERED = Outcome(done=True, refused=False, error="")


def classify(row: OutboxRow, exc: BaseException | None) -> Outcome:
    """The outcome of one attempt at `row` that raised `exc` (None: the handler returned)."""
    if exc is None:
        return DELIVERED
    if isinstance(exc, Refused) and row.recipient:
        refusal = exc.refusal
        try:
            refusal.verify_for(bytes.fromhex(row.recipient), row.payload)
        except (ProtocolError, ValueError):
            return Outcome(False, False, f"a refusal not signed by the recipient for these "
                                         f"bytes (transient): {exc}")
        code = _code(refusal.code)
        text = f"{code.name}: {refusal.message}"
        if code in NOT_YET:
            return Outcome(False, False, text)
        return Outcome(False, True, text)
    if isinstance(exc, TimeoutError):
        return Outcome(False, False, "the attempt timed out")
    return Outcome(False, False, str(exc) or type(exc).__name__)


def _code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL


def backoff_ms(attempts: int, *, urgent: bool) -> int:
    """The wait after the `attempts`-th failed attempt: exponential from 0.1 s, capped at
    B = 2 s for urgent rows and 60 s for the others."""
    cap = URGENT_BACKOFF_CAP_S if urgent else BACKOFF_CAP_S
    return int(min(cap, FIRST_BACKOFF_S * 2 ** min(max(attempts - 1, 0), 16)) * 1000)


def _key(channel_id: str, recipient: str, purpose: str) -> ColumnElement[bool]:
    return and_(OutboxRow.channel_id == channel_id, OutboxRow.recipient == recipient,
                OutboxRow.purpose == purpose)


def _pending() -> ColumnElement[bool]:
    """Not delivered and not refused: still to be carried out."""
    return and_(OutboxRow.done.is_(False), OutboxRow.refused.is_(False))


class Outbox:
    def __init__(self, ctx: Context, *, attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
                 lane_width: int = LANE_WIDTH, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.ctx = ctx
        self.handlers: dict[str, Handler] = {}
        self.attempt_timeout_s = attempt_timeout_s
        self.lane_width = lane_width
        self.max_in_flight = max_in_flight
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: dict[int, asyncio.Task[None]] = {}
        self._lanes: Counter[str] = Counter()
        """Non-urgent attempts in flight, by recipient."""

    # -- adding ---------------------------------------------------------------------------------

    async def add(self, session: AsyncSession, channel_id: str, kind: str, target: str,
                  payload: bytes, *, recipient: str, purpose: str, urgent: bool = False) -> None:
        """Add a row in the caller's transaction, replacing the pending row with the same
        (channel, recipient, purpose): per key only the latest is pending. A delivered row of
        the key goes too (the new row supersedes it); a refused one stays for the operator."""
        if kind not in self.handlers:
            raise ValueError(f"no outbox handler for {kind!r}")
        await session.execute(
            delete(OutboxRow)
            .where(_key(channel_id, recipient, purpose), OutboxRow.refused.is_(False))
            .execution_options(synchronize_session=False)
        )
        session.add(OutboxRow(channel_id=channel_id, kind=kind, target=target, payload=payload,
                              recipient=recipient, purpose=purpose, urgent=urgent,
                              refused=False, created_ms=now_ms(), attempts=0, done=False,
                              last_error="", next_attempt_ms=0))

    async def add_all(self, session: AsyncSession, channel_id: str,
                      deliveries: Iterable[Delivery]) -> None:
        for d in deliveries:
            await self.add(session, channel_id, d.kind, d.target, d.payload,
                           recipient=d.recipient, purpose=d.purpose, urgent=d.urgent)

    async def retire(self, session: AsyncSession, channel_id: str,
                     keep: tuple[str, ...] = ()) -> None:
        """In the caller's transaction: drop the channel's pending messages (not bank
        submissions, not refused rows, not the purposes in `keep`: a purpose, or a prefix
        ending in ":") once it is settled. The
        arbiter has paid out, so no close, claim, evidence, funding confirmation or dispute
        notice can change anything; a recipient settled too refuses them as INVALID_STATE,
        which is "not yet" (NOT_YET), so they would be retried for ever (ADR 0240)."""
        kept = [~OutboxRow.purpose.startswith(k) if k.endswith(":") else OutboxRow.purpose != k
                for k in keep]  # "payout-returned:" keeps every purpose it begins
        await session.execute(
            delete(OutboxRow)
            .where(OutboxRow.channel_id == channel_id, OutboxRow.recipient != "", _pending(),
                   *kept)
            .execution_options(synchronize_session=False)
        )

    def kick(self) -> None:
        """Look for due rows now (call after committing rows)."""
        self._wake.set()

    # -- reading --------------------------------------------------------------------------------

    async def pending(self) -> list[OutboxRow]:
        """Rows still to be delivered, oldest first."""
        async with self.ctx.db() as session:
            rows = await session.scalars(select(OutboxRow).where(_pending())
                                         .order_by(OutboxRow.id))
            return list(rows.all())

    async def rows(self, *, include_done: bool = False) -> list[OutboxRow]:
        """For the operator: pending and refused rows (and delivered ones with
        `include_done`), oldest first."""
        query = select(OutboxRow).order_by(OutboxRow.id)
        if not include_done:
            query = query.where(OutboxRow.done.is_(False))
        async with self.ctx.db() as session:
            return list((await session.scalars(query)).all())

    # -- running --------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        await stop_tasks(self._task, *self._running.values())
        self._task = None

    async def _run(self) -> None:
        """Start every due row its lane has room for (every due urgent row), then sleep until
        the next row is due, a row is added, or an attempt ends. It never spins: a due row
        held back by a full lane is looked at again only when an attempt of that lane ends."""
        while True:
            self._wake.clear()
            try:
                wait_s = await self._schedule()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: look again in a moment
                log.warning("outbox.schedule_failed", error=str(exc)[:300])
                wait_s = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    def width(self, recipient: str) -> int:
        """The lane's width: the node's own bank's is BANK_LANE_WIDTH, a peer's `lane_width`."""
        return max(self.lane_width, BANK_LANE_WIDTH) if recipient == "" else self.lane_width

    async def _schedule(self) -> float | None:
        """Start what is due and has room; return seconds until the next row is due (None:
        nothing scheduled ahead)."""
        now = now_ms()
        async with self.ctx.db() as session:
            due = and_(_pending(), OutboxRow.next_attempt_ms <= now)
            chosen: list[int] = [row_id for row_id in (await session.scalars(
                select(OutboxRow.id).where(due, OutboxRow.urgent.is_(True))
                .order_by(OutboxRow.id))).all() if row_id not in self._running]
            # every due urgent row, lanes or not (the ids running are left out here, not in
            # SQL: as many urgent rows may be in flight as there are)
            room = Counter({r: self.width(r) - n for r, n in self._lanes.items()})
            overall, after = self.max_in_flight - sum(self._lanes.values()), -1
            while overall > 0:
                # the next due rows of lanes with room, SCAN_ROWS at a time by id: thousands of
                # rows queued for one busy recipient are skipped by the database, not read each
                # time an attempt ends (9,400 channels opening: 2,750 rows, 8.6 ms a pass)
                full = [r for r, n in room.items() if n <= 0]  # at most MAX_IN_FLIGHT lanes
                batch = (await session.execute(
                    select(OutboxRow.id, OutboxRow.recipient)
                    .where(due, OutboxRow.urgent.is_(False), OutboxRow.recipient.notin_(full),
                           OutboxRow.id > after)
                    .order_by(OutboxRow.id).limit(SCAN_ROWS))).all()
                for row_id, recipient in batch:
                    after = row_id
                    if row_id in self._running:  # at most MAX_IN_FLIGHT of them
                        continue
                    if room.get(recipient, self.width(recipient)) <= 0 or overall <= 0:
                        continue
                    room[recipient] = room.get(recipient, self.width(recipient)) - 1
                    overall -= 1
                    chosen.append(row_id)
                if len(batch) < SCAN_ROWS:
                    break
            rows: list[OutboxRow] = []
            for i in range(0, len(chosen), _IN_CHUNK):
                rows += (await session.scalars(
                    select(OutboxRow)
                    .where(OutboxRow.id.in_(chosen[i:i + _IN_CHUNK]), _pending(),
                           OutboxRow.next_attempt_ms <= now)
                    .order_by(OutboxRow.id))).all()
            upcoming = await session.scalar(
                select(func.min(OutboxRow.next_attempt_ms))
                .where(_pending(), OutboxRow.next_attempt_ms > now))
        for row in rows:
            if not row.urgent:
                self._lanes[row.recipient] += 1
            self._running[row.id] = asyncio.create_task(
                self._attempt(row), name=f"outbox {row.id} {row.purpose}")
        return None if upcoming is None else max(0.0, (int(upcoming) - now_ms()) / 1000)

    async def _attempt(self, row: OutboxRow) -> None:
        """One attempt at one row, its outcome written in one transaction."""
        timeout = self.attempt_timeout_s if row.recipient else BANK_ATTEMPT_TIMEOUT_S
        try:
            error: BaseException | None = None
            try:
                await asyncio.wait_for(self.handlers[row.kind](row), timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # classified below: only a signed refusal is final
                error = exc
            outcome = classify(row, error)
            self.ctx.metrics.delivery(outcome.done, outcome.refused)
            await self._mark(row, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the outcome could not be written: the row is tried again
            log.warning("outbox.mark_failed", row=row.id, error=str(exc)[:300])
            await asyncio.sleep(1.0)
        finally:
            self._running.pop(row.id, None)
            if not row.urgent:
                self._lanes[row.recipient] -= 1
                if self._lanes[row.recipient] <= 0:
                    del self._lanes[row.recipient]
            self._wake.set()

    async def _mark(self, row: OutboxRow, outcome: Outcome) -> None:
        attempts = row.attempts + 1
        next_ms = now_ms() + backoff_ms(attempts, urgent=row.urgent) if outcome.retry else 0
        context = {"row": row.id, "kind": row.kind, "purpose": row.purpose,
                   "channel": row.channel_id[:16], "recipient": row.recipient[:16],
                   "attempt": attempts}
        if outcome.refused:
            log.warning("outbox.refused", **context, error=outcome.error[:300])
        elif outcome.retry:
            log.info("outbox.retry", **context, retry_in_ms=next_ms - now_ms(),
                     error=outcome.error[:300])
        async with self.ctx.db() as session, session.begin():
            marked = await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row.id)
                .values(done=outcome.done, refused=outcome.refused,
                        last_error=outcome.error[:1000], attempts=OutboxRow.attempts + 1,
                        next_attempt_ms=next_ms)
                .execution_options(synchronize_session=False)
            )
            if outcome.refused and marked.rowcount:  # type: ignore[attr-defined]
                # the latest refusal per key is what the operator needs; keeping every one
                # would let a peer that refuses grow the table with each row it makes us send
                await session.execute(
                    delete(OutboxRow)
                    .where(_key(row.channel_id, row.recipient, row.purpose),
                           OutboxRow.refused.is_(True), OutboxRow.id < row.id)
                    .execution_options(synchronize_session=False)
                )
