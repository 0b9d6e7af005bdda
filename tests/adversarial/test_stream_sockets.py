"""Attack 9: sockets held open on a channel's update stream.

Anyone who knows a channel id (the peer itself, or whoever learnt it) opens WebSocket after
WebSocket to `/p2p/channels/{id}/stream` on the payee and keeps each one alive by answering the
pings. Unbounded, every socket holds a file descriptor until the node can open none, and the
node's own deliveries (dispute evidence) need them. The node keeps one inbound stream per
channel: each new one replaces the one before (the sender keeps one, so a second is it
reconnecting), closed with 1008.

Honest outcome: the sockets the attacker holds at once stay at one, the payee's descriptors do
not grow with them, and the payer's next payment is streamed and receipted.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import WSCloseCode

from tests.adversarial.arena import Arena, arena
from tests.adversarial.toolkit import Loop

SOCKETS = 150


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, loop: Loop) -> Iterator[Arena]:
    with arena(tmp_path_factory.mktemp("sockets"), loop=loop) as a:
        yield a


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sent(ws: aiohttp.ClientWebSocketResponse) -> tuple[str, object]:
    """What the server sent a socket we never wrote to: its close frame, if it closed it."""
    if ws.closed:
        return "closed", None
    message = await ws.receive(timeout=5)
    return message.type.name, message.data


def test_sockets_held_on_a_stream_stay_at_one_and_the_payer_still_pays(
        a: Arena, loop: Loop) -> None:
    cid = a.open_channel()
    a.pay(a.manufacturer, cid, km=1)  # the payer's own stream to the payee is up
    payee = a.carrier
    assert payee.process is not None
    before = descriptors(payee.process.pid)
    url = f"{payee.url.replace('http', 'ws')}/p2p/channels/{cid}/stream"

    async def hold() -> tuple[list[tuple[str, object]], bool, int]:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0)) as session:
            sockets = []
            for _ in range(SOCKETS):
                sockets.append(await session.ws_connect(url, heartbeat=5))
                await asyncio.sleep(0.005)
            await asyncio.sleep(1.0)  # the replaced ones' closes arrive
            held_during = descriptors(payee.process.pid)  # type: ignore[union-attr]
            # what the server sent each replaced socket (a socket aiohttp saw closed already
            # counts as closed); the newest is left open
            answers = [await sent(ws) for ws in sockets[:-1]]
            newest_open = not sockets[-1].closed
            for ws in sockets:
                await ws.close()
            return answers, newest_open, held_during

    answers, newest_open, held_during = loop.run(hold(), timeout_s=120)
    assert newest_open
    assert all(answer in (("CLOSE", WSCloseCode.POLICY_VIOLATION), ("closed", None))
               for answer in answers), answers
    assert answers.count(("CLOSE", WSCloseCode.POLICY_VIOLATION)) >= SOCKETS - 5
    assert held_during - before < 20, (
        f"the payee's descriptors went from {before} to {held_during} while {SOCKETS} sockets "
        "were opened on one stream")
    # the payer's stream, replaced by the first of them, reconnects and is receipted
    paid = a.pay(a.manufacturer, cid, km=2)
    assert paid["acked_nonce_sent"] == paid["nonce_sent"] == 2
