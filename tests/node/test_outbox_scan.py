"""What one outbox scheduling pass reads (node.outbox, `Outbox._schedule`; specs/0005 §2.1).

A node with thousands of pending rows, most for recipients whose lane is full or that are
backing off, must choose what to start by reading a bounded number of rows, not every pending
row each time an attempt ends; and neither a due urgent row nor a row of a lane with room may
wait behind that backlog. Real SQLite (and PostgreSQL with METERLINE_TEST_PG_URL), the real
`Outbox`; rows are counted as the driver's cursors hand them to SQLAlchemy, not as statements.

Why a pass is bounded: it reads the due urgent ids (every one: they are in no lane), then pages
of at most SCAN_ROWS non-urgent rows, rows of full lanes left out in SQL. So every page but the
last either fills a lane (left out of every later page) or holds only rows it starts or that
are in flight. A filled lane ends with LANE_WIDTH attempts in flight (the bank's, more), so with
`free` attempts that may be in flight outside the lanes full before the pass, a pass fills at
most free // LANE_WIDTH lanes and reads at most free // SCAN_ROWS pages of the other kind: at
most `pages(free)` pages, then the rows it starts and the next due time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from node.context import now_ms
from node.outbox import LANE_WIDTH, MAX_IN_FLIGHT, SCAN_ROWS
from node.storage.models import Outbox as OutboxRow
from protocol.crypto import Signer

from .conftest import Services, ServicesFactory, make_config

CID = "c1" * 32
FULL_LANES = 12
"""Recipients whose LANE_WIDTH attempts hang: 48 of the MAX_IN_FLIGHT slots held."""
BACKLOG_PER_FULL_LANE = 250
BACKING_OFF = 400
"""Recipients whose rows failed and wait out their backoff."""
ROWS_PER_BACKING_OFF = 5
FREE = MAX_IN_FLIGHT - FULL_LANES * LANE_WIDTH
"""Attempts that may be in flight outside the full lanes."""


def pages(free: int) -> int:
    """The most pages of SCAN_ROWS one pass reads (the module's docstring says why)."""
    return free // LANE_WIDTH + free // SCAN_ROWS + 1


def most_rows_read(*, urgent: int, free: int) -> int:
    """The most rows one pass reads: the due urgent ids, its pages, the rows it starts (every
    due urgent one and at most `free` others) and the next due time."""
    return urgent + pages(free) * SCAN_ROWS + urgent + free + 1


def recipient(i: int) -> str:
    return f"{i:064x}"


# -- counting the rows read ---------------------------------------------------------------------


@dataclass
class Reads:
    rows: int = 0
    statements: int = 0


class _CountingCursor:
    """A DBAPI cursor that counts the rows it hands over."""

    def __init__(self, cursor: Any, reads: Reads) -> None:
        self._cursor = cursor
        self._reads = reads

    def fetchone(self) -> Any:
        row = self._cursor.fetchone()
        self._reads.rows += row is not None
        return row

    def fetchmany(self, *size: int) -> Any:
        rows = self._cursor.fetchmany(*size)
        self._reads.rows += len(rows)
        return rows

    def fetchall(self) -> Any:
        rows = self._cursor.fetchall()
        self._reads.rows += len(rows)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@contextlib.contextmanager
def reading(engine: AsyncEngine) -> Iterator[Reads]:
    """Count every row any statement on `engine` returns while the block runs."""
    reads = Reads()

    def wrap(_conn: Any, cursor: Any, _statement: str, _parameters: Any, context: Any,
             _executemany: bool) -> None:
        reads.statements += 1
        context.cursor = _CountingCursor(cursor, reads)  # the cursor its result fetches from

    event.listen(engine.sync_engine, "after_cursor_execute", wrap)
    try:
        yield reads
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", wrap)


# -- an outbox with a backlog -------------------------------------------------------------------


@dataclass
class Held:
    """The handler of kind "held": records each row it is given and keeps it in flight."""

    rows: list[OutboxRow]
    release: asyncio.Event

    async def __call__(self, row: OutboxRow) -> None:
        self.rows.append(row)
        await self.release.wait()

    def ids(self) -> set[int]:
        return {r.id for r in self.rows}


@dataclass
class Delivered:
    """The handler of kind "delivered": records each row it is given, delivered at once, and
    says when it has been given `expected` rows."""

    expected: int
    rows: list[OutboxRow] = field(default_factory=list)
    all_given: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, row: OutboxRow) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.expected:
            self.all_given.set()


async def add(svc: Services, kind: str, rows: Sequence[tuple[str, str]], *,
              urgent: bool = False) -> list[int]:
    """Add (recipient, purpose) rows in one transaction (each purpose its own, so none replaces
    another); their ids, in order."""
    async with svc.ctx.db() as session, session.begin():
        for i, (rcpt, purpose) in enumerate(rows):
            await svc.outbox.add(session, CID, kind, "http://t.test/p2p/x", b"%d" % i,
                                 recipient=rcpt, purpose=purpose, urgent=urgent)
    purposes = {p for _, p in rows}
    return [r.id for r in await svc.outbox.pending() if r.purpose in purposes]


async def backlog(svc: Services, rows: Sequence[tuple[str, str]], *,
                  failed_until_ms: int = 0) -> list[int]:
    """Like `add` (kind "held", not urgent), thousands at a time: the rows `Outbox.add` writes,
    inserted in one statement; with `failed_until_ms`, as a failed attempt's mark leaves them,
    waiting out their backoff until then."""
    async with svc.ctx.db() as session, session.begin():
        await session.execute(insert(OutboxRow), [
            {"channel_id": CID, "kind": "held", "target": "http://t.test/p2p/x",
             "payload": b"%d" % i, "recipient": rcpt, "purpose": purpose, "urgent": False,
             "refused": False, "created_ms": now_ms(), "done": False,
             "attempts": 9 if failed_until_ms else 0,
             "last_error": "peer unreachable" if failed_until_ms else "",
             "next_attempt_ms": failed_until_ms} for i, (rcpt, purpose) in enumerate(rows)])
    purposes = {p for _, p in rows}
    return [r.id for r in await svc.outbox.pending() if r.purpose in purposes]


async def begun() -> None:
    """Let the attempts a pass created reach their handlers (each is ready at once: a few turns
    of the loop, well within this)."""
    await asyncio.sleep(0.05)


async def backlogged(tmp_path: Path, db_url: str, services: ServicesFactory) -> tuple[
        Services, Held, list[int]]:
    """A node's outbox (not started) with FULL_LANES lanes full — LANE_WIDTH attempts each in
    flight, held — and BACKLOG_PER_FULL_LANE more due rows behind each, plus BACKING_OFF
    recipients' rows waiting out a backoff; the ids of the full lanes' rows."""
    svc = await services(make_config(tmp_path / "n", Signer.from_label("n"), db_url=db_url))
    held = Held([], asyncio.Event())
    svc.outbox.handlers["held"] = held
    full = await backlog(svc, [(recipient(i), f"funding:{n}:{i}")
                               for n in range(BACKLOG_PER_FULL_LANE) for i in range(FULL_LANES)])
    await backlog(svc, [(recipient(1000 + i), f"backoff:{n}")
                        for i in range(BACKING_OFF) for n in range(ROWS_PER_BACKING_OFF)],
                  failed_until_ms=now_ms() + 600_000)
    await svc.outbox._schedule()  # fills the lanes
    await begun()
    assert len(held.rows) == FULL_LANES * LANE_WIDTH
    assert {r.recipient for r in held.rows} == {recipient(i) for i in range(FULL_LANES)}
    return svc, held, full


# -- the tests ----------------------------------------------------------------------------------


async def test_one_pass_reads_a_bounded_number_of_rows_and_starts_every_row_that_has_room(
    tmp_path: Path, db_url: str, services: ServicesFactory
) -> None:
    svc, held, full = await backlogged(tmp_path, db_url, services)
    in_full_lanes = held.ids()
    # two lanes with no attempt in flight and more due rows than a page, interleaved
    fresh = await add(svc, "held", [(recipient(2000 + i % 2), f"fresh:{i}") for i in range(200)])
    # behind them by id: due urgent rows (to full lanes' recipients: urgent rows are in no
    # lane), a few rows of three more lanes with room, and a crowd of recipients with one row
    # each, more than the attempts left
    urgent = await add(svc, "held", [(recipient(i), f"dispute:{i}") for i in range(5)],
                       urgent=True)
    runnable = await add(svc, "held", [(recipient(3000 + i // 2), f"notice:{i}")
                                       for i in range(6)])
    crowd = await backlog(svc, [(recipient(5000 + i), "crowd") for i in range(1000)])
    pending = len(await svc.outbox.pending())
    assert pending > 6_000

    with reading(svc.engine) as reads:
        await svc.outbox._schedule()
    await begun()

    started = held.ids() - in_full_lanes
    assert set(urgent) <= started  # every due urgent row, whatever the backlog
    assert set(runnable) <= started  # behind thousands of rows of full lanes
    fresh_started = started & set(fresh)
    assert {r.recipient for r in held.rows if r.id in fresh_started} == {
        recipient(2000), recipient(2001)}
    assert len(fresh_started) == 2 * LANE_WIDTH  # each fresh lane filled, not past its width
    assert started & set(crowd) == set(crowd[:FREE - 2 * LANE_WIDTH - len(runnable)])  # by id
    assert not started & set(full)  # nothing more of a full lane
    assert len(started) == len(urgent) + FREE  # and every attempt left is used

    bound = most_rows_read(urgent=len(urgent), free=FREE)
    assert len(started) <= reads.rows <= bound  # it read at least the ids it started
    assert bound * 10 < pending


async def test_rows_of_lanes_with_room_keep_being_started_until_all_are_delivered(
    tmp_path: Path, db_url: str, services: ServicesFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More runnable rows than one page, over more lanes than the free attempts: the running
    scheduler starts them pass after pass, each pass's reads bounded, until every one is
    delivered, and the full lanes stay at their width all along."""
    svc, held, _ = await backlogged(tmp_path, db_url, services)
    outbox = svc.outbox
    per_pass: list[int] = []
    schedule = outbox._schedule

    async def counted() -> float | None:
        with reading(svc.engine) as reads:
            wait_s: float | None = await schedule()
        per_pass.append(reads.rows)
        return wait_s

    monkeypatch.setattr(outbox, "_schedule", counted)  # the loop calls self._schedule()
    delivered = Delivered(expected=24 * 10)
    outbox.handlers["delivered"] = delivered
    runnable = await add(svc, "delivered", [(recipient(4000 + i // 10), f"transfer:{i}")
                                            for i in range(delivered.expected)])
    assert len(runnable) > 3 * SCAN_ROWS
    pending = len(await outbox.pending())
    outbox.start()
    with contextlib.suppress(TimeoutError):  # what was delivered is asserted below
        await asyncio.wait_for(delivered.all_given.wait(), 30.0)
    await asyncio.sleep(0.1)  # anything more it would start, it has started
    await outbox.stop()

    assert sorted(r.id for r in delivered.rows) == runnable  # each delivered, once
    assert len(held.rows) == FULL_LANES * LANE_WIDTH  # no more of a full lane ever started
    assert len(per_pass) >= len(runnable) // FREE
    assert max(per_pass) <= most_rows_read(urgent=0, free=FREE) < pending // 10

