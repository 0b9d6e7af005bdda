"""The commit of an update or a receipt on SQLite: the channel's rows alone, in one call on the
direct connection (node.storage.direct, ADR 0325). The same rows as the session path writes,
the same durability settings, and a full disk still stops it with StorageUnavailable, changing
nothing, until the disk has room again."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from node.storage.codec import decode_channel
from node.storage.db import StorageUnavailable, health
from node.storage.models import Channel, OutgoingProof
from protocol import channel as ch
from tests.faults.fullfs import small_fs

from .conftest import Payer, ServicesFactory, node_with_peers


async def test_an_update_commits_its_rows_in_one_direct_call_and_a_phase_change_in_a_session(
        tmp_path: Path, services: ServicesFactory) -> None:
    svc = await node_with_peers(tmp_path, services, 1)
    sim = svc.sim  # type: ignore[attr-defined]
    assert svc.ctx.repo.direct is not None
    cid = sim.states[1].channel_id.hex()
    await svc.channels.commit(sim.states[1], new=True)  # a new channel: a session
    payer = Payer(sim)
    _, errors = await svc.channels.on_proofs(cid, [payer.pay((100, 0)) for _ in range(3)])
    assert errors == []  # the first payment received reads the payment report: a session
    direct: list[int] = []
    svc.ctx.repo.direct.on_commit.append(lambda: direct.append(1))
    sessions = svc.count_commits(direct=False)

    receipt, errors = await svc.channels.on_proofs(cid, [payer.pay((50, 2)) for _ in range(4)])
    assert errors == []
    assert receipt is not None
    assert receipt.nonce == 7
    assert (len(direct), sessions()) == (1, 0)  # one transaction, and not through a session

    # what it wrote is what a session commit writes: the state and the aggregated usage
    row = await svc.channel_row(cid)
    assert row is not None
    assert decode_channel(row.state) == svc.channels.get(cid)
    assert row.updated_ms == svc.channels.get(cid).updated_ms
    assert {(u[1], u[4], u[6]) for u in await svc.usage(cid)} == {
        ("km", 500, 7), ("message", 8, 4)}

    # a change of phase (our close) goes through a session, with its delivery to the peer
    await svc.channels.apply(cid, ch.ActionClose(sim.peer))
    assert (len(direct), sessions()) == (1, 1)
    assert [r.purpose for r in await svc.outbox.pending()] == ["close"]


async def test_the_direct_connection_is_wal_and_fsyncs_each_commit(
        tmp_path: Path, services: ServicesFactory) -> None:
    svc = await node_with_peers(tmp_path, services, 1)
    sim = svc.sim  # type: ignore[attr-defined]
    await svc.channels.commit(sim.states[1], new=True)
    cid = sim.states[1].channel_id.hex()
    payer = Payer(sim)
    for _ in range(2):
        await svc.channels.on_proofs(cid, [payer.pay((1, 0))])
    direct = svc.ctx.repo.direct
    assert direct is not None

    def modes() -> tuple[Any, ...]:
        conn = direct._conn
        assert conn is not None, "the direct connection was never opened"
        return tuple(conn.execute(f"PRAGMA {name}").fetchone()[0]
                     for name in ("journal_mode", "synchronous", "foreign_keys"))

    assert await asyncio.get_running_loop().run_in_executor(direct._pool, modes) == (
        "wal", 2, 1)  # 2: FULL


async def test_a_full_disk_under_a_direct_commit_is_storage_unavailable_and_changes_nothing(
        tmp_path: Path, services: ServicesFactory) -> None:
    with small_fs(tmp_path / "fs", size_mb=8) as fs:
        db = fs.root / "node.sqlite"
        svc = await node_with_peers(tmp_path, services, 0, db_url=f"sqlite+aiosqlite:///{db}",
                                    limits={"max_inflight": 100_000, "max_batch": 4096})
        sim = svc.sim  # type: ignore[attr-defined]
        await svc.channels.commit(sim.states[0], new=True)
        cid = sim.states[0].channel_id.hex()
        direct: list[int] = []
        assert svc.ctx.repo.direct is not None
        svc.ctx.repo.direct.on_commit.append(lambda: direct.append(1))
        await svc.channels.pay(cid, quantities=[1, 0], wait=False)
        assert direct == [1]
        held = svc.channels.get(cid)

        fs.fill()  # 4,000 proofs of ours to store: the WAL must grow
        with pytest.raises(StorageUnavailable, match="nothing was committed"):
            await svc.channels.pay(cid, quantities=[1, 1], repeat=4000, wait=False)
        assert svc.channels.get(cid) is held  # nothing signed is kept, nothing was sent
        assert not health(svc.engine).ok
        assert "full" in health(svc.engine).error
        assert direct == [1]

        fs.free()
        await svc.channels.pay(cid, quantities=[1, 1], repeat=4000, wait=False)
        assert svc.channels.get(cid).sent.nonce == 4001
        assert health(svc.engine).ok
        assert direct == [1, 1]
        await svc.close()
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            (proofs,) = conn.execute(
                f"SELECT count(*) FROM {OutgoingProof.__tablename__}").fetchone()
            (blob,) = conn.execute(f"SELECT state FROM {Channel.__tablename__}").fetchone()
        assert proofs == 4001
        assert decode_channel(blob).sent.nonce == 4001


async def test_a_writer_cancelled_while_its_direct_commit_runs_keeps_memory_as_stored(
        tmp_path: Path, services: ServicesFactory) -> None:
    """Writer.stop gives a writer still running 5 s, then cancels it. A cancel that lands while
    the writer's commit runs on the direct connection's thread does not stop the commit (the
    thread finishes it), so the state in memory must become the one stored. Otherwise it stays
    the state before, and the stop's flush of a receipt held in memory writes that state over
    the commit: the proof it stored sits beside a state that never signed it, and a restart
    signs that nonce again (a second, different proof for it)."""
    import threading
    import time

    from node.storage.models import Channel as ChannelRow
    from protocol.messages import BalanceProof

    svc = await node_with_peers(tmp_path, services, 0)
    sim = svc.sim  # type: ignore[attr-defined]
    await svc.channels.commit(sim.states[0], new=True)
    cid = sim.states[0].channel_id.hex()
    service, writer = svc.channels, svc.channels.writer
    await service.pay(cid, quantities=[1, 0], wait=False)  # nonce 1, committed

    direct = svc.ctx.repo.direct
    assert direct is not None
    write, running, gate = direct._write, threading.Event(), threading.Event()

    def held(writes: Any) -> Any:
        running.set()
        gate.wait(30)
        return write(writes)

    direct._write = held  # type: ignore[method-assign]
    paying = asyncio.ensure_future(service.pay(cid, quantities=[1, 0], wait=False))
    assert await asyncio.get_running_loop().run_in_executor(None, running.wait, 10)

    # the peer's receipt for nonce 1 lands while nonce 2 commits: held in memory (dirty)
    ((_, data),) = await svc.ctx.repo.outgoing_after(cid, 0)
    stamp = time.time_ns() // 1_000_000 + 1
    peer, _, errors = ch.receive_proofs(sim.states[1], [BalanceProof.decode(data)], (),
                                        now_ms=stamp)
    assert errors == []
    receipt = ch.step(peer, ch.ActionAcknowledge(sim.peer), now_ms=stamp).state.received.receipt
    assert receipt is not None
    await service.on_receipt(receipt)
    assert cid in writer.dirty

    stopping = asyncio.ensure_future(writer.stop())
    task = writer.tasks[cid]
    for _ in range(200):  # until the stop's 5 s are up: it cancels the writer mid-commit
        if task.cancelling():
            break
        await asyncio.sleep(0.05)
    assert task.cancelling()
    gate.set()
    await asyncio.wait_for(stopping, 30)
    paying.cancel()
    del writer.tasks[cid]  # stopped (cancelled): the fixture's own stop has no writer to wait for

    async with svc.ctx.db() as session:
        row = await session.get(ChannelRow, cid)
    assert row is not None
    nonces = [n for n, _ in await svc.ctx.repo.outgoing_after(cid, 0)]
    stored = decode_channel(row.state)
    assert stored.sent.nonce == max(nonces, default=0) == 2, (
        "the stored state is behind the proofs stored with it")
    assert stored.sent.acked_nonce == 1
    assert service.get(cid) == stored
