"""The admin detail's rows (node.api.detail_reads): read once and reused, and read again after
any commit of the node that writes one of them — rows added, changed, or a bulk statement."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import insert, update

from node.api import detail_reads
from node.keys import CHANNELS, CONTEXT
from node.storage.models import PayoutReturn, Settlement, Transfer
from protocol import schedule as sch
from protocol.crypto import Signer
from protocol.types import Amount

from .conftest import Payer, ServicesFactory, make_config, open_sim


def _transfer(cid: str, key: str) -> Transfer:
    return Transfer(idempotency_key=key, channel_id=cid, purpose="deposit", party=0,
                    amount_minor=100, currency="EUR", reference="R", creditor="{}",
                    status="pending", reason="", end_to_end_id="", created_ms=1, updated_ms=1)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_rows_are_kept_until_a_commit_writes_them(
        tmp_path: Path, db_url: str, services: ServicesFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detail_reads, "KEEP_S", 3600.0)  # only commits may make it read again
    sim = open_sim()
    svc = await services(make_config(tmp_path / "n", Signer.from_label("peer"), db_url=db_url))
    cid = sim.terms.channel_id.hex()
    other = "ab" * 32
    await svc.channels.commit(sim.states[1], new=True)
    engine = svc.engine

    first = await detail_reads.read(engine, cid)
    assert (first.transfers, first.schedule, first.settlements, first.returns) == (
        [], sch.NEVER, [], [])
    assert await detail_reads.read(engine, cid) is first  # nothing written: no read

    async with svc.ctx.repo.transaction() as session:  # another channel's row: ours is kept
        session.add(_transfer(other, "k-other"))
    assert await detail_reads.read(engine, cid) is first

    async with svc.ctx.repo.transaction() as session:
        session.add(_transfer(cid, "k1"))
    second = await detail_reads.read(engine, cid)
    assert [t.status for t in second.transfers] == ["pending"]

    async with svc.ctx.repo.transaction() as session:  # a bulk UPDATE names no channel
        await session.execute(update(Transfer).where(Transfer.idempotency_key == "k1")
                              .values(status="booked"))
    third = await detail_reads.read(engine, cid)
    assert [t.status for t in third.transfers] == ["booked"]

    await svc.channels.checkpoints.set_schedule(cid, sch.SettleSchedule(86_400_000, Amount(5)))
    assert (await detail_reads.read(engine, cid)).schedule == sch.SettleSchedule(
        86_400_000, Amount(5))
    await svc.channels.checkpoints.set_schedule(cid, sch.SettleSchedule(3_600_000, Amount(0)))
    assert (await detail_reads.read(engine, cid)).schedule.every_ms == 3_600_000  # changed row

    async with svc.ctx.repo.transaction() as session:
        session.add(Settlement(channel_id=cid, seq=1, party=0, amount_minor=5, reference="S",
                               signed_ms=1))
        session.add(PayoutReturn(channel_id=cid, reference="P", party="x", amount_minor=5,
                                 reason="AC04", returned_ms=1, notice=b""))
    fourth = await detail_reads.read(engine, cid)
    assert [(s.seq, s.amount_minor) for s in fourth.settlements] == [(1, 5)]
    assert [r.reason for r in fourth.returns] == ["AC04"]

    async with svc.ctx.repo.transaction() as session:  # rolled back: nothing to forget
        session.add(_transfer(cid, "k2"))
        await session.flush()
        await session.rollback()
    assert await detail_reads.read(engine, cid) is fourth


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_write_outside_the_nodes_sessions_is_seen_after_keep_s(
        tmp_path: Path, db_url: str, services: ServicesFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sim = open_sim()
    svc = await services(make_config(tmp_path / "n", Signer.from_label("peer"), db_url=db_url))
    cid = sim.terms.channel_id.hex()
    await svc.channels.commit(sim.states[1], new=True)
    monkeypatch.setattr(detail_reads, "KEEP_S", 3600.0)
    assert (await detail_reads.read(svc.engine, cid)).settlements == []
    async with svc.engine.begin() as conn:  # plain SQL: no session event sees it
        await conn.execute(insert(Settlement.__table__).values(
            channel_id=cid, seq=1, party=0, amount_minor=5, reference="S", signed_ms=1))
    assert (await detail_reads.read(svc.engine, cid)).settlements == []  # kept
    monkeypatch.setattr(detail_reads, "KEEP_S", 0.0)
    assert len((await detail_reads.read(svc.engine, cid)).settlements) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_callers_that_miss_together_share_a_read_never_one_from_before_a_commit(
        tmp_path: Path, db_url: str, services: ServicesFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detail_reads, "KEEP_S", 3600.0)
    sim = open_sim()
    svc = await services(make_config(tmp_path / "n", Signer.from_label("peer"), db_url=db_url))
    cid = sim.terms.channel_id.hex()
    await svc.channels.commit(sim.states[1], new=True)
    first, second = await asyncio.gather(*(detail_reads.read(svc.engine, cid)
                                           for _ in range(2)))
    assert first is second

    detail_reads._cache(svc.engine.sync_engine).rows.clear()
    early = asyncio.create_task(detail_reads.read(svc.engine, cid))
    await asyncio.sleep(0)  # its read is in flight
    async with svc.ctx.repo.transaction() as session:
        session.add(_transfer(cid, "k1"))
    late = await detail_reads.read(svc.engine, cid)  # after the commit: never the early read
    assert [t.idempotency_key for t in late.transfers] == ["k1"]
    await early


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_one_state_is_rendered_once_and_a_new_state_again(
        tmp_path: Path, db_url: str, services: ServicesFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The payments one group commit releases answer the same state: one rendering for all."""
    monkeypatch.setattr(detail_reads, "KEEP_S", 3600.0)
    sim = open_sim()
    svc = await services(make_config(tmp_path / "n", sim.peer, db_url=db_url))
    cid = sim.terms.channel_id.hex()
    await svc.channels.commit(sim.states[1], new=True)
    request = SimpleNamespace(app={CHANNELS: svc.channels, CONTEXT: svc.ctx})
    rendered: list[int] = []
    render = detail_reads.render

    def counted(state: object, rows: object) -> dict[str, object]:
        rendered.append(1)
        return render(state, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(detail_reads, "render", counted)
    answers = await asyncio.gather(*(detail_reads.detail(request, cid)  # type: ignore[arg-type]
                                     for _ in range(5)))
    assert len(rendered) == 1
    assert all(a == answers[0] and a is not answers[0] for a in answers[1:])

    await svc.channels.on_proofs(cid, [Payer(sim).pay((100, 0))])  # a new state
    after = await detail_reads.detail(request, cid)  # type: ignore[arg-type]
    assert len(rendered) == 2
    assert after != answers[0]
    assert after["nonce_received"] == 1
