"""``latency_floor_ms``: what one update cannot go below on this machine, measured in the run.

One update from an admin call to its receipt needs at least: the sender signs a BalanceProof, the
receiver verifies it, each side commits durably once (the receiver the proof, the sender the
receipt), and the proof and its receipt cross one WebSocket (one loopback round trip). Each part
is timed here on its own, with the node's own tools (the per-update Ed25519 library, SQLite in
WAL mode with ``synchronous=FULL``, aiohttp on loopback), and the floor is the sum of the parts'
medians (ADR 0310). Nothing of the node's own work (decoding, checks, the state machine, the
admin HTTP) is in it: that is the overhead the latency targets allow for."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node.measure import bench_proof

COMMITS = 2
"""Durable commits per update: the receiver's (the proof) and the sender's (the receipt)."""


def _median_ms(fn: Callable[[], object], samples: int) -> float:
    for _ in range(min(20, samples)):  # warm up
        fn()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def durable_commit_ms(samples: int, body: bytes) -> float:
    """One small row inserted and committed, SQLite WAL + synchronous=FULL (like the node)."""
    with tempfile.TemporaryDirectory(prefix="meterline-floor-") as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.sqlite3", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE proof (nonce INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            nonce = iter(range(1, 10**9))

            def commit() -> None:
                db.execute("BEGIN")
                db.execute("INSERT INTO proof VALUES (?, ?)", (next(nonce), body))
                db.execute("COMMIT")

            return _median_ms(commit, samples)
        finally:
            db.close()


async def websocket_rtt_ms(samples: int, body: bytes) -> float:
    """One binary frame of `body` to an aiohttp WebSocket echo server on loopback and back."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(frame.data)
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"ws://127.0.0.1:{port}/echo") as ws:
            times = []
            for i in range(samples + min(20, samples)):
                started = time.perf_counter()
                await ws.send_bytes(body)
                frame = await ws.receive()
                if frame.data != body:
                    raise RuntimeError(f"the echo answered {frame.type}")
                if i >= min(20, samples):  # after the warm-up
                    times.append(time.perf_counter() - started)
            await ws.close()
    finally:
        await runner.cleanup()
    return statistics.median(times) * 1000


def latency_floor(samples: int, tariff: str) -> dict[str, Any]:
    """The parts of the floor (medians of `samples` each, in ms) and their sum, ``value``."""
    proof, signer = bench_proof(tariff)
    body = proof.encode()
    sign_ms = _median_ms(lambda: proof.signed_by(signer), samples)
    verify_ms = _median_ms(lambda: proof.verify_signature(proof.sender), samples)
    commit_ms = durable_commit_ms(samples, body)
    ws_ms = asyncio.run(websocket_rtt_ms(samples, body))
    total = sign_ms + verify_ms + COMMITS * commit_ms + ws_ms
    return {"value": round(total, 4), "sign_ms": round(sign_ms, 4),
            "verify_ms": round(verify_ms, 4), "commit_ms": round(commit_ms, 4),
            "commits": COMMITS, "websocket_rtt_ms": round(ws_ms, 4), "samples": samples,
            "proof_bytes": len(body)}
