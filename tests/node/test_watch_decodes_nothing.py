"""After a restart the watch asks the arbiter about every channel, and the payment reports look
at every channel, without decoding a quiet channel's state (ADR 0316): at 10,000 channels the
first sweep decoded them all, about two seconds of the event loop just when the restarted node
must serve its first update (issue 13). What they read instead — the arbiter, the nonce last
received — comes from the stored bytes and equals what the full decode gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from node.config import Config
from node.storage.codec import encode_channel, summarize_channel
from protocol import channel as ch
from tests.node.conftest import (
    Payer,
    RunningNode,
    arbiter_holding_a_channel,
    make_config,
    open_sim,
    seed,
)


async def test_the_first_sweep_and_report_pass_decode_no_quiet_channel(
        tmp_path: Path, start_node: Callable[[Config], Awaitable[RunningNode]]) -> None:
    sim, arbiter = await arbiter_holding_a_channel(tmp_path, start_node)
    state = sim.states[1]  # the payee's side, open, nothing received yet: quiet
    config = make_config(tmp_path / "payee", sim.peer)
    await seed(config, [state], peers=[(sim.arbiter, arbiter.peer_url, "arbiter")])
    node = (await start_node(config)).node
    cid = state.channel_id.hex()
    states = node.channels.states

    checked: list[str] = []
    check = node.watch.check

    async def counted(cid: str, status: Any) -> None:
        checked.append(cid)
        await check(cid, status)

    node.watch.check = counted  # type: ignore[method-assign]
    await node.watch.sweep()
    assert set(checked) == {cid}  # asked, its signed answer taken (the boot sweep too)
    await node.ctx.events.flush_payments(lambda: states, node.channels.lock, all_=True)
    assert states.decoded() == 0
    assert states.arbiter(cid) == sim.arbiter.node_id.hex()
    assert states.received_nonce(cid) == state.received.nonce
    assert states[cid] == state  # and the full decode still gives the stored state
    assert states.decoded() == 1


def test_the_summary_reads_what_the_decode_reads() -> None:
    sim = open_sim()
    payer = Payer(sim)
    state = sim.states[1]
    for _ in range(4):
        state = ch.step(state, ch.ReceiveProof(payer.pay((10, 1))), now_ms=payer.now_ms).state
    for held in (sim.states[0], state):
        summary = summarize_channel(encode_channel(held))
        assert summary.arbiter == held.terms.arbiter
        assert summary.received_nonce == held.received.nonce
        assert summary.funded == dict(zip(held.terms.parties(), held.funded, strict=True))
    assert summarize_channel(encode_channel(state)).received_nonce == 4
