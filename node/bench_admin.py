"""The admin API as the bench drives it: an asynchronous client, and the two figures measured
through it on one channel (signed updates with ``repeat``, and single updates one at a time and
paced), shared by the SQLite run (:mod:`node.bench`) and the PostgreSQL one
(:mod:`node.bench_pg`)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from node.bench_figures import PACED_RATE, UNIT, Plan, Say
from node.measure import paced, sequential


class AdminClient:
    """The bench's HTTP/1.1 client of the admin API: JSON in and out, keep-alive connections
    reused (one per call in flight), nothing else.

    The bench's load shares the machine's two cores with both nodes, so its client should cost
    as little as it can: aiohttp's client took about 0.33 ms of CPU per call at 1,000 calls/s,
    a fifth of a core taken from the nodes it measures; this one about a third of that. What is
    timed is the same: a request written to the admin port and its whole answer read back."""

    def __init__(self, port: int, token: str, *, timeout_s: float = 600.0) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.headers = (f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                        "Content-Type: application/json\r\n")
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        request = (f"{method} {path} HTTP/1.1\r\n{self.headers}"
                   f"Content-Length: {len(data)}\r\n\r\n").encode() + data
        async with asyncio.timeout(self.timeout_s):
            if self.idle:
                reader, writer = self.idle.pop()
                try:
                    answer = await self._exchange(reader, writer, request)
                except (ConnectionError, asyncio.IncompleteReadError):
                    writer.close()  # closed by the server while idle: once on a new one
                    answer = await self._fresh(request)
            else:
                answer = await self._fresh(request)
        status, raw = answer
        data_out = json.loads(raw) if raw else None
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {data_out}")
        return data_out

    async def _fresh(self, request: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return await self._exchange(reader, writer, request)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        request: bytes) -> tuple[int, bytes]:
        writer.write(request)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("the admin API closed the connection")
        length: int | None = None
        keep = True
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                keep = value != "close"
        if chunked:
            raw = b""
            while size := int((await reader.readline()).split(b";")[0], 16):
                raw += (await reader.readexactly(size + 2))[:-2]  # the chunk, its CRLF off
            await reader.readline()
        elif length is not None:
            raw = await reader.readexactly(length)
        else:
            raw, keep = await reader.read(), False
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return int(status_line.split()[1]), raw

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def pay_repeat(admin: AdminClient, cid: str, repeat: int,
                     units: int = 1) -> dict[str, float]:
    """One ``POST /pay`` of `repeat` updates of `units` each: the updates the sender's nonce
    moved by (every one receipted when the call returns) and the seconds it took."""
    before = await admin.call("GET", f"/api/channels/{cid}")
    started = time.perf_counter()
    after = await admin.call("POST", f"/api/channels/{cid}/pay",
                             {"units": {UNIT: str(units)}, "repeat": repeat})
    elapsed = time.perf_counter() - started
    return {"count": int(after["nonce_sent"]) - int(before["nonce_sent"]), "seconds": elapsed}


async def updates_and_latency(admin: AdminClient, cid: str, plan: Plan,
                              say: Say) -> dict[str, Any]:
    """Signed updates/s (``repeat``) and single-update latency through the admin API: the
    figures both storage back ends are measured with."""
    path = f"/api/channels/{cid}/pay"
    say("warming up the channel")
    await admin.call("POST", path, {"units": {UNIT: "1"}, "repeat": 200})
    say(f"signed updates: {plan.updates:,} updates of 1 {UNIT} each")
    out: dict[str, Any] = {"updates": await pay_repeat(admin, cid, plan.updates)}

    async def single() -> None:
        await admin.call("POST", path, {"units": {UNIT: "1"}})

    say(f"admin latency: {plan.unloaded_updates} single updates one after another")
    unloaded = await sequential(single, plan.unloaded_updates)
    say(f"admin latency: single updates paced at {PACED_RATE:,.0f}/s")
    load = await paced(single, rate=PACED_RATE, count=plan.paced_updates)
    out["admin_latency"] = (load, unloaded)
    return out
