"""A real mock-bank process and a misbehaving stand-in for it, shared by the file-rail suites.

`MockBank` runs the `mock-bank` console script on loopback with its own SQLite file and a pinned
clock; `FlakyBank` is a tiny aiohttp server in front of it that times out, answers 5xx or
garbage on demand, which is what a broken bank looks like from the adapter's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support import free_port, running, venv_bin

BANK_CLOCK = "2026-10-01T09:00"  # a Thursday, before the 15:00 cutoff


@dataclass
class MockBank:
    url: str
    log: Path

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            kwargs: dict[str, Any] = {}
            if isinstance(body, (bytes, str)):
                kwargs["data"] = body
            elif body is not None:
                kwargs["json"] = body
            async with s.request(method, self.url + path, **kwargs) as r:
                raw = await r.read()
                try:
                    return r.status, json.loads(raw)
                except ValueError:
                    return r.status, raw.decode()

    async def patch_account(self, account: str, **fields: Any) -> None:
        status, body = await self.call("PATCH", f"/_mock/accounts/{account}", fields)
        assert status == 200, body

    async def advance(self, days: int) -> None:
        status, body = await self.call("POST", f"/_mock/advance?days={days}")
        assert status == 200, body

    async def payments_with(self, end_to_end_id: str) -> list[dict[str, Any]]:
        status, body = await self.call("GET", f"/_mock/payments/{end_to_end_id}?all")
        if status == 404:
            return []
        assert status == 200, body
        return list(body)

    async def payment_posts(self) -> int:
        """How many files reached POST /payments (the bank's own request log)."""
        status, body = await self.call("GET", "/_mock/requests?path=/payments")
        assert status == 200, body
        rows = body if isinstance(body, list) else body.get("requests", [])
        return sum(1 for r in rows if r.get("method") == "POST")

    async def messages(self, prefix: str) -> list[dict[str, Any]]:
        status, body = await self.call("GET", f"/_mock/messages?type={prefix}")
        assert status == 200, body
        return list(body)

    async def validate(self, data: bytes) -> tuple[int, str]:
        status, body = await self.call("POST", "/_mock/validate", data)
        return status, body if isinstance(body, str) else json.dumps(body)


@contextlib.contextmanager
def mock_bank(tmp_path: Path, *extra: str) -> Iterator[MockBank]:
    port = free_port()
    log = tmp_path / "mock-bank.log"
    argv = [venv_bin("mock-bank"), "--host", "127.0.0.1", "--port", str(port),
            "--db", str(tmp_path / "bank.db"), "--clock", BANK_CLOCK, "-q", *extra]
    with running(argv, port=port, log=log):
        yield MockBank(f"http://127.0.0.1:{port}", log)


@dataclass
class FlakyBank:
    """Loopback aiohttp server standing in for a broken bank in front of the real one.

    `plan` is consumed one item per POST /payments: "503" answers 503 without forwarding,
    "lost" forwards to the real bank and then answers 504 (the answer is lost), "hang" sleeps
    past any client timeout, "garbage" answers 202 with a body that is not JSON, "ok"
    forwards. When the plan is empty every request is forwarded. `xml_garbage` replaces
    every message body in GET /_mock/messages with it.
    """

    upstream: str
    plan: list[str] = field(default_factory=list)
    posted: list[bytes] = field(default_factory=list)
    xml_garbage: str | None = None
    extra_messages: list[dict[str, Any]] = field(default_factory=list)
    """Messages appended to every GET /_mock/messages listing whose type they match (what
    another bank sends that mock-bank never writes, such as an RDFI's notification of change)."""
    url: str = ""
    _runner: web.AppRunner | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
        async with aiohttp.ClientSession() as s, s.request(
            request.method, self.upstream + request.path_qs, data=body or None,
            headers={"Content-Type": request.headers.get("Content-Type", "")},
        ) as r:
            return r.status, await r.read(), r.headers.get("Content-Type", "")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and request.path == "/payments":
            self.posted.append(body)
            step = self.plan.pop(0) if self.plan else "ok"
            if step == "503":
                return web.Response(status=503, text="service unavailable")
            if step == "hang":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 30)
                return web.Response(status=504, text="too late")
            if step == "garbage":
                return web.Response(status=202, text="<html>gateway says hi</html>")
            if step == "lost":
                await self._forward(request, body)
                return web.Response(status=504, text="gateway timeout")
        status, payload, ctype = await self._forward(request, body)
        if self.xml_garbage is not None and request.path == "/_mock/messages":
            listing = json.loads(payload)
            for item in listing:
                item["body"] = self.xml_garbage
            payload = json.dumps(listing).encode()
        if self.extra_messages and request.path == "/_mock/messages":
            wanted = request.query.get("type", "")
            listing = json.loads(payload) + [m for m in self.extra_messages
                                             if m["type"].startswith(wanted)]
            payload = json.dumps(listing).encode()
        return web.Response(status=status, body=payload, content_type=ctype.split(";")[0]
                            or "application/octet-stream")

    async def start(self) -> FlakyBank:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
