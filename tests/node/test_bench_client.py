"""The bench's own HTTP/1.1 client of the admin API (node.bench_admin.AdminClient), against a
real aiohttp server on loopback: what it sends, the answers it reads (sized, chunked, closed),
and the keep-alive connections it reuses."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.bench_admin import AdminClient


async def _server(handler: Any) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_it_sends_the_token_and_the_json_body_and_reads_the_answer() -> None:
    seen: list[tuple[str, str, str, Any]] = []
    peers: set[Any] = set()

    async def handler(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.path, request.headers["Authorization"], body))
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response({"echo": body, "n": len(seen)})

    server = await _server(handler)
    client = AdminClient(server.port, "s3cret")  # type: ignore[arg-type]
    try:
        first = await client.call("POST", "/api/channels/ab/pay", {"units": {"km": "1"}})
        second = await client.call("GET", "/api/status")
    finally:
        await client.close()
        await server.close()
    assert first == {"echo": {"units": {"km": "1"}}, "n": 1}
    assert second == {"echo": None, "n": 2}
    assert seen == [("POST", "/api/channels/ab/pay", "Bearer s3cret", {"units": {"km": "1"}}),
                    ("GET", "/api/status", "Bearer s3cret", None)]
    assert len(peers) == 1  # the second call reused the first call's connection


async def test_an_error_answer_raises_with_its_status_and_body() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "NOTHING_TO_PAY"}}, status=400)

    server = await _server(handler)
    client = AdminClient(server.port, "t")  # type: ignore[arg-type]
    try:
        with pytest.raises(RuntimeError, match=r"400 .*NOTHING_TO_PAY"):
            await client.call("POST", "/api/channels/ab/pay", {})
        # the connection stays usable after an error answer
        assert client.idle
    finally:
        await client.close()
        await server.close()


async def test_a_chunked_answer_and_a_closed_connection_are_read_whole() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/chunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            resp.content_type = "application/json"
            await resp.prepare(request)
            for part in (b'{"parts": [', b'"a", ', b'"b"]}'):
                await resp.write(part)
            await resp.write_eof()
            return resp
        resp = web.json_response({"closed": True})
        resp.force_close()
        return resp

    server = await _server(handler)
    client = AdminClient(server.port, "t")  # type: ignore[arg-type]
    try:
        assert await client.call("GET", "/chunked") == {"parts": ["a", "b"]}
        assert len(client.idle) == 1
        assert await client.call("GET", "/close") == {"closed": True}
        assert client.idle == []  # "Connection: close": not kept
        assert await client.call("GET", "/chunked") == {"parts": ["a", "b"]}
    finally:
        await client.close()
        await server.close()


async def test_a_kept_connection_the_server_closed_is_replaced_once() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"call": calls})

    server = await _server(handler)
    client = AdminClient(server.port, "t")  # type: ignore[arg-type]
    try:
        assert await client.call("GET", "/a") == {"call": 1}
        assert len(client.idle) == 1
        await server.close()  # every kept connection goes with the server
        server = await _server(handler)
        client.port = server.port  # type: ignore[assignment]
        assert await client.call("GET", "/b") == {"call": 2}
        assert calls == 2  # once on the new connection, not twice
    finally:
        await client.close()
        await server.close()
