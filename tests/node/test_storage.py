"""Storage against real SQLite and PostgreSQL: migrations, persist-then-act, bounded growth.

Every test runs once per backend (``db_url``). The services are the node's own (ChannelService,
EscrowService, Outbox) over a real engine; a "restart" is a second set of services on a new
engine over the same database.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text, update
from sqlalchemy.exc import DBAPIError

from node.outbox import Delivery
from node.storage import db as storage_db
from node.storage.codec import CorruptState
from node.storage.db import MIGRATIONS, make_engine, migrate
from node.storage.models import Base, Channel, Escrow, OutgoingProof, Peer, Usage
from node.storage.models import Outbox as OutboxRow
from node.storage.repository import BUCKET_MS
from protocol import arbiter as arb
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import EMPTY_SIGNATURE, CallbackAddress, ChannelRegistration, Receipt
from protocol.simulation import Simulation

from .conftest import KM, MSG, Payer, Services, ServicesFactory, free_port, make_config, open_sim

TABLES = {
    "alembic_version",
    "channel",
    "cursor",
    "escrow",
    "event",
    "held_proposal",
    "outbox",
    "outgoing_proof",
    "payment_report",
    "payout_return",
    "peer",
    "settle_schedule",  # 0007: long-lived channels
    "settlement",
    "topup",
    "transfer",
    "unapplied_credit",
    "usage",
    "usage_event",
    "webhook_endpoint",
}
DEAD_URL = f"http://127.0.0.1:{free_port()}"
"""A peer URL nothing listens on: streams to it keep reconnecting, harmlessly."""


def head_revision() -> str:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_the_start_up_head_is_alembics_head(tmp_path: Path) -> None:
    """`migrate` skips alembic when the database is at the head it reads from the files: a
    misread head would skip a migration, so it must be alembic's own, and a fork refused."""
    assert storage_db.head_revision() == head_revision()
    for name in ("a.py", "b.py"):  # two migrations on one parent: two heads
        (tmp_path / name).write_text(f'revision = "{name[0]}"\ndown_revision = "0009"\n')
    with pytest.raises(RuntimeError, match="2 heads"):
        storage_db.head_revision(tmp_path)


async def add_peer(
    svc: Services, signer: Signer, *, role: str = "node", url: str = DEAD_URL
) -> None:
    async with svc.ctx.db() as session, session.begin():
        session.add(
            Peer(node_id=signer.node_id.hex(), url=url, name=role, role=role, info="{}", added_ms=1)
        )


# -- the engine ------------------------------------------------------------------------------------


async def test_every_pooled_sqlite_connection_is_wal_and_fsyncs_each_commit(tmp_path: Path
                                                                            ) -> None:
    """The pool's 10 + 10 connections (issue 13) each carry WAL and synchronous=FULL, and
    concurrent writers on them all commit (they take SQLite's lock in turn, none is lost)."""
    from node.storage.db import POOL_OVERFLOW, POOL_SIZE

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.sqlite'}")
    held = POOL_SIZE + POOL_OVERFLOW
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
        conns = [await engine.connect() for _ in range(held)]
        try:
            modes = {((await c.execute(text("PRAGMA journal_mode"))).scalar_one(),
                      (await c.execute(text("PRAGMA synchronous"))).scalar_one()) for c in conns}

            async def write(c: Any, n: int) -> None:
                await c.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
                await c.commit()

            await asyncio.gather(*(write(c, n) for n, c in enumerate(conns)))
        finally:
            for c in conns:
                await c.close()
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT n FROM t ORDER BY n"))).scalars().all()
    finally:
        await engine.dispose()
    assert modes == {("wal", 2)}  # 2: FULL
    assert list(rows) == list(range(held))


# -- migrations ----------------------------------------------------------------------------------


async def test_migrations_apply_on_an_empty_database_and_are_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            before = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert before == set()

        await migrate(engine)
        await migrate(engine)  # a second start on a migrated database changes nothing

        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            # the migrated schema is exactly what the models declare (no drift either way)
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
            pks = await conn.run_sync(
                lambda c: {
                    t: tuple(inspect(c).get_pk_constraint(t)["constrained_columns"])
                    for t in ("usage", "outgoing_proof")
                }
            )
        assert tables == TABLES
        assert version == [(head_revision(),)]
        assert diff == []
        assert pks == {
            "usage": ("channel_id", "sender", "unit", "reference", "bucket_ms"),
            "outgoing_proof": ("channel_id", "nonce"),
        }
    finally:
        await engine.dispose()


# -- channel state ---------------------------------------------------------------------------


def _states_at_every_phase() -> list[ch.ChannelState]:
    """States the node holding key ``peer`` can have, one channel each (distinct salts)."""
    out: list[ch.ChannelState] = []

    # we opened (our key is the opener here): PROPOSED
    mine = Simulation.create(
        tariff=(KM, MSG),
        opener_deposit=10_000,
        peer_deposit=5_000,
        labels=("peer", "opener", "arbiter"),
        salt=b"\x01" * 16,
    )
    out.append(ch.propose(mine.terms, mine.opener, now_ms=1).state)

    # we accepted, not funded yet: ACCEPTED
    acc = Simulation.create(tariff=(KM,), opener_deposit=10_000, salt=b"\x02" * 16)
    proposal = next(
        e.proposal
        for e in ch.propose(acc.terms, acc.opener, now_ms=1).effects
        if isinstance(e, ch.SendProposal)
    )
    out.append(ch.accept(proposal, acc.peer, now_ms=2).state)

    # OPEN with traffic both ways, receipts and unacknowledged proofs
    sim = open_sim(salt=b"\x03" * 16)
    sim.pay(0, (12_500, 3), reference="SHIPMENT-4711")
    sim.pay(1, (0, 1), direct=250, reference="RETURN-1")
    sim.pay(0, (1_000, 0), direct=7, acknowledge=False)
    out.append(sim.states[1])

    # CLOSING: the peer asked to close, we have not co-signed
    closing = open_sim(salt=b"\x04" * 16)
    closing.pay(0, (2_000, 0))
    first = ch.step(closing.states[0], ch.ActionClose(closing.opener), now_ms=closing.tick())
    request = next(e.close for e in first.effects if isinstance(e, ch.SendClose))
    out.append(ch.step(closing.states[1], ch.ReceiveClose(request), now_ms=closing.tick()).state)

    # CLOSED, then SETTLED
    closed = open_sim(salt=b"\x05" * 16)
    closed.pay(0, (5_000, 2), reference="A")
    closed.close()
    out.append(closed.states[1])
    settled = open_sim(salt=b"\x06" * 16)
    settled.pay(1, (0, 9))
    settled.settle(settled.close(initiator=1))
    out.append(settled.states[1])

    # DISPUTED: we closed unilaterally
    disputed = open_sim(salt=b"\x07" * 16)
    disputed.pay(0, (1, 1))
    out.append(
        ch.step(
            disputed.states[1], ch.ActionForceClose(disputed.peer), now_ms=disputed.tick()
        ).state
    )
    return out


async def test_channel_state_round_trips_through_commit_and_load(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    config = make_config(tmp_path / "peer", sim.peer, db_url=db_url)
    svc = await services(config)
    await add_peer(svc, sim.opener)
    states = _states_at_every_phase()
    assert {s.phase for s in states} == set(ch.Phase)

    for state in states:
        await svc.channels.commit(state, new=True)
    # an update of an existing row (not new): the OPEN channel moves on
    open_state = next(s for s in states if s.phase is ch.Phase.OPEN)
    payer = Payer(sim)  # a fresh channel: feed one proof through the machine, then commit
    await svc.channels.commit(sim.states[1], new=True)
    proof = payer.pay((300, 1), reference="LATER")
    advanced = ch.step(sim.states[1], ch.ReceiveProof(proof), now_ms=payer.now_ms).state
    advanced = ch.step(advanced, ch.ActionAcknowledge(sim.peer), now_ms=payer.now_ms).state
    await svc.channels.commit(advanced)
    expected = {s.channel_id.hex(): s for s in [*states, advanced]}
    assert len(expected) == len(states) + 1

    # restart: a new engine on the same database
    await svc.close()
    again = await services(config)
    await again.channels.load()
    assert again.channels.states == expected
    async with again.ctx.db() as session:
        rows = {r.id: (r.phase, r.peer_id) for r in (await session.scalars(select(Channel)))}
    assert rows == {
        cid: (s.phase.value, s.terms.parties()[s.them].hex()) for cid, s in expected.items()
    }
    # at load no state is decoded yet (ADR 0316); asking for one decodes it
    fresh = await services(config)
    await fresh.channels.load()
    assert fresh.channels.states.decoded() == 0
    assert fresh.channels.states.phase(open_state.channel_id.hex()) is ch.Phase.OPEN
    assert fresh.channels.states[open_state.channel_id.hex()] == open_state
    assert fresh.channels.states.decoded() == 1
    # a stream starts at load only where the peer lacks proofs of ours (ADR 0316): the OPEN
    # channel's proofs were all acknowledged (none stored in flight), so it waits for a payment
    assert open_state.channel_id.hex() not in again.channels.streams
    assert advanced.channel_id.hex() not in again.channels.streams  # we never sent on it


async def test_a_corrupt_state_row_fails_loudly_at_load(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    config = make_config(tmp_path / "peer", sim.peer, db_url=db_url)
    svc = await services(config)
    await svc.channels.commit(sim.states[1], new=True)
    cid = sim.states[1].channel_id.hex()
    row = await svc.channel_row(cid)
    assert row is not None
    async with svc.ctx.db() as session, session.begin():
        await session.execute(
            update(Channel).where(Channel.id == cid).values(state=row.state[: len(row.state) // 2])
        )
    again = await services(config)
    with pytest.raises(CorruptState):
        await again.channels.load()


# -- usage: aggregated, bounded ----------------------------------------------------------------


async def test_usage_of_10000_proofs_is_a_bounded_number_of_aggregated_rows(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    config = make_config(tmp_path / "peer", sim.peer, db_url=db_url)
    svc = await services(config)
    await svc.channels.commit(sim.states[1], new=True)
    cid = sim.states[1].channel_id.hex()

    start = sim.now_ms - sim.now_ms % BUCKET_MS + BUCKET_MS  # two whole hours ahead
    payer = Payer(sim)
    references = ["SHIPMENT-1", "SHIPMENT-2", "SHIPMENT-3", ""]
    expected: defaultdict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    proofs = []
    for i in range(10_000):
        hour = 0 if i < 5_000 else 1
        ref = references[i % 4]
        km, msgs, direct = 100 + i % 7, i % 3, (5 if i % 5 == 0 else 0)
        proofs.append(
            payer.pay((km, msgs), direct=direct, reference=ref, at_ms=start + hour * BUCKET_MS + i)
        )
        bucket = start + hour * BUCKET_MS
        for unit, q in (("km", km), ("message", msgs)):
            if q:  # the opener (party 0) sends; a row per unit that moved
                row = expected[(0, unit, ref, bucket)]
                row[0] += q
                row[2] += 1
        if direct:
            row = expected[(0, "amount", ref, bucket)]
            row[1] += direct
            row[2] += 1

    for n in range(0, 10_000, 1_000):
        receipt, errors = await svc.channels.on_proofs(cid, proofs[n : n + 1_000])
        assert errors == []
        assert receipt is not None
        assert receipt.nonce == n + 1_000

    rows = await svc.usage(cid)
    # 3 units (km, message, plain amount) × 4 references × 2 hours, whatever the update count
    assert len(rows) == len(expected) == 24
    assert await svc.count(Usage) == 24
    assert {r[:4]: (r[4], r[6]) for r in rows} == {k: (v[0], v[2]) for k, v in expected.items()}
    # amounts per row add up to exactly what the proofs promise in total
    final = svc.channels.get(cid).received
    assert final.nonce == 10_000
    assert final.amount == proofs[-1].amount
    assert sum(r[5] for r in rows) == final.amount
    by_unit = Counter[str]()
    for r in rows:
        by_unit[r[1]] += r[4]
    assert (by_unit["km"], by_unit["message"]) == final.quantities
    assert sum(v[1] for v in expected.values()) == final.direct_amount
    # one state row per channel and nothing kept per proof on the receiving side
    assert await svc.count(Channel) == 1
    assert await svc.count(OutgoingProof) == 0


# -- our outgoing proofs: kept until a receipt covers them --------------------------------------


async def test_outgoing_proofs_are_kept_until_a_receipt_covers_them(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    # a window large enough that pay(wait=False) never waits for receipts; small batches
    config = make_config(
        tmp_path / "opener",
        sim.opener,
        db_url=db_url,
        limits={"max_inflight": 100_000, "max_batch": 128},
    )
    svc = await services(config)
    await add_peer(svc, sim.peer)
    state = sim.states[0]
    cid = state.channel_id.hex()
    await svc.channels.commit(state, new=True)
    commits = svc.count_commits()

    await svc.channels.pay(cid, quantities=[100, 1], reference="SHIPMENT-9", repeat=300, wait=False)
    assert commits() == 3  # 128 + 128 + 44: one transaction per batch
    async with svc.ctx.db() as session:
        stored = list(
            (
                await session.execute(
                    select(OutgoingProof.nonce, OutgoingProof.proof)
                    .where(OutgoingProof.channel_id == cid)
                    .order_by(OutgoingProof.nonce)
                )
            ).all()
        )
    assert [n for n, _ in stored] == list(range(1, 301))
    assert svc.channels.get(cid).sent.nonce == 300
    assert await svc.channels.streams.unacked(cid) == [(n, p) for n, p in stored]
    # the sender's usage is aggregated too
    assert [(r[1], r[4], r[6]) for r in await svc.usage(cid)] == [
        ("km", 30_000, 300),
        ("message", 300, 300),
    ]

    from protocol.messages import BalanceProof

    def receipt(nonce: int, signer: Signer = sim.peer) -> Receipt:
        amount = BalanceProof.decode(stored[nonce - 1][1]).amount
        return Receipt(
            state.channel_id,
            sim.peer.node_id,
            nonce,
            amount,  # type: ignore[arg-type]
            EMPTY_SIGNATURE,
        ).signed_by(signer)

    # a forged receipt prunes nothing
    with pytest.raises(RemoteProtocolError) as err:
        await svc.channels.on_receipt(receipt(300, Signer.from_label("mallory")))
    assert err.value.code is ErrorCode.BAD_SIGNATURE
    assert await svc.count(OutgoingProof) == 300

    await svc.channels.on_receipt(receipt(120))
    # held in memory at once (what the window and waiters use), written by the next flush
    assert svc.channels.get(cid).sent.acked_nonce == 120
    await svc.channels.writer.flush()
    assert await svc.count(OutgoingProof) == 180
    assert svc.channels.get(cid).sent.acked_nonce == 120
    assert [n for n, _ in await svc.channels.streams.unacked(cid)] == list(
        range(121, 301)
    )
    await svc.channels.on_receipt(receipt(50))  # an older receipt changes nothing
    assert await svc.count(OutgoingProof) == 180

    # the acknowledgement survives a restart, and so do the unacknowledged proofs
    await svc.close()
    again = await services(config)
    await again.channels.load()
    assert cid in again.channels.streams  # the peer lacks proofs of ours: resumed at load
    assert again.channels.get(cid).sent.acked_nonce == 120
    assert [n for n, _ in await again.channels.streams.unacked(cid)] == list(
        range(121, 301)
    )
    await again.channels.on_receipt(receipt(300))
    await again.channels.writer.flush()
    assert await again.count(OutgoingProof) == 0
    assert await again.channels.streams.unacked(cid) == []


# -- escrow (arbiter mode) ----------------------------------------------------------------------


async def test_escrow_state_round_trips_with_its_outbox(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    sim.pay(0, (10_000, 4), reference="X")
    sim.pay(1, (0, 2), direct=1_000)
    assert sim.escrow is not None
    config = make_config(tmp_path / "arbiter", sim.arbiter, db_url=db_url, role="arbiter")
    svc = await services(config)
    cid = sim.escrow.channel_id.hex()
    for party, url in ((sim.opener, "http://opener.test/"), (sim.peer, "http://peer.test")):
        callback = CallbackAddress(sim.escrow.channel_id, party.node_id, url, 1_000,
                                   EMPTY_SIGNATURE).signed_by(party)
        await svc.escrow.on_register(ChannelRegistration(sim.escrow.proposal,
                                                         sim.escrow.acceptance, callback))
    assert await svc.count(Escrow) == 1

    # funded (as the simulation's arbiter saw it), then the cooperative close decides payouts
    await svc.escrow.commit(sim.escrow)
    decided = sim.close()
    assert any(isinstance(e, arb.SubmitPayout) for e in decided.effects)
    await svc.escrow.commit(decided.state, decided.effects)
    outbox_before = [(r.kind, r.target, r.payload) for r in await svc.outbox.pending()]
    assert [k for k, _, _ in outbox_before].count("payout") == sum(
        isinstance(e, arb.SubmitPayout) for e in decided.effects
    )

    await svc.close()
    again = await services(config)
    await again.escrow.load()
    assert again.escrow.states == {cid: decided.state}
    assert again.escrow.urls[cid] == ["http://opener.test", "http://peer.test"]
    assert set(again.escrow.references.values()) == {(cid, 0), (cid, 1)}
    assert [(r.kind, r.target, r.payload) for r in await again.outbox.pending()] == outbox_before
    async with again.ctx.db() as session:
        row = await session.get(Escrow, cid)
    assert row is not None
    assert row.phase == decided.state.phase.value


# -- the outbox ---------------------------------------------------------------------------------


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_outbox_rows_survive_a_restart_and_are_carried_out_once(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    config = make_config(tmp_path / "peer", sim.peer, db_url=db_url)
    svc = await services(config)
    state = sim.states[1]
    cid = state.channel_id.hex()
    deliveries = [
        Delivery("send", "http://a.test/p2p/close", b"\x01first", "aa" * 32, "close"),
        Delivery("send", "http://b.test/p2p/evidence", b"\x02second", "bb" * 32, "evidence"),
    ]
    effects = [(d.kind, d.target, d.payload) for d in deliveries]
    await svc.channels.commit(state, new=True, outbox=deliveries)
    assert [(r.kind, r.target, r.payload) for r in await svc.outbox.pending()] == effects
    # the worker never ran: a crash now must not lose the effects
    await svc.close()

    again = await services(config)
    pending = await again.outbox.pending()
    assert [(r.kind, r.target, r.payload, r.done, r.channel_id) for r in pending] == [
        (*e, False, cid) for e in effects
    ]

    again.failing = True  # the peer is down: rows stay, attempts and the error are recorded
    again.outbox.start()

    async def tried_twice() -> bool:
        rows = await again.outbox.pending()
        return len(rows) == 2 and all(r.attempts >= 2 for r in rows)

    await _until(tried_twice)
    assert {r.last_error for r in await again.outbox.pending()} == {"peer unreachable"}
    assert again.handled == []

    again.failing = False
    again.outbox.kick()

    async def drained() -> bool:
        return not await again.outbox.pending()

    await _until(drained)
    assert [(r.target, r.payload) for r in again.handled] == [(t, p) for _, t, p in effects]
    await again.outbox.stop()

    third = await services(config)  # done rows are not carried out again
    assert await third.outbox.pending() == []
    assert await third.count(OutboxRow) == 2


# -- receiving proofs: one transaction per batch, idempotent, persist before acknowledging ------


async def test_a_batch_of_proofs_is_one_transaction_and_a_resent_nonce_gets_the_same_receipt(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    sim = open_sim()
    config = make_config(tmp_path / "peer", sim.peer, db_url=db_url)
    svc = await services(config)
    await svc.channels.commit(sim.states[1], new=True)
    cid = sim.states[1].channel_id.hex()
    payer = Payer(sim)
    proofs = [payer.pay((250, 1), reference=f"R{i % 5}") for i in range(200)]
    commits = svc.count_commits()

    receipt, errors = await svc.channels.on_proofs(cid, proofs)
    assert errors == []
    assert commits() == 1
    assert receipt is not None
    assert (receipt.nonce, receipt.amount) == (200, proofs[-1].amount)
    receipt.verify_signature(sim.peer.node_id)
    usage = await svc.usage(cid)

    # the receipt was committed with the proofs it acknowledges, before it was returned
    reader = await services(config)
    await reader.channels.load()
    held = reader.channels.get(cid).received
    assert (held.nonce, held.proof, held.receipt) == (200, proofs[-1], receipt)

    # resending the latest proof: accepted again, the same receipt, nothing written
    again, errors = await svc.channels.on_proofs(cid, [proofs[-1]])
    assert (again, errors) == (receipt, [])
    # an older one, or the whole batch (a stream reconnecting): still the same cumulative
    # receipt and no write (whether older nonces are also reported as NONCE_REPLAY is the
    # peer API suite's business)
    for resend in ([proofs[10]], proofs):
        again, _ = await svc.channels.on_proofs(cid, resend)
        assert again == receipt
    assert commits() == 1
    assert await svc.usage(cid) == usage

    # a batch with a forged proof in it: the good ones before it commit, once, the rest refused
    more = [payer.pay((1, 0)) for _ in range(10)]
    forged = dataclasses.replace(payer.pay((1, 0)), signature=EMPTY_SIGNATURE).signed_by(
        Signer.from_label("mallory")
    )
    after = payer.pay((1, 0))
    receipt2, errors = await svc.channels.on_proofs(cid, [*more, forged, after])
    assert [e.code for e in errors] == [ErrorCode.BAD_SIGNATURE, ErrorCode.NONCE_GAP]
    assert receipt2 is not None
    assert receipt2.nonce == 210
    assert commits() == 2
    reader2 = await services(config)
    await reader2.channels.load()
    assert reader2.channels.get(cid).received.nonce == 210


_FAIL_USAGE = {
    "sqlite": [
        "CREATE TRIGGER usage_fail BEFORE INSERT ON usage "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION usage_fail() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$",
        "CREATE TRIGGER usage_fail BEFORE INSERT ON usage "
        "FOR EACH ROW EXECUTE FUNCTION usage_fail()",
    ],
}


async def test_a_failed_commit_changes_nothing_and_acknowledges_nothing(
    db_url: str, tmp_path: Path, services: ServicesFactory
) -> None:
    """The usage write fails inside the batch's transaction (a trigger in the real database):
    the state row, the in-memory state and the receipt all stay as they were."""
    sim = open_sim()
    config = make_config(tmp_path / "peer", sim.peer, db_url=db_url)
    svc = await services(config)
    await svc.channels.commit(sim.states[1], new=True)
    cid = sim.states[1].channel_id.hex()
    payer = Payer(sim)
    first = [payer.pay((100, 0)) for _ in range(5)]
    receipt, _ = await svc.channels.on_proofs(cid, first)
    assert receipt is not None
    assert receipt.nonce == 5
    row_before = await svc.channel_row(cid)
    state_before = svc.channels.get(cid)
    usage_before = await svc.usage(cid)

    dialect = svc.engine.dialect.name
    async with svc.engine.begin() as conn:
        for sql in _FAIL_USAGE[dialect]:
            await conn.execute(text(sql))
    batch = [payer.pay((100, 1)) for _ in range(5)]
    with pytest.raises(DBAPIError, match="disk on fire"):
        await svc.channels.on_proofs(cid, batch)
    assert svc.channels.get(cid) is state_before
    row_after = await svc.channel_row(cid)
    assert row_before is not None
    assert row_after is not None
    assert (row_after.state, row_after.phase, row_after.updated_ms) == (
        row_before.state,
        row_before.phase,
        row_before.updated_ms,
    )
    assert await svc.usage(cid) == usage_before

    async with svc.engine.begin() as conn:
        await conn.execute(
            text("DROP TRIGGER usage_fail" + (" ON usage" if dialect == "postgresql" else ""))
        )
    receipt, errors = await svc.channels.on_proofs(cid, batch)  # the retry lands whole
    assert errors == []
    assert receipt is not None
    assert receipt.nonce == 10
