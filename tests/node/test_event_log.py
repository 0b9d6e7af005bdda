"""node.events on real SQLite and PostgreSQL: events are appended in the commit's transaction (a
rolled-back commit leaves none), ids stay unique and ordered under concurrent commits, payments
received before a crash are reported once after it, and pruning never reuses an id."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, update

from node.events import now
from node.storage.models import Event, WebhookEndpoint

from .conftest import Payer, Services, ServicesFactory, make_config, open_sim

HOUR_MS = 3_600_000


async def peer_node(services: ServicesFactory, tmp_path: Path, db_url: str,
                    interval_ms: int = HOUR_MS, salts: int = 1
                    ) -> tuple[Services, list[Payer], list[str]]:
    sims = [open_sim(salt=bytes([i]) * 16) for i in range(salts)]
    config = make_config(tmp_path / "peer", sims[0].peer, db_url=db_url,
                         limits={"payment_event_interval_ms": interval_ms})
    svc = await services(config)
    cids = []
    for sim in sims:
        await svc.channels.commit(sim.states[1], new=True)
        cids.append(sim.states[1].channel_id.hex())
    return svc, [Payer(sim) for sim in sims], cids


async def types(svc: Services, after: int = 0) -> list[str]:
    return [e.type for e in await svc.ctx.events.page(after, 500)]


async def test_a_new_channel_is_logged_with_its_commit(services: ServicesFactory,
                                                       tmp_path: Path, db_url: str) -> None:
    svc, _, (cid,) = await peer_node(services, tmp_path, db_url)
    rows = await svc.ctx.events.page(0, 500)
    assert [r.type for r in rows] == ["channel.proposed", "deposit.confirmed",
                                      "deposit.confirmed", "channel.opened"]
    assert {r.channel_id for r in rows} == {cid}
    assert [r.id for r in rows] == sorted({r.id for r in rows})


async def test_a_rolled_back_commit_leaves_no_event(services: ServicesFactory, tmp_path: Path,
                                                    db_url: str) -> None:
    svc, _, (cid,) = await peer_node(services, tmp_path, db_url)
    before = await types(svc)
    woken = svc.ctx.events.generation
    state = svc.channels.states.pop(cid)  # as if new: the INSERT of the channel row fails
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await svc.channels.commit(state, new=True)
    assert await types(svc) == before
    assert svc.ctx.events.generation == woken  # nobody was woken for it


async def test_payments_received_before_a_crash_are_reported_once_after_it(
        services: ServicesFactory, tmp_path: Path, db_url: str) -> None:
    svc, (payer,), (cid,) = await peer_node(services, tmp_path, db_url)
    receipt, errors = await svc.channels.on_proofs(cid, [payer.pay((1_000, 0))])
    assert receipt is not None
    assert errors == []
    (first,) = [e for e in await svc.ctx.events.page(0, 500) if e.type == "payment.received"]
    await svc.channels.on_proofs(cid, [payer.pay((1_000, 0)) for _ in range(9)])
    assert (await types(svc)).count("payment.received") == 1  # inside the hour: held
    # "crash": a new set of services on the same database, as a restarted daemon
    again = await services(svc.ctx.config)
    await again.channels.load()
    written = await again.ctx.events.flush_payments(lambda: again.channels.states,
                                                    again.channels.lock, all_=True)
    assert written == 0  # the hour has not passed: still held, and not lost
    again.ctx.events.interval_ms = 0
    written = await again.ctx.events.flush_payments(lambda: again.channels.states,
                                                    again.channels.lock, all_=True)
    assert written == 1
    assert await again.ctx.events.flush_payments(lambda: again.channels.states,
                                                 again.channels.lock, all_=True) == 0
    got = [e for e in await again.ctx.events.page(0, 500) if e.type == "payment.received"]
    assert got[0].id == first.id
    assert [json.loads(e.data)["updates"] for e in got] == [1, 9]


async def test_a_restart_reads_the_reports_in_one_query_not_one_per_channel(
        services: ServicesFactory, tmp_path: Path, db_url: str) -> None:
    """10,000 channels after a restart were 10,000 sessions before the first update was
    served (issue 13): the reports are read at once and only a channel with something new
    takes its lock and a transaction."""
    svc, payers, cids = await peer_node(services, tmp_path, db_url, salts=6)
    for cid, payer in zip(cids, payers, strict=True):
        await svc.channels.on_proofs(cid, [payer.pay((1_000, 0))])  # each reported at once
    await svc.channels.on_proofs(cids[2], [payers[2].pay((1_000, 0)) for _ in range(3)])
    again = await services(svc.ctx.config)
    await again.channels.load()
    again.ctx.events.interval_ms = 0
    reads: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "payment_report" in statement:
            reads.append(statement)

    engine = again.ctx.engine.sync_engine
    sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        written = await again.ctx.events.flush_payments(lambda: again.channels.states,
                                                        again.channels.lock, all_=True)
    finally:
        sa_event.remove(engine, "before_cursor_execute", seen)
    assert written == 1  # the one channel paid since its report
    assert len(reads) <= 2, reads  # all reports at once, and the one rewritten
    got = [json.loads(e.data) for e in await again.ctx.events.page(0, 500)
           if e.type == "payment.received" and e.channel_id == cids[2]]
    assert [g["updates"] for g in got] == [1, 3]


async def test_concurrent_commits_get_unique_ordered_ids(services: ServicesFactory,
                                                         tmp_path: Path, db_url: str) -> None:
    svc, payers, cids = await peer_node(services, tmp_path, db_url, interval_ms=1, salts=4)
    start = await svc.ctx.events.last_id()

    async def pay(payer: Payer, cid: str) -> None:
        for _ in range(15):
            await svc.channels.on_proofs(cid, [payer.pay((1_000, 0))])
            await asyncio.sleep(0.002)

    seen: list[int] = []

    async def read() -> None:  # a reader that pages while the writers commit
        after = start
        for _ in range(200):
            rows = await svc.ctx.events.page(after, 500)
            seen.extend(r.id for r in rows)
            after = rows[-1].id if rows else after
            await asyncio.sleep(0.005)

    await asyncio.gather(read(), *(pay(p, c) for p, c in zip(payers, cids, strict=True)))
    rows = await svc.ctx.events.page(start, 500)
    ids = [r.id for r in rows]
    assert ids == sorted(set(ids))
    assert set(seen) <= set(ids)
    assert seen == sorted(set(seen))  # the reader never saw an id below one it had seen


async def test_pruning_keeps_what_a_receiver_is_owed_and_the_newest(
        services: ServicesFactory, tmp_path: Path, db_url: str) -> None:
    svc, _, _ = await peer_node(services, tmp_path, db_url, salts=2)
    log = svc.ctx.events
    ids = [e.id for e in await log.page(0, 500)]
    async with svc.ctx.repo.transaction() as session:
        await session.execute(update(Event).values(created_ms=1))  # all very old
        session.add(WebhookEndpoint(url="http://127.0.0.1:9/", events="*", cursor=ids[2],
                                    created_ms=1))
    assert await log.prune(now()) == 3  # up to the receiver's cursor
    async with svc.ctx.repo.transaction() as session:
        await session.execute(update(WebhookEndpoint).values(cursor=ids[-1]))
    assert await log.prune(now()) == len(ids) - 4  # all but the newest
    async with svc.ctx.db() as session:
        assert await session.scalar(select(func.count()).select_from(Event)) == 1
    # a new event after pruning still gets a higher id than any handed out
    sim = open_sim(salt=bytes([9]) * 16)
    await svc.channels.commit(sim.states[1], new=True)
    assert min(e.id for e in await log.page(ids[-1], 500)) > ids[-1]
