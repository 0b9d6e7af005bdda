"""Each arbiter is asked on its own (node.watch): one that never answers — slow, hostile or
gone — holds up only the channels it holds. The watch loop's sweeps go on asking every other
arbiter, so a unilateral close at an honest arbiter is still seen within one interval and its
evidence goes out in the window. Before, one sweep waited for every arbiter's answer: an
arbiter answering each request just under the 10 s timeout, shrinking `later` one channel at a
time, stretched a sweep to minutes, for every channel of the node."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from node.config import Config
from protocol import channel as ch
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import EMPTY_SIGNATURE, EscrowStatus, EscrowStatuses
from protocol.simulation import Simulation
from protocol.types import ChannelId
from tests.node.conftest import KM, RunningNode, make_config, seed


def a_channel(labels: tuple[str, str, str], salt: bytes) -> Simulation:
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, labels=labels, salt=salt)
    sim.open()
    return sim


async def test_an_arbiter_that_never_answers_holds_up_only_its_own_channels(
        tmp_path: Path, start_node: Callable[[Config], Awaitable[RunningNode]]) -> None:
    stuck = a_channel(("opener", "peer", "arbiter"), bytes(16))
    honest = a_channel(("opener-b", "peer", "arbiter-b"), b"\x01" * 16)
    config = make_config(tmp_path / "payee", stuck.peer)
    await seed(config, [stuck.states[1], honest.states[1]],
               peers=[(stuck.arbiter, "http://127.0.0.1:9", "arbiter"),
                      (honest.arbiter, "http://127.0.0.1:9", "arbiter")])
    node = (await start_node(config)).node
    await node.watch.stop()  # only the sweeps below ask
    asked: Counter[str] = Counter()
    release = asyncio.Event()

    async def fetch(arbiter_id: str, cids: Sequence[str]) -> EscrowStatuses:
        asked[arbiter_id] += 1
        if arbiter_id == stuck.arbiter.node_id.hex():
            await release.wait()  # never answers while the test runs
        raise RemoteProtocolError(ErrorCode.INVALID_FIELD, "no answer in this test")

    node.watch.fetch = fetch  # type: ignore[method-assign]
    for _ in range(3):  # the loop's sweeps: none waits for the stuck arbiter
        await asyncio.wait_for(node.watch.sweep(wait=False), 5)
        await asyncio.sleep(0.05)
    assert asked[honest.arbiter.node_id.hex()] == 3  # asked at every sweep
    assert asked[stuck.arbiter.node_id.hex()] == 1  # still on the first: not asked again
    release.set()
    await asyncio.wait_for(node.watch.sweep(), 5)  # a waiting sweep ends once all answered
    assert asked[stuck.arbiter.node_id.hex()] == 2


async def test_a_proposal_asked_again_never_delays_the_channels_listed_after_it(
        tmp_path: Path, start_node: Callable[[Config], Awaitable[RunningNode]]) -> None:
    """One answer covers up to 16 channels. A channel we proposed is asked for again from its
    peer, which may take its 10 s to answer; the channels the arbiter holds (a dispute to
    answer with evidence) are acted on first, whatever the answer's order."""
    proposed_sim = Simulation.create(tariff=(KM,), opener_deposit=10_000,
                                     labels=("opener", "peer", "arbiter"), salt=bytes(16))
    proposed = ch.propose(proposed_sim.terms, proposed_sim.opener, now_ms=1).state
    held = a_channel(("opener", "peer-b", "arbiter"), b"\x01" * 16)
    config = make_config(tmp_path / "opener", proposed_sim.opener)
    await seed(config, [proposed, held.states[0]],
               peers=[(proposed_sim.arbiter, "http://127.0.0.1:9", "arbiter")])
    node = (await start_node(config)).node
    await node.watch.stop()
    first, second = proposed.channel_id, held.states[0].channel_id

    def status(cid: ChannelId) -> EscrowStatus:
        return EscrowStatus(cid, "open", b"c" * 16, (), None, None, 1, (), EMPTY_SIGNATURE)

    async def fetch(arbiter_id: str, cids: Sequence[str]) -> EscrowStatuses:
        return EscrowStatuses(b"c" * 16, (status(first), status(second)), (), (), 1,
                              EMPTY_SIGNATURE)  # the proposed channel listed first

    peer_answers = asyncio.Event()
    checked: list[str] = []

    async def check_proposed(cid: str) -> None:
        await peer_answers.wait()  # the peer takes its time

    async def check(cid: str, status: object) -> None:
        checked.append(cid)

    node.watch.fetch = fetch  # type: ignore[method-assign]
    node.watch.check_proposed = check_proposed  # type: ignore[method-assign]
    node.watch.check = check  # type: ignore[method-assign]
    sweep = asyncio.create_task(node.watch.sweep())
    await asyncio.sleep(0.2)
    assert checked == [second.hex()]  # acted on while the proposal still waits
    peer_answers.set()
    await asyncio.wait_for(sweep, 5)
