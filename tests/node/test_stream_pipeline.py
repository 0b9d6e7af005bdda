"""The single-event path on two real nodes (issue 13, ADRs 0305 and 0306): the receiver checks
the signatures of batch N+1 on its signing pool while batch N commits, the sender applies
receipts without a lock while its writer commits; no receipt is ever for an update the receiver
has not committed, and none is lost on the sender."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node.config import Config
from node.storage.codec import decode_channel
from node.storage.db import make_engine
from node.storage.models import Channel
from protocol.errors import ErrorCode
from protocol.messages import Error, Receipt
from protocol.records import decode_message

from .conftest import Payer, free_port, make_config, open_sim, seed


async def payer_and_payee(tmp_path: Path, start_node: Callable[..., Any]
                          ) -> tuple[str, Any, Any, Config]:
    """Two real nodes on one open channel: (channel id, payer, payee, the payee's config)."""
    sim = open_sim(opener_deposit=1_000_000)
    payer_config = make_config(tmp_path / "payer", sim.opener)
    payee_config = make_config(tmp_path / "payee", sim.peer)
    url = "http://{}:{}"
    await seed(payer_config, [sim.states[0]],
               peers=[(sim.peer, url.format(*payee_config.listen), "node")])
    await seed(payee_config, [sim.states[1]],
               peers=[(sim.opener, url.format(*payer_config.listen), "node")])
    payee = await start_node(payee_config)
    payer = await start_node(payer_config)
    return sim.terms.channel_id.hex(), payer, payee, payee_config


async def test_every_receipted_update_is_committed_by_the_receiver(
        tmp_path: Path, start_node: Callable[..., Any]) -> None:
    cid, payer, payee, payee_config = await payer_and_payee(tmp_path, start_node)
    service = payer.node.channels

    payee_db = make_engine(payee_config.db_url)
    seen: list[tuple[int, int]] = []  # (receipt nonce, nonce the payee had committed then)
    on_receipt = service.writer.on_receipt

    async def checked_receipt(receipt: Receipt) -> None:
        async with payee_db.connect() as conn:
            row = (await conn.execute(select(Channel.state).where(Channel.id == cid))).one()
        seen.append((receipt.nonce, decode_channel(row.state).received.nonce))
        await on_receipt(receipt)

    service.writer.on_receipt = checked_receipt  # type: ignore[method-assign]
    service.streams.on_receipt = checked_receipt
    try:
        # single events from many callers at once, and batches among them: group commits form
        # on both sides while receipts land during the sender's commits
        singles = [service.pay(cid, quantities=[1_000, 0]) for _ in range(150)]
        batches = [service.pay(cid, quantities=[0, 1], repeat=200) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*singles, *batches), 120)
    finally:
        await payee_db.dispose()

    total = 150 + 3 * 200
    sent = service.get(cid).sent
    assert sent.nonce == total
    assert sent.acked_nonce == total  # no receipt lost on the sender
    assert seen, "no receipt arrived"
    assert all(committed >= nonce for nonce, committed in seen), [
        s for s in seen if s[1] < s[0]]
    assert len(seen) < total  # cumulative receipts: batches formed, not one per update
    received = payee.node.channels.get(cid).received
    assert (received.nonce, received.amount) == (sent.nonce, sent.amount)

    # the sender's stored state holds the last receipt once the flusher ran (idle channel)
    await service.writer.flush()
    assert service.writer.dirty == set()
    async with payer.node.ctx.db() as session:
        row = await session.get(Channel, cid)
    assert row is not None
    assert decode_channel(row.state).sent.acked_nonce == total


async def test_a_stop_during_the_receipt_flush_still_writes_the_receipts(
        tmp_path: Path, start_node: Callable[..., Any]) -> None:
    """The node is stopped while its flusher is in the commit of receipts held in memory:
    the cancelled flush leaves the channel dirty, and the stop's own flush writes them."""
    cid, payer, _, _ = await payer_and_payee(tmp_path, start_node)
    service, writer = payer.node.channels, payer.node.channels.writer
    await asyncio.wait_for(service.pay(cid, quantities=[0, 1], repeat=50), 60)
    assert service.get(cid).sent.acked_nonce == 50
    assert cid in writer.dirty, "the last receipt was written before the test could hold it"

    commit, committing, gate = service.commit, asyncio.Event(), asyncio.Event()

    async def held_once(*args: Any, **kwargs: Any) -> None:
        if not committing.is_set():
            committing.set()
            await gate.wait()  # the flusher's commit, held until the stop cancels it
        await commit(*args, **kwargs)

    service.commit = held_once  # type: ignore[method-assign]
    await asyncio.wait_for(committing.wait(), 10)
    await asyncio.wait_for(writer.stop(), 20)
    assert not gate.is_set()
    async with payer.node.ctx.db() as session:
        row = await session.get(Channel, cid)
    assert row is not None
    assert decode_channel(row.state).sent.acked_nonce == 50, "the receipts were lost at stop"


async def test_a_forged_proof_in_the_batch_checked_while_the_previous_one_commits_is_refused(
        tmp_path: Path, start_node: Callable[..., Any]) -> None:
    sim = open_sim()
    cid = sim.terms.channel_id.hex()
    config = make_config(tmp_path / "payee", sim.peer)
    await seed(config, [sim.states[1]],
               peers=[(sim.opener, f"http://127.0.0.1:{free_port()}", "node")])
    node = await start_node(config)
    service = node.node.channels
    payer = Payer(sim)
    first, genuine = payer.pay((1_000, 1)), payer.pay((1_000, 1))
    forged = dataclasses.replace(genuine, signature=bytes([genuine.signature[0] ^ 1])
                                 + genuine.signature[1:])
    gate, committing, checked_ahead = asyncio.Event(), asyncio.Event(), asyncio.Event()
    commit, check = service.commit, service.signing.check

    async def held_commit(*args: Any, **kwargs: Any) -> None:
        committing.set()
        await gate.wait()  # batch N stays in its commit until batch N+1 was checked
        await commit(*args, **kwargs)

    async def watched_check(proofs: Any) -> Any:
        out = await check(proofs)
        if committing.is_set() and not gate.is_set() and forged in proofs:
            checked_ahead.set()
        return out

    service.commit = held_commit  # type: ignore[method-assign]
    service.signing.check = watched_check  # type: ignore[method-assign]
    url = node.peer_url.replace("http://", "ws://") + f"/p2p/channels/{cid}/stream"
    async with node.http.ws_connect(url) as ws:
        await ws.send_bytes(first.encode())
        await asyncio.wait_for(committing.wait(), 10)  # batch N: in its commit
        await ws.send_bytes(forged.encode())
        await asyncio.wait_for(checked_ahead.wait(), 10)  # batch N+1: checked meanwhile
        gate.set()
        answers = [decode_message((await ws.receive(timeout=10)).data) for _ in range(2)]
        assert isinstance(answers[0], Receipt)
        assert answers[0].nonce == 1
        assert isinstance(answers[1], Error)
        assert answers[1].code == ErrorCode.BAD_SIGNATURE
        assert service.get(cid).received.nonce == 1  # the forged proof changed nothing
        await ws.send_bytes(genuine.encode())  # the genuine one, same fields, is taken
        nonces = []  # the batch of the forged one answered with receipt 1 again, then 2
        while 2 not in nonces:
            answer = decode_message((await ws.receive(timeout=10)).data)
            assert isinstance(answer, Receipt)
            nonces.append(answer.nonce)
    assert nonces[-1] == 2
    assert service.get(cid).received.nonce == 2
