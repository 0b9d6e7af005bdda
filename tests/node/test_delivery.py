"""Delivery with guarantees (specs/0005 §2.1): the outbox against hostile targets.

A real node's services (``node.app.Node``: real SQLite, the real outbox scheduler, the real
``Node._send`` and ``PeerClient``) deliver rows to real aiohttp servers on loopback that play
the recipient: a proxy's 502 page, an empty 503, garbage, an unsigned ``Error``, refusals signed
by the wrong key or for other bytes, a target that accepts connections and never answers, a
64 MB answer. Only a refusal the recipient signed over the exact bytes sent ends a row; nothing
a hostile target does delays an urgent row or another recipient's rows.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner
from sqlalchemy import event

from node.app import Node
from node.cli import cli
from node.errors import PeerUnavailable
from node.outbox import BANK_LANE_WIDTH, LANE_WIDTH, MAX_IN_FLIGHT
from node.peerclient import OutboundStream, PeerClient
from node.storage.models import Outbox as OutboxRow
from protocol.crypto import Signer
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import Error, Refusal
from protocol.records import Message, decode_message

from .conftest import RunningNode, ServicesFactory, make_config

TARGET = Signer.from_label("target")
"""The recipient the rows are for: only its signature over the exact bytes ends a row."""
OTHER = Signer.from_label("someone else")
CID = "c1" * 32
MB = 1024 * 1024


# -- a recipient that misbehaves on demand ------------------------------------------------------


@dataclass
class Target:
    """An aiohttp server answering every POST as `mode` says; records what it was sent."""

    mode: str = "ok"
    code: ErrorCode = ErrorCode.CLOSE_MISMATCH
    bodies: list[bytes] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    written: int = 0
    cut_off: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    def url(self, path: str = "/p2p/evidence") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.bodies.append(body)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._answer(request, body)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        refused = RemoteProtocolError(self.code, "no")
        msgpack = "application/msgpack"
        match self.mode:
            case "ok":
                return web.Response(status=204)
            case "html502":
                return web.Response(status=502, content_type="text/html",
                                    text="<html><body><h1>502 Bad Gateway</h1></body></html>")
            case "empty503":
                return web.Response(status=503)
            case "garbage200":
                return web.Response(status=200, body=b"this is not msgpack at all",
                                    content_type=msgpack)
            case "unsigned-error":
                return web.Response(status=400, content_type=msgpack,
                                    body=Error.from_exception(refused).encode())
            case "refusal-by-another-key":
                return web.Response(status=400, content_type=msgpack,
                                    body=Refusal.make(OTHER, refused, body).encode())
            case "refusal-of-other-bytes":
                return web.Response(status=400, content_type=msgpack,
                                    body=Refusal.make(TARGET, refused, body + b"!").encode())
            case "refusal-in-a-5xx":
                return web.Response(status=503, content_type=msgpack,
                                    body=Refusal.make(TARGET, refused, body).encode())
            case "refusal":
                return web.Response(status=400, content_type=msgpack,
                                    body=Refusal.make(TARGET, refused, body).encode())
            case "hang":
                await self.release.wait()
                return web.Response(status=204)
            case "huge" | "huge-declared":
                return await self._huge(request, declared=self.mode == "huge-declared")
        raise AssertionError(self.mode)

    async def _huge(self, request: web.Request, *, declared: bool) -> web.StreamResponse:
        """64 MB, 1 MB at a time (one buffer reused: the server itself holds 1 MB)."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/msgpack"})
        if declared:
            resp.content_length = 64 * MB
        chunk = b"\x00" * MB
        try:
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(chunk)
                self.written += len(chunk)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            self.cut_off = True
        except asyncio.CancelledError:  # aiohttp cancels a handler whose client went away
            self.cut_off = True
            raise
        finally:
            self.finished.set()
        return resp


@pytest.fixture
async def target() -> AsyncIterator[Callable[[], Awaitable[Target]]]:
    made: list[Target] = []

    async def make() -> Target:
        t = Target()
        app = web.Application()
        app.router.add_post("/{tail:.*}", t.handle)
        t.server = TestServer(app)
        await t.server.start_server()
        made.append(t)
        return t

    yield make
    for t in made:
        t.release.set()
        assert t.server is not None
        await t.server.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node's services, started (outbox scheduler running), no HTTP listeners."""
    config = make_config(tmp_path / "sender", Signer.from_label("sender"))
    n = Node(config)
    await n.start()
    yield n
    await n.stop()


async def add(node: Node, url: str, payload: bytes, *, purpose: str = "evidence",
              recipient: str = TARGET.node_id.hex(), urgent: bool = False,
              channel: str = CID) -> None:
    async with node.ctx.db() as session, session.begin():
        await node.outbox.add(session, channel, "send", url, payload, recipient=recipient,
                              purpose=purpose, urgent=urgent)
    node.outbox.kick()


async def only_row(node: Node) -> OutboxRow:
    (row,) = await node.outbox.rows(include_done=True)
    return row


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> float:
    """Seconds until `predicate` holds (fails after `timeout_s`)."""
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < timeout_s, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


# -- transient versus final ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", [
    "html502", "empty503", "garbage200", "unsigned-error", "refusal-by-another-key",
    "refusal-of-other-bytes", "refusal-in-a-5xx", "huge",
])
async def test_a_transient_answer_is_retried_until_the_target_behaves(
    node: Node, target: Callable[[], Awaitable[Target]], mode: str
) -> None:
    t = await target()
    t.mode = mode
    await add(node, t.url(), b"evidence bytes")

    async def tried_three_times() -> bool:
        return (await only_row(node)).attempts >= 3

    await until(tried_three_times)
    row = await only_row(node)
    assert (row.done, row.refused) == (False, False)
    assert row.last_error
    assert [r.id for r in await node.outbox.pending()] == [row.id]
    assert set(t.bodies) == {b"evidence bytes"}  # the exact bytes, every time

    t.mode = "ok"

    async def delivered() -> bool:
        return (await only_row(node)).done

    await until(delivered)
    row = await only_row(node)
    assert (row.refused, row.last_error) == (False, "")
    assert await node.outbox.rows() == []
    assert await node.outbox.pending() == []


async def test_a_refusal_signed_by_the_recipient_ends_the_row_and_stays_visible(
    node: Node, target: Callable[[], Awaitable[Target]]
) -> None:
    t = await target()
    t.mode, t.code = "refusal", ErrorCode.CLOSE_MISMATCH
    await add(node, t.url(), b"a close the peer will never sign", purpose="close", urgent=True)

    async def refused() -> bool:
        return (await only_row(node)).refused

    await until(refused)
    await asyncio.sleep(0.5)  # more than the first backoffs: it is not tried again
    row = await only_row(node)
    assert (row.done, row.refused, row.attempts) == (False, True, 1)
    assert row.last_error == "CLOSE_MISMATCH: no"
    assert len(t.bodies) == 1
    assert [r.id for r in await node.outbox.rows()] == [row.id]  # for the operator
    assert await node.outbox.pending() == []

    # a new delivery with the same key is pending again; the refused one stays listed
    t.mode = "ok"
    await add(node, t.url(), b"the next close", purpose="close", urgent=True)

    async def delivered() -> bool:
        return any(r.done for r in await node.outbox.rows(include_done=True))

    await until(delivered)
    assert [(r.refused, r.done) for r in await node.outbox.rows(include_done=True)] == [
        (True, False), (False, True)]


@pytest.mark.parametrize("code", [ErrorCode.INVALID_STATE, ErrorCode.UNKNOWN_CHANNEL])
async def test_a_signed_not_yet_refusal_is_retried(
    node: Node, target: Callable[[], Awaitable[Target]], code: ErrorCode
) -> None:
    t = await target()
    t.mode, t.code = "refusal", code
    await add(node, t.url(), b"funding, before the channel exists there")

    async def tried_three_times() -> bool:
        return (await only_row(node)).attempts >= 3

    await until(tried_three_times)
    row = await only_row(node)
    assert (row.done, row.refused) == (False, False)
    assert row.last_error.startswith(code.name)
    t.mode = "ok"

    async def delivered() -> bool:
        return (await only_row(node)).done

    await until(delivered)


async def test_a_refusal_signed_by_the_recipient_but_for_another_recipient_is_transient(
    node: Node, target: Callable[[], Awaitable[Target]]
) -> None:
    """The row is for OTHER; TARGET's genuine refusal of these bytes does not end it."""
    t = await target()
    t.mode = "refusal"
    await add(node, t.url(), b"meant for someone else", recipient=OTHER.node_id.hex())

    async def tried_twice() -> bool:
        return (await only_row(node)).attempts >= 2

    await until(tried_twice)
    row = await only_row(node)
    assert (row.done, row.refused) == (False, False)
    assert "not signed by the recipient" in row.last_error


# -- nobody waits behind a hostile target -------------------------------------------------------


async def test_a_target_that_never_answers_delays_neither_urgent_rows_nor_other_recipients(
    node: Node, target: Callable[[], Awaitable[Target]]
) -> None:
    hostile, honest, arbiter = await target(), await target(), await target()
    hostile.mode = "hang"
    for i in range(200):
        await add(node, hostile.url("/p2p/funding"), b"%d" % i, purpose=f"funding:{i}",
                  channel=f"{i:064x}")

    async def lane_full() -> bool:
        return hostile.in_flight == LANE_WIDTH

    await until(lane_full)

    # an urgent row for the same recipient (its other address) is not queued behind its lane
    await add(node, honest.url("/p2p/dispute"), b"urgent", purpose="dispute", urgent=True)

    async def urgent_delivered() -> bool:
        return honest.bodies == [b"urgent"]

    assert await until(urgent_delivered) < 2.0
    # a row for another recipient has a lane of its own
    await add(node, arbiter.url("/p2p/evidence"), b"for the arbiter", purpose="evidence",
              recipient=OTHER.node_id.hex())

    async def other_delivered() -> bool:
        return arbiter.bodies == [b"for the arbiter"]

    assert await until(other_delivered) < 2.0
    await asyncio.sleep(0.2)
    assert hostile.most_in_flight == LANE_WIDTH  # the hostile lane stays at its width
    pending = await node.outbox.pending()
    assert len(pending) == 200
    assert {r.recipient for r in pending} == {TARGET.node_id.hex()}


async def test_recipients_anyone_can_create_hold_a_bounded_number_of_sockets(
    node: Node, target: Callable[[], Awaitable[Target]]
) -> None:
    """Sybil keys (channels registered at an arbiter for free) are as many recipients as an
    attacker likes: their rows together never hold more than MAX_IN_FLIGHT attempts, and an
    urgent row still goes out at once."""
    hostile, honest = await target(), await target()
    hostile.mode = "hang"
    sybils = [Signer.from_label(f"sybil-{i}").node_id.hex() for i in range(MAX_IN_FLIGHT + 40)]
    for i, sybil in enumerate(sybils):
        await add(node, hostile.url("/p2p/dispute"), b"%d" % i, purpose="dispute",
                  recipient=sybil, channel=f"{i:064x}")

    async def saturated() -> bool:
        return hostile.in_flight == MAX_IN_FLIGHT

    await until(saturated)
    await add(node, honest.url("/p2p/dispute"), b"urgent", purpose="dispute", urgent=True)

    async def urgent_delivered() -> bool:
        return honest.bodies == [b"urgent"]

    assert await until(urgent_delivered) < 2.0
    await asyncio.sleep(0.3)
    assert hostile.most_in_flight == MAX_IN_FLIGHT


async def test_many_urgent_rows_to_a_target_that_never_answers_do_not_exhaust_connections(
    node: Node, target: Callable[[], Awaitable[Target]]
) -> None:
    """More hung urgent attempts than aiohttp's default pool (100): one more to an honest
    target is still delivered at once."""
    hostile, honest = await target(), await target()
    hostile.mode = "hang"
    for i in range(150):
        await add(node, hostile.url("/p2p/dispute"), b"%d" % i, purpose="dispute", urgent=True,
                  channel=f"{i:064x}")

    async def hung() -> bool:
        return hostile.in_flight >= 100

    await until(hung)
    await add(node, honest.url("/p2p/evidence"), b"evidence", purpose="evidence", urgent=True,
              recipient=OTHER.node_id.hex())

    async def delivered() -> bool:
        return honest.bodies == [b"evidence"]

    assert await until(delivered) < 2.0

    async def all_hung() -> bool:
        return hostile.in_flight == 150

    await until(all_hung)


async def test_the_scheduler_does_not_spin_on_rows_held_back_by_a_full_lane(
    node: Node, target: Callable[[], Awaitable[Target]]
) -> None:
    hostile = await target()
    hostile.mode = "hang"
    for i in range(50):
        await add(node, hostile.url(), b"%d" % i, purpose=f"p{i}")

    async def lane_full() -> bool:
        return hostile.in_flight == LANE_WIDTH

    await until(lane_full)
    await asyncio.sleep(0.2)
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    event.listen(node.ctx.engine.sync_engine, "before_cursor_execute", count)
    try:
        await asyncio.sleep(1.0)
    finally:
        event.remove(node.ctx.engine.sync_engine, "before_cursor_execute", count)
    # 46 rows are due but their lane is full: nothing to do until an attempt ends
    assert statements[0] <= 3


# -- dedup --------------------------------------------------------------------------------------


async def test_per_key_only_the_latest_row_is_pending(
    tmp_path: Path, services: ServicesFactory
) -> None:
    svc = await services(make_config(tmp_path / "n", Signer.from_label("n")))  # not started
    recipient = TARGET.node_id.hex()

    async def add_rows(*rows: tuple[str, str, bytes]) -> None:
        async with svc.ctx.db() as session, session.begin():
            for purpose, rcpt, payload in rows:
                await svc.outbox.add(session, CID, "send", "http://t.test/p2p/close", payload,
                                     recipient=rcpt, purpose=purpose, urgent=True)

    await add_rows(("close", recipient, b"close 1"))
    await add_rows(("close", recipient, b"close 2"))  # a repeated close request replaces
    await add_rows(("close", recipient, b"close 3"), ("close", recipient, b"close 4"))
    await add_rows(("evidence", recipient, b"evidence"),  # other keys are kept
                   ("close", OTHER.node_id.hex(), b"close to another"))
    pending = await svc.outbox.pending()
    assert sorted((r.purpose, r.recipient, r.payload) for r in pending) == sorted([
        ("close", recipient, b"close 4"),
        ("evidence", recipient, b"evidence"),
        ("close", OTHER.node_id.hex(), b"close to another"),
    ])
    assert await svc.count(OutboxRow) == 3


async def test_per_key_the_table_keeps_one_delivered_or_pending_row_and_one_refused_row(
    node: Node, target: Callable[[], Awaitable[Target]]
) -> None:
    """A peer that makes us send the same kind of message again and again, and refuses each
    one with its own key, cannot grow the table."""
    t = await target()

    async def settled() -> bool:
        return not await node.outbox.pending()

    for mode in ("ok", "ok", "refusal", "refusal", "refusal"):
        t.mode = mode
        await add(node, t.url("/p2p/funding"), f"{mode} {len(t.bodies)}".encode(),
                  purpose="funding:1")
        await until(settled)
        assert len(await node.outbox.rows(include_done=True)) <= 2
    (latest,) = await node.outbox.rows(include_done=True)
    assert (latest.refused, latest.payload) == (True, b"refusal 4")
    assert len(t.bodies) == 5


# -- bounded reads ------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("mode", ["huge", "huge-declared"])
async def test_a_64_mb_answer_is_not_read_past_the_limit(
    target: Callable[[], Awaitable[Target]], mode: str
) -> None:
    t = await target()
    t.mode = mode
    client = PeerClient(node_id=OTHER.node_id.hex(), max_body_bytes=64 * 1024)
    baseline, peak = _rss(), [0]
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    start = time.monotonic()
    try:
        with pytest.raises(PeerUnavailable) as failed:  # transient, for the outbox
            await client.send(t.url("/p2p/close").rsplit("/p2p", 1)[0], "/p2p/close", b"x")
        elapsed = time.monotonic() - start
        await asyncio.wait_for(t.finished.wait(), 5)
    finally:
        stop.set()
        await sampler
        await client.close()
    assert elapsed < 2.0
    assert t.cut_off  # the server saw the connection closed before it could send it all
    assert t.written < 32 * MB
    assert peak[0] - baseline < 24 * MB
    assert "65536" in str(failed.value)


class _Stream:
    """A WebSocket server that sends one small message, then one frame over the limit."""

    def __init__(self, big: int) -> None:
        self.big = big
        self.close_code: int | None = None
        self.closed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        small = Refusal.make(TARGET, RemoteProtocolError(ErrorCode.NONCE_GAP, "ok"), b"")
        await ws.send_bytes(small.encode())
        await ws.send_bytes(b"\x00" * self.big)
        async for _ in ws:
            pass
        self.close_code = ws.close_code
        self.closed.set()
        return ws


async def test_a_websocket_frame_over_the_limit_is_refused() -> None:
    limit = 64 * 1024
    server_side = _Stream(big=limit + 1)
    app = web.Application()
    app.router.add_get("/p2p/channels/x/stream", server_side.handle)
    server = TestServer(app)
    await server.start_server()
    got: list[Message] = []

    async def on_message(message: Message) -> None:
        got.append(message)

    async def resend(after: int) -> list[tuple[int, bytes]]:
        return []

    async with aiohttp.ClientSession() as session:
        stream = OutboundStream(
            url=str(server.make_url("/p2p/channels/x/stream")).replace("http", "ws", 1),
            session=session, on_message=on_message, resend=resend, max_msg_size=limit)
        stream.start()
        try:
            await asyncio.wait_for(server_side.closed.wait(), 5)
        finally:
            await stream.stop()
            await server.close()
    assert server_side.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert [type(m) for m in got] == [Refusal]  # the small one arrived; the big one never


# -- the peer API signs its refusals ------------------------------------------------------------


async def _post(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, Message]:
    async with http.post(url, data=body, headers={"Content-Type": "application/msgpack"}) as r:
        return r.status, decode_message(await r.read())


async def test_the_peer_api_answers_a_refused_post_with_a_signed_refusal(
    tmp_path: Path, start_node: Callable[..., Awaitable[RunningNode]]
) -> None:
    signer = Signer.from_label("recipient")
    running = await start_node(make_config(tmp_path / "recipient", signer))
    base = running.peer_url
    for path, body, status, code in [
        ("/p2p/dispute", b"\xc1", 400, ErrorCode.MALFORMED),
        ("/p2p/close", Error.make(1, "wrong type").encode(), 400, ErrorCode.INVALID_FIELD),
    ]:
        got_status, answer = await _post(running.http, base + path, body)
        assert isinstance(answer, Refusal), answer
        assert (got_status, ErrorCode(answer.code)) == (status, code)
        answer.verify_for(signer.node_id, body)  # by this node, of exactly these bytes
        with pytest.raises(RemoteProtocolError):
            answer.verify_for(signer.node_id, body + b"\x00")
        with pytest.raises(RemoteProtocolError):
            answer.verify_for(OTHER.node_id, body)
    # GETs keep the unsigned Error
    async with running.http.get(f"{base}/p2p/channels/{'ab' * 32}/receipt") as r:
        assert r.status == 404
        assert isinstance(decode_message(await r.read()), Error)


async def test_a_real_nodes_signed_refusal_ends_a_row_only_for_that_node(
    tmp_path: Path, node: Node, start_node: Callable[..., Awaitable[RunningNode]]
) -> None:
    """End to end: our outbox, their peer API. Their refusal ends the row addressed to them;
    the same answer to a row addressed to someone else at that URL is transient."""
    signer = Signer.from_label("recipient")
    running = await start_node(make_config(tmp_path / "recipient", signer))
    url = running.peer_url + "/p2p/dispute"
    await add(node, url, b"\xc1", recipient=signer.node_id.hex(), purpose="dispute")
    await add(node, url, b"\xc1", recipient=OTHER.node_id.hex(), purpose="dispute")

    async def settled() -> bool:
        rows = {r.recipient: r for r in await node.outbox.rows()}
        return rows[signer.node_id.hex()].refused and rows[OTHER.node_id.hex()].attempts >= 2

    await until(settled)
    rows = {r.recipient: r for r in await node.outbox.rows()}
    assert rows[signer.node_id.hex()].last_error.startswith("MALFORMED")
    assert not rows[OTHER.node_id.hex()].refused


# -- the operator sees the outbox ---------------------------------------------------------------


async def test_admin_api_and_cli_list_pending_and_refused_rows(
    tmp_path: Path, start_node: Callable[..., Awaitable[RunningNode]],
    target: Callable[[], Awaitable[Target]]
) -> None:
    refusing, down = await target(), await target()
    refusing.mode = "refusal"
    down.mode = "empty503"
    running = await start_node(make_config(tmp_path / "n", Signer.from_label("n")))
    await add(running.node, refusing.url("/p2p/close"), b"c", purpose="close", urgent=True)
    await add(running.node, down.url("/p2p/funding"), b"f", purpose="funding:0")

    async def both_tried() -> bool:
        rows = await running.node.outbox.rows()
        return len(rows) == 2 and all(r.attempts for r in rows)

    await until(both_tried)
    status, body = await running.admin("GET", "/api/outbox")
    assert status == 200
    by_purpose = {r["purpose"]: r for r in body["outbox"]}
    close, funding = by_purpose["close"], by_purpose["funding:0"]
    assert close["refused"] is True
    assert close["next_attempt_ms"] is None
    assert close["last_error"] == "CLOSE_MISMATCH: no"
    assert (close["urgent"], close["recipient"], close["channel"], close["kind"]) == (
        True, TARGET.node_id.hex(), CID, "send")
    assert funding["refused"] is False
    assert funding["attempts"] >= 1
    assert "503" in funding["last_error"]

    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["outbox", "list", "--data-dir", str(running.config.data_dir)])
    assert result.exit_code == 0, result.output
    assert "refused" in result.output
    assert "funding:0" in result.output
    assert "retry in" in result.output or "due" in result.output


async def test_the_nodes_own_bank_has_a_lane_of_16(node: Node) -> None:
    """Deposits and payouts of many channels go to the node's own bank (recipient ""): 16
    attempts in flight at once, not a peer's LANE_WIDTH, and never more."""
    in_flight, most, release = [0], [0], asyncio.Event()

    async def slow_bank(_row: OutboxRow) -> None:
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        try:
            await release.wait()
        finally:
            in_flight[0] -= 1

    node.outbox.handlers["bank-test"] = slow_bank
    async with node.ctx.db() as session, session.begin():
        for i in range(40):
            await node.outbox.add(session, f"{i:064x}", "bank-test", "", b"%d" % i,
                                  recipient="", purpose="deposit")
    node.outbox.kick()

    async def lane_full() -> bool:
        return in_flight[0] == BANK_LANE_WIDTH

    await until(lane_full)
    await asyncio.sleep(0.3)
    assert most[0] == BANK_LANE_WIDTH > LANE_WIDTH
    release.set()

    async def all_done() -> bool:
        return not await node.outbox.pending()

    await until(all_done)
    assert most[0] == BANK_LANE_WIDTH
