"""The admin API as the bench drives it: an asynchronous client, and the two figures measured
through it on one channel (signed updates with ``repeat``, and single updates one at a time and
paced), shared by the SQLite run (:mod:`node.bench`) and the PostgreSQL one
(:mod:`node.bench_pg`)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from node.bench_figures import PACED_RATE, UNIT, Plan, Say
from node.measure import paced, sequential


class AdminClient:
    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=600))

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.session.request(method, self.base + path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    async def close(self) -> None:
        await self.session.close()


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
