"""The channel as every admin route that answers a channel shows it, without per-update reads.

The answer of `POST /pay` is this detail, so every single-event payment paid for it: in a
py-spy profile of single payments at 1,000/s its four reads — the transfers, the settle
schedule, the settlements and the returned payouts, each a session of its own — were half of
the sender's event-loop time, for rows that change a few times in a channel's life. They are
read on one connection, as plain rows, and kept per channel until a commit of this node's
sessions writes any of them (SQLAlchemy's session events: rows flushed, or a bulk statement on
one of the tables, which forgets every channel's), or for at most KEEP_S.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import ORMExecuteState, Session

from node.keys import CHANNELS, CONTEXT
from node.payout_returns import render_returns
from node.storage.models import PayoutReturn, Settlement, Transfer
from node.storage.models import SettleSchedule as ScheduleRow
from node.views import channel_detail, longlived_json
from protocol import channel as ch
from protocol import schedule as sch
from protocol.types import Amount

M = TypeVar("M", Transfer, Settlement, PayoutReturn)
TABLES = (Transfer, Settlement, ScheduleRow, PayoutReturn)
"""What the detail reads besides the channel's state (which is in memory)."""
KEEP_S = 1.0
"""A bound on how long rows read here are reused if something other than this node's sessions
(which invalidate them at commit) wrote them: a reader of the database file, an operator."""
_TOUCHED, _ALL = "detail_reads.touched", "detail_reads.all"


@dataclass(slots=True)
class Rows:
    transfers: list[Transfer]
    schedule: sch.SettleSchedule
    settlements: list[Settlement]
    returns: list[PayoutReturn]
    read_at: float


@dataclass(slots=True)
class _Cache:
    rows: dict[str, Rows] = field(default_factory=dict)
    reading: dict[str, tuple[int, asyncio.Future[Rows]]] = field(default_factory=dict)
    """Per channel, the read in flight and the generation it started at."""
    generation: int = 0
    """Moves with every commit that wrote any of TABLES: a read that a commit overtook is not
    kept."""
    shown: dict[str, tuple[ch.ChannelState, Rows, dict[str, Any]]] = field(default_factory=dict)
    """Per channel, the last detail rendered and the state and rows it was rendered from: the
    payments a group commit releases together answer one rendering (at most SHOWN_KEPT)."""


_CACHES: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()


def _cache(engine: Engine) -> _Cache:
    found = _CACHES.get(engine)
    if found is None:
        found = _CACHES[engine] = _Cache()
    return found


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    for row in (*session.new, *session.dirty, *session.deleted):
        if isinstance(row, TABLES):
            session.info.setdefault(_TOUCHED, set()).add(row.channel_id)


@event.listens_for(Session, "do_orm_execute")
def _statement(state: ORMExecuteState) -> None:
    mapper = state.bind_mapper
    if not state.is_select and mapper is not None and mapper.class_ in TABLES:
        state.session.info[_ALL] = True  # a bulk UPDATE / DELETE: its channels are not named


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    touched, everything = session.info.pop(_TOUCHED, None), session.info.pop(_ALL, False)
    if not touched and not everything:
        return
    bind = session.get_bind()
    cache = _cache(bind if isinstance(bind, Engine) else bind.engine)
    cache.generation += 1
    if everything:
        cache.rows.clear()
    for cid in touched or ():
        cache.rows.pop(cid, None)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_TOUCHED, None)
    session.info.pop(_ALL, None)


async def _rows(conn: AsyncConnection, model: type[M], cid: str, *order: Any) -> list[M]:
    """A channel's rows of `model` read as plain rows (no ORM loading: the costly part of a
    small read) and made into the model's objects."""
    table = model.__table__
    result = await conn.execute(select(table).where(table.c.channel_id == cid).order_by(*order))
    return [model(**row._mapping) for row in result]


async def read(engine: AsyncEngine, cid: str) -> Rows:
    """The channel's rows, from the last read unless a commit wrote any of them since (or it
    is older than KEEP_S). Callers that miss together share one read, when no commit that
    wrote the rows came between its start and their call."""
    cache = _cache(engine.sync_engine)
    now = time.monotonic()
    kept = cache.rows.get(cid)
    if kept is not None and now - kept.read_at < KEEP_S:
        return kept
    pending = cache.reading.get(cid)
    if pending is None or pending[0] != cache.generation:
        task = asyncio.ensure_future(_read(engine, cid, cache, now))
        pending = cache.reading[cid] = (cache.generation, task)
        task.add_done_callback(lambda done: _forget(cache, cid, done))
    return await asyncio.shield(pending[1])


def _forget(cache: _Cache, cid: str, task: asyncio.Future[Rows]) -> None:
    if cid in cache.reading and cache.reading[cid][1] is task:
        del cache.reading[cid]


async def _read(engine: AsyncEngine, cid: str, cache: _Cache, now: float) -> Rows:
    generation = cache.generation
    async with engine.connect() as conn:
        transfers = await _rows(conn, Transfer, cid, Transfer.created_ms)
        schedule = (await conn.execute(select(ScheduleRow.every_ms, ScheduleRow.threshold)
                                       .where(ScheduleRow.channel_id == cid))).first()
        settlements = await _rows(conn, Settlement, cid, Settlement.seq, Settlement.party)
        returns = await _rows(conn, PayoutReturn, cid, PayoutReturn.returned_ms)
    rows = Rows(transfers, sch.NEVER if schedule is None else sch.SettleSchedule(
        schedule.every_ms, Amount(schedule.threshold)), settlements, returns, now)
    if cache.generation == generation:
        cache.rows[cid] = rows
    return rows


def render(state: ch.ChannelState, rows: Rows) -> dict[str, Any]:
    return {**channel_detail(state, rows.transfers),
            **longlived_json(state, rows.schedule, rows.settlements),
            "returned_payouts": render_returns(state, rows.returns)}


SHOWN_KEPT = 256


async def detail(request: web.Request, cid: str) -> dict[str, Any]:
    """The detail, its schedule and settlements, and the payouts the bank returned."""
    state = request.app[CHANNELS].get(cid)
    engine = request.app[CONTEXT].engine
    rows = await read(engine, cid)
    shown = _cache(engine.sync_engine).shown
    last = shown.get(cid)
    if last is not None and last[0] is state and last[1] is rows:
        return dict(last[2])  # the same immutable state and rows: the same detail
    rendered = render(state, rows)
    shown.pop(cid, None)
    shown[cid] = (state, rows, rendered)
    if len(shown) > SHOWN_KEPT:
        del shown[next(iter(shown))]
    return dict(rendered)
