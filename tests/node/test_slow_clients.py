"""Slow clients against a real node daemon: half-sent headers, trickled bodies, idle keep-alive.

The daemon runs as a process (``meterline node start``) with short ``[limits]`` timeouts. Raw
sockets play the slow client: each test asserts the server closes the connection after the
configured deadline (not before it, and within a margin after it), that normal requests are
still served, and that many half-open sockets do not stop them. A WebSocket stream, in-process
on a seeded channel, outlives every deadline and keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.cluster import Cluster, NodeHandle
from protocol.messages import Receipt
from protocol.records import decode_message

from .conftest import Payer, free_port, make_config, open_sim, seed

HEADER_MS, BODY_MS, IDLE_MS = 1_500, 2_000, 2_500
LIMITS = {"header_timeout_ms": HEADER_MS, "body_timeout_ms": BODY_MS, "idle_timeout_ms": IDLE_MS}
EARLY = 0.3
"""The server may close this much before a deadline (timer granularity)."""
MARGIN = 2.0
"""... and must have closed within this much after it."""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    cluster = Cluster(tmp_path_factory.mktemp("slow"))
    handle = cluster.add_node("n", bank=None, settings={"limits": LIMITS})
    handle.start()
    try:
        yield handle
    finally:
        cluster.stop()


def _ports(d: NodeHandle) -> dict[str, int]:
    assert d.admin_port is not None
    return {"peer": d.port, "admin": d.admin_port}


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _until_closed(sock: socket.socket, limit_s: float,
                  trickle: bytes | None = None) -> tuple[bytes, float]:
    """Read until the server closes `sock` (sending one byte of `trickle` every 0.2 s meanwhile);
    the bytes it sent and the seconds it took. Fails when it is still open after `limit_s`."""
    started = time.monotonic()
    sock.settimeout(0.2)
    received = b""
    while time.monotonic() - started < limit_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if trickle:
                try:
                    sock.sendall(trickle[:1])
                except (BrokenPipeError, ConnectionResetError):
                    return received, time.monotonic() - started
                trickle = trickle[1:]
            continue
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    pytest.fail(f"the server still held the connection after {limit_s:.1f} s "
                f"(received {received[:80]!r})")


def _still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed `sock` yet (whatever it sent before is read away)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)
    return False


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


@pytest.mark.parametrize("port_name", ["peer", "admin"])
def test_half_sent_headers_are_closed_after_the_header_timeout(daemon: NodeHandle,
                                                               port_name: str) -> None:
    sock = _connect(_ports(daemon)[port_name])
    sock.sendall(b"GET /p2p/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    answer, took = _until_closed(sock, HEADER_MS / 1000 + MARGIN)
    assert took >= HEADER_MS / 1000 - EARLY
    assert answer.startswith(b"HTTP/1.1 408 ")
    sock.close()


@pytest.mark.parametrize("port_name", ["peer", "admin"])
def test_a_silent_connection_is_closed_after_the_header_timeout(daemon: NodeHandle,
                                                                port_name: str) -> None:
    sock = _connect(_ports(daemon)[port_name])
    answer, took = _until_closed(sock, HEADER_MS / 1000 + MARGIN)
    assert took >= HEADER_MS / 1000 - EARLY
    assert answer == b""
    sock.close()


@pytest.mark.parametrize(("port_name", "path"), [("peer", "/p2p/proposal"),
                                                 ("admin", "/api/channels")])
def test_a_trickled_body_is_closed_after_the_body_timeout(daemon: NodeHandle, port_name: str,
                                                          path: str) -> None:
    """Headers complete, then the body one byte every 0.2 s below its Content-Length: the
    bytes keep coming, but the body is not complete within body_timeout."""
    sock = _connect(_ports(daemon)[port_name])
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Authorization: Bearer {daemon.token}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
    answer, took = _until_closed(sock, BODY_MS / 1000 + MARGIN, trickle=b" " * 200)
    assert took >= BODY_MS / 1000 - EARLY
    assert answer.startswith(b"HTTP/1.1 408 ")
    sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
        daemon: NodeHandle) -> None:
    sock = _connect(daemon.port)
    sock.sendall(b"GET /p2p/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer, took = _until_closed(sock, IDLE_MS / 1000 + MARGIN)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert daemon.node_id.encode() in answer
    assert took >= IDLE_MS / 1000 - EARLY
    sock.close()


def test_normal_requests_are_served_on_both_ports(daemon: NodeHandle) -> None:
    status, info = _get(f"{daemon.url}/p2p/info")
    assert (status, info["node_id"]) == (200, daemon.node_id)
    status, channels = _get(f"http://127.0.0.1:{daemon.admin_port}/api/channels", daemon.token)
    assert status == 200
    assert channels is not None
    # a keep-alive connection serves request after request while each arrives in time
    sock = _connect(daemon.port)
    sock.settimeout(5)
    for _ in range(3):
        sock.sendall(b"GET /p2p/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while daemon.node_id.encode() not in answer:
            chunk = sock.recv(65536)
            assert chunk, "closed between requests"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        time.sleep(IDLE_MS / 1000 / 3)
    sock.close()


def test_many_half_open_sockets_do_not_stop_a_normal_request(daemon: NodeHandle) -> None:
    slow = []
    for i in range(200):
        sock = _connect(daemon.port if i % 2 else daemon.admin_port or 0)
        sock.sendall(b"POST /p2p/proof HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        slow.append(sock)
    try:
        status, info = _get(f"{daemon.url}/p2p/info")
        assert (status, info["node_id"]) == (200, daemon.node_id)
        status, _ = _get(f"http://127.0.0.1:{daemon.admin_port}/api/channels", daemon.token)
        assert status == 200
        # served while every slow socket is still held: they did not have to go first
        assert all(_still_open(s) for s in slow)
        deadline = time.monotonic() + HEADER_MS / 1000 + MARGIN
        while time.monotonic() < deadline and any(_still_open(s) for s in slow):
            time.sleep(0.1)
        assert not any(_still_open(s) for s in slow)
    finally:
        for sock in slow:
            sock.close()


async def test_a_websocket_stream_outlives_every_deadline(
        tmp_path: Path, start_node: Callable[..., Any]) -> None:
    """Upgraded connections keep none of the request deadlines: a stream idle for longer than
    header, body and idle timeouts together still carries proofs and receipts."""
    sim = open_sim()
    short = {"header_timeout_ms": 300, "body_timeout_ms": 300, "idle_timeout_ms": 300}
    config = make_config(tmp_path / "peer", sim.peer, limits=short)
    await seed(config, [sim.states[1]],
               peers=[(sim.opener, f"http://127.0.0.1:{free_port()}", "node")])
    node = await start_node(config)
    payer = Payer(sim)
    url = node.peer_url.replace("http://", "ws://") + \
        f"/p2p/channels/{sim.terms.channel_id.hex()}/stream"
    async with node.http.ws_connect(url) as ws:
        for nonce in (1, 2):
            await asyncio.sleep(1.2)
            await ws.send_bytes(payer.pay((1_000, 1)).encode())
            frame = await ws.receive(timeout=10)
            assert frame.type is aiohttp.WSMsgType.BINARY, frame
            receipt = decode_message(frame.data)
            assert isinstance(receipt, Receipt)
            assert receipt.nonce == nonce
