"""``meterline bench``: the figures of DESIGN §8, measured on this machine.

Everything runs for real: a sandbox bank, an arbiter and two ``meterline`` node processes on
loopback (:func:`node.cluster.start_companies`) in a temporary directory, one channel opened
through the bank and the arbiter, updates sent through the admin API and the per-channel
WebSocket stream, each verified and durably committed (SQLite WAL, synchronous=FULL) by the
receiver before its signed receipt. Nothing is simulated except where a figure says so.

The figures (see :func:`run`):

1. the Ed25519 verify ceiling: ``BalanceProof.verify_signature`` per second, one process, one
   core: the number the throughput is compared to;
2. signed updates/s, one update per unit (``POST /pay`` with ``repeat``);
3. metered units/s when one proof carries 1,000 units;
4. the latency of one update while paced at 1,000 updates/s, inside the node (the sender's
   ``ChannelService.pay`` against the real receiver process) and through the admin API;
5. the ratio of (2) to published Lightning and Raiden figures;
6. scale: N open channels, the receiver's RSS and its restart time.

The result is a plain JSON-able dict with a stable layout (``SCHEMA``); speed is reported here,
never asserted by tests.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from node.bench_figures import (
    PACED_RATE,
    TARIFF,
    UNIT,
    UNITS_PER_AGGREGATE,
    Plan,
    Say,
    build_report,
)
from node.measure import paced, rss_mb, sequential, verify_ceiling

# -- the admin API, asynchronously ------------------------------------------------------------


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


# -- the run ----------------------------------------------------------------------------------


def _quiet_logs() -> None:
    from node.logs import configure_logging

    configure_logging(json=True, level="error")
    logging.getLogger().setLevel(logging.ERROR)


async def _admin_phase(companies: Any, cid: str, plan: Plan, say: Say) -> dict[str, Any]:
    man = companies.manufacturer
    admin = AdminClient(man.admin_port, man.token)
    path = f"/api/channels/{cid}/pay"
    out: dict[str, Any] = {}
    try:
        say("warming up the channel")
        await admin.call("POST", path, {"units": {UNIT: "1"}, "repeat": 200})

        say(f"signed updates: {plan.updates:,} updates of 1 {UNIT} each")
        before = await admin.call("GET", f"/api/channels/{cid}")
        started = time.perf_counter()
        after = await admin.call("POST", path, {"units": {UNIT: "1"}, "repeat": plan.updates})
        elapsed = time.perf_counter() - started
        sent = int(after["nonce_sent"]) - int(before["nonce_sent"])
        out["updates"] = {"count": sent, "seconds": elapsed}

        n_agg = plan.aggregated_updates
        say(f"metered units: {n_agg:,} updates of {UNITS_PER_AGGREGATE:,} {UNIT}s each")
        before = after
        started = time.perf_counter()
        after = await admin.call("POST", path, {"units": {UNIT: str(UNITS_PER_AGGREGATE)},
                                                "repeat": n_agg})
        elapsed = time.perf_counter() - started
        sent = int(after["nonce_sent"]) - int(before["nonce_sent"])
        out["aggregated"] = {"count": sent, "seconds": elapsed}

        say(f"admin latency: {plan.unloaded_updates} single updates one after another")

        async def single() -> None:
            await admin.call("POST", path, {"units": {UNIT: "1"}})

        unloaded = await sequential(single, plan.unloaded_updates)
        say(f"admin latency: single updates paced at {PACED_RATE:,.0f}/s")
        load = await paced(single, rate=PACED_RATE, count=plan.paced_updates)
        out["admin_latency"] = (load, unloaded)
    finally:
        await admin.close()
    return out


async def _scale_phase(companies: Any, plan: Plan, say: Say) -> dict[str, Any]:
    """Open `plan.scale_channels` more channels (each funded through the bank and confirmed
    by the arbiter), then measure the receiver's RSS and restart it."""
    from node.cluster import wait_port

    man, car = companies.manufacturer, companies.carrier
    assert car.process is not None
    rss_before = rss_mb(car.process.pid)
    admin = AdminClient(man.admin_port, man.token)
    n = plan.scale_channels
    opened: list[str] = []
    sem = asyncio.Semaphore(8)
    started = time.perf_counter()
    try:
        async def open_one() -> None:
            async with sem:
                body = {"peer": car.node_id, "arbiter": companies.arbiter.node_id,
                        "deposit": "1.00 EUR", "tariff": [TARIFF]}
                opened.append((await admin.call("POST", "/api/channels", body))["id"])
                say(f"scale: {len(opened)}/{n} channels proposed")

        await asyncio.gather(*(open_one() for _ in range(n)))
        deadline = time.monotonic() + max(60.0, n * 0.5)
        while True:
            listing = await admin.call("GET", "/api/channels")
            phases = {c["id"]: c["phase"] for c in listing["channels"]}
            n_open = sum(1 for cid in opened if phases.get(cid) == "open")
            say(f"scale: {n_open}/{n} channels open on the sender")
            if n_open == n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n_open} of {n} channels opened")
            await asyncio.sleep(0.25)
        car_admin = AdminClient(car.admin_port, car.token)
        try:
            while True:
                status = await car_admin.call("GET", "/api/status")
                car_open = int(status["channels"].get("open", 0))
                if car_open >= n + 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
        finally:
            await car_admin.close()
    finally:
        await admin.close()
    open_seconds = time.perf_counter() - started
    rss_after = rss_mb(car.process.pid)

    # the sender goes first, so the receiver restarts without a live inbound stream (what is
    # timed is the receiver coming back with its channels; the sender's own node code then
    # runs in this process for the stream-level latency)
    say(f"scale: restarting the receiver with {car_open} open channels")
    man.stop()
    started = time.perf_counter()
    car.stop()
    stop_s = time.perf_counter() - started
    started = time.perf_counter()
    car.start(timeout_s=120)
    wait_port(car.admin_port, 60)
    car_admin = AdminClient(car.admin_port, car.token)
    try:
        status = await car_admin.call("GET", "/api/status")
    finally:
        await car_admin.close()
    restart_s = time.perf_counter() - started
    assert car.process is not None
    rss_restarted = rss_mb(car.process.pid)
    return {"channels_open": car_open, "opened_now": n, "open_seconds": open_seconds,
            "rss_before_mb": rss_before, "rss_after_mb": rss_after,
            "rss_restarted_mb": rss_restarted, "restart_s": restart_s, "stop_s": stop_s,
            "restart_open": int(status["channels"].get("open", 0))}


async def _node_phase(companies: Any, cid: str, plan: Plan, say: Say) -> dict[str, Any]:
    """The sender's own node code (ChannelService.pay) in this process, against the real
    receiver process: stream-level latency without the admin HTTP round trip."""
    from node.app import Node
    from node.config import load_config

    man = companies.manufacturer
    man.stop()  # one writer per data directory: the bench process becomes the manufacturer
    # (already stopped when the scale phase ran)
    node = Node(load_config(man.directory))
    await node.start()
    service = node.channels
    quantity = [1000]  # 1 message at the default quantity scale 3
    try:
        await service.pay(cid, quantities=quantity, repeat=50)

        async def single() -> None:
            await service.pay(cid, quantities=quantity, repeat=1)

        say(f"stream latency: {plan.unloaded_updates} single updates one after another")
        unloaded = await sequential(single, plan.unloaded_updates)
        say(f"stream latency: single updates paced at {PACED_RATE:,.0f}/s")
        load = await paced(single, rate=PACED_RATE, count=plan.paced_updates)
    finally:
        await node.stop()
    return {"latency": (load, unloaded)}


def run(*, quick: bool = False, updates: int | None = None, scale: bool = True,
        scale_channels: int | None = None, say: Say | None = None,
        root: Path | None = None) -> dict[str, Any]:
    """Run every measurement and return the report (see the module docstring)."""
    from node.cluster import start_companies

    plan = Plan.make(quick=quick, updates=updates, scale_channels=scale_channels)
    tell: Say = say or (lambda _text: None)
    total_started = time.perf_counter()
    tell(f"Ed25519 verify ceiling ({plan.verify_seconds:.1f} s)")
    ceiling = verify_ceiling(plan.verify_seconds, TARIFF)

    own_root = root is None
    work = root or Path(tempfile.mkdtemp(prefix="meterline-bench-"))
    tell(f"starting a bank, an arbiter and two nodes in {work}")
    _quiet_logs()
    companies = start_companies(work, manufacturer_balance=100_000_000, say=None)
    try:
        tell("opening the bench channel through the bank and the arbiter")
        cid = companies.open_channel(tariff=[TARIFF])
        measured = asyncio.run(_admin_phase(companies, cid, plan, tell))
        scale_result: dict[str, Any] | None = None
        scale_error = ""
        if scale and plan.scale_channels > 0:
            try:
                scale_result = asyncio.run(_scale_phase(companies, plan, tell))
            except Exception as exc:  # an optional figure: report the failure, do not fail
                scale_error = f"{type(exc).__name__}: {exc}"
        measured.update(asyncio.run(_node_phase(companies, cid, plan, tell)))
    finally:
        tell("stopping the daemons")
        companies.cluster.stop()
        if own_root:
            shutil.rmtree(work, ignore_errors=True)
    report = build_report(plan, ceiling, measured, scale_result, scale_error,
                          quick=quick, scale_asked=scale)
    report["run_seconds"] = round(time.perf_counter() - total_started, 1)
    return report
