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
