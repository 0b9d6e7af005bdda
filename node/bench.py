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
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

SCHEMA = "meterline-bench/1"
LIGHTNING_BEST = 89.0
"""Payments/s, Eclair 0.6.1 + SQLite, the best of Bottlepay's published Lightning benchmark."""
RAIDEN_SIMULATED = 164.0
"""Transfers/s, Raiden's own simulated 3-node figure (docs/Thoughts-on-Performance.md)."""
SOURCES = {
    "lightning": "Bottlepay lightning-benchmark (2021), published: Lightning nodes 33-89 "
                 "payments/s, best Eclair 0.6.1 + SQLite 89/s (reference/channels.md §1)",
    "raiden": "Raiden docs/Thoughts-on-Performance.md, published: 164 transfers/s simulated "
              "with 3 nodes, no real network (reference/channels.md §2)",
}
TARIFF = "message=0.000001"
"""The bench channel's tariff: one message costs 0.000001 EUR, so millions of units fit in the
deposit and no update is refused for capacity."""
UNIT = "message"
UNITS_PER_AGGREGATE = 1_000
TARGET_UPDATES = 5_000.0
TARGET_RATIO = 0.5
TARGET_UNITS = 1_000_000.0
TARGET_P50_MS = 1.0
TARGET_P99_MS = 5.0
PACED_RATE = 1_000.0
SCALE_TARGET_CHANNELS = 10_000
SCALE_TARGET_RSS_MB = 300.0
SCALE_TARGET_RESTART_S = 3.0
MIN_EXTRAPOLATE = 50

Say = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``quick`` keeps the whole run around 20 s."""

    updates: int
    aggregated_updates: int
    verify_seconds: float
    paced_updates: int
    unloaded_updates: int
    scale_channels: int

    @classmethod
    def make(cls, *, quick: bool, updates: int | None = None,
             scale_channels: int | None = None) -> Plan:
        n = updates if updates is not None else (3_000 if quick else 20_000)
        return cls(
            updates=n,
            aggregated_updates=max(1, n // 2),
            verify_seconds=0.5 if quick else 2.0,
            paced_updates=300 if quick else 2_000,
            unloaded_updates=50 if quick else 300,
            scale_channels=scale_channels if scale_channels is not None else (
                5 if quick else 100),
        )


# -- small helpers ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank of sorted `values`."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def target(text: str, op: str | None = None, value: float | None = None,
           unit: str | None = None) -> dict[str, Any]:
    return {"text": text, "op": op, "value": value, "unit": unit}


def figure(value: float, unit: str, measured: str, tgt: dict[str, Any],
           **extra: Any) -> dict[str, Any]:
    met: bool | None = None
    if tgt["op"] == ">=":
        met = value >= tgt["value"]
    elif tgt["op"] == "<=":
        met = value <= tgt["value"]
    return {"value": value, "unit": unit, "target": tgt, "met": met, "measured": measured,
            **extra}


# -- 1. the verify ceiling --------------------------------------------------------------------


def verify_ceiling(seconds: float) -> dict[str, float]:
    """Verifications/s of one real BalanceProof, in this process, on one core."""
    from protocol import channel as ch
    from protocol.crypto import ed25519_verify, signing_input
    from protocol.messages import BalanceProof
    from protocol.simulation import Simulation
    from protocol.tariff import parse_tariff_line
    from protocol.types import Amount, Quantity

    sim = Simulation.create(tariff=(parse_tariff_line(TARIFF, scale=6),),
                            opener_deposit=10**12)
    sim.open()
    t = ch.step(sim.states[0], ch.ActionPay(sim.opener, (Quantity(1000),), Amount(0), ""),
                now_ms=sim.tick())
    effect = t.effects[0]
    assert isinstance(effect, ch.SendProof)
    proof: BalanceProof = effect.proof
    sender = proof.sender

    def rate(fn: Callable[[], object]) -> float:
        for _ in range(200):  # warm up
            fn()
        count, batch = 0, 250
        start = time.perf_counter()
        while True:
            for _ in range(batch):
                fn()
            count += batch
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return count / elapsed

    message, signature = signing_input(proof.DOMAIN, proof.body()), proof.signature
    return {
        "proof": rate(lambda: proof.verify_signature(sender)),
        "raw": rate(lambda: ed25519_verify(sender, message, signature)),
    }


# -- paced load -------------------------------------------------------------------------------


@dataclass
class Paced:
    offered: int = 0
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    saturated: bool = False

    @property
    def achieved_per_s(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0


async def paced(call: Callable[[], Awaitable[object]], *, rate: float, count: int,
                max_backlog_s: float = 0.5) -> Paced:
    """Open loop: start one `call` every 1/rate s, each timed from its start to its return.

    When more than `max_backlog_s` worth of calls are still waiting, the system cannot keep the
    rate: stop offering (``saturated``) and let the ones in flight finish."""
    result = Paced()
    backlog = max(1, int(rate * max_backlog_s))
    in_flight = 0

    async def one() -> None:
        nonlocal in_flight
        started = time.perf_counter()
        try:
            await call()
        finally:
            in_flight -= 1
        result.latencies_s.append(time.perf_counter() - started)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= backlog:
            result.saturated = True
            break
        in_flight += 1
        tasks.append(asyncio.create_task(one()))
    result.offered = len(tasks)
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - start
    return result


async def sequential(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out


def latency_figures(load: Paced, unloaded: list[float], where: str,
                    measured: str) -> dict[str, Any]:
    lat = [x * 1000 for x in load.latencies_s]
    base = [x * 1000 for x in unloaded]
    note = (f"paced at {PACED_RATE:,.0f} updates/s (open loop): {load.offered} offered, "
            f"{len(lat)} completed at {load.achieved_per_s:,.0f}/s"
            + ("; SATURATED: the node could not keep 1,000/s, so these latencies include "
               "the queue" if load.saturated else ""))
    return {
        "where": where,
        "offered_rate_per_s": PACED_RATE,
        "offered": load.offered,
        "completed": len(lat),
        "achieved_rate_per_s": round(load.achieved_per_s, 1),
        "saturated": load.saturated,
        "p50": figure(round(percentile(lat, 0.50), 3), "ms", f"{measured}; {note}",
                      target("p50 ≤ 1 ms at 1,000 updates/s", "<=", TARGET_P50_MS, "ms")),
        "p99": figure(round(percentile(lat, 0.99), 3), "ms", f"{measured}; {note}",
                      target("p99 ≤ 5 ms at 1,000 updates/s", "<=", TARGET_P99_MS, "ms")),
        "unloaded_p50_ms": round(percentile(base, 0.50), 3),
        "unloaded_p99_ms": round(percentile(base, 0.99), 3),
        "unloaded_mean_ms": round(statistics.fmean(base), 3) if base else 0.0,
        "unloaded_count": len(base),
    }


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
    ceiling = verify_ceiling(plan.verify_seconds)

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


def build_report(plan: Plan, ceiling: dict[str, float], measured: dict[str, Any],
                 scale: dict[str, Any] | None, scale_error: str, *, quick: bool,
                 scale_asked: bool = True) -> dict[str, Any]:
    ceil = round(ceiling["proof"], 1)
    upd = measured["updates"]
    updates_per_s = round(upd["count"] / upd["seconds"], 1)
    agg = measured["aggregated"]
    agg_updates_per_s = round(agg["count"] / agg["seconds"], 1)
    units_per_s = round(agg_updates_per_s * UNITS_PER_AGGREGATE, 1)
    ratio = round(updates_per_s / ceil, 4)
    stream_load, stream_unloaded = measured["latency"]
    admin_load, admin_unloaded = measured["admin_latency"]

    figures: dict[str, Any] = {
        "verify_ceiling": figure(
            ceil, "verifications/s",
            "BalanceProof.verify_signature (canonical body encoding + Ed25519 verify, "
            "cryptography/OpenSSL) of one real proof in a loop, this process, one core",
            target("none: the reference the signed-updates ratio is taken against"),
            raw_ed25519_per_s=round(ceiling["raw"], 1)),
        "signed_updates": figure(
            updates_per_s, "updates/s",
            f"POST /api/channels/{{id}}/pay with repeat={upd['count']}, 1 {UNIT} per update, "
            "timed by the client from the request to the response (the API answers once the "
            "receiver's receipt covers the last update); every update signed by the sender, "
            "verified and committed (SQLite WAL, synchronous=FULL) by the receiver before its "
            "receipt; two node processes on loopback, one channel",
            target("≥ 5,000/s and ≥ 0.5 × the verify ceiling", ">=", TARGET_UPDATES,
                   "updates/s"),
            updates=upd["count"], seconds=round(upd["seconds"], 3),
            ratio_to_ceiling=ratio,
            ratio_target=target("≥ 0.5 × verify ceiling", ">=", TARGET_RATIO, "ratio"),
            ratio_met=ratio >= TARGET_RATIO),
        "metered_units": figure(
            units_per_s, "units/s",
            f"POST /pay with repeat={agg['count']}, each update (one signed proof) carrying "
            f"{UNITS_PER_AGGREGATE:,} {UNIT} units; units/s = updates/s × "
            f"{UNITS_PER_AGGREGATE:,}",
            target("≥ 1,000,000 units/s", ">=", TARGET_UNITS, "units/s"),
            units_per_update=UNITS_PER_AGGREGATE, updates=agg["count"],
            seconds=round(agg["seconds"], 3), updates_per_s=agg_updates_per_s),
        "latency": latency_figures(
            stream_load, stream_unloaded, "stream (inside the node)",
            "send → receipt of one update: the sender's ChannelService.pay(repeat=1) run in "
            "the bench process on the sender's data directory (the sender daemon stopped), "
            "timed from the call to its return (sign + commit, WebSocket, receiver verify + "
            "commit + receipt, sender commits the receipt), no admin HTTP"),
        "admin_latency": latency_figures(
            admin_load, admin_unloaded, "admin API",
            "POST /api/channels/{id}/pay with one update, timed by an HTTP client from the "
            "request to the response (includes the admin HTTP round trip and the JSON "
            "channel detail the API returns)"),
    }
    comparison = {
        "updates_per_s": updates_per_s,
        "lightning_best_published_per_s": LIGHTNING_BEST,
        "raiden_simulated_published_per_s": RAIDEN_SIMULATED,
        "ratio_to_lightning": round(updates_per_s / LIGHTNING_BEST, 2),
        "ratio_to_raiden": round(updates_per_s / RAIDEN_SIMULATED, 2),
        "sources": SOURCES,
        "note": "published figures from other systems, other hardware and other workloads "
                "(Lightning: invoice payments with HTLCs; Raiden: simulated, no network); "
                "not re-measured here",
    }
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "executable": sys.executable},
        "setup": "a sandbox bank, an arbiter and two meterline node processes on loopback "
                 "(node.cluster.start_companies), one channel, SQLite WAL synchronous=FULL",
        "figures": figures,
        "comparison": comparison,
        "scale": scale_report(scale, scale_error, asked=scale_asked),
    }
    return report


def scale_report(scale: dict[str, Any] | None, error: str, *, asked: bool) -> dict[str, Any]:
    if scale is None:
        reason = error or ("not requested (--no-scale)" if not asked else "not run")
        return {"measured": False, "reason": reason}
    per_channel = ((scale["rss_after_mb"] - scale["rss_before_mb"]) / scale["opened_now"]
                   if scale["opened_now"] else 0.0)
    extrapolated: float | None = None
    if scale["opened_now"] >= MIN_EXTRAPOLATE:
        extrapolated = round(scale["rss_before_mb"] + per_channel * SCALE_TARGET_CHANNELS, 1)
    return {
        "measured": True,
        "channels_open": scale["channels_open"],
        "measured_how": f"{scale['opened_now']} more channels opened on one receiver (each "
                        "funded through the sandbox bank and confirmed by the arbiter, OPEN on "
                        "both sides); RSS of the receiver process from /proc; restart = SIGTERM, "
                        "start the process, time until the admin API answers /api/status",
        "open_seconds": round(scale["open_seconds"], 2),
        "rss": figure(round(scale["rss_after_mb"], 1), "MB",
                      f"receiver RSS with {scale['channels_open']} open channels",
                      target("10,000 open channels in ≤ 300 MB RSS", "<=",
                             SCALE_TARGET_RSS_MB, "MB"),
                      rss_before_mb=round(scale["rss_before_mb"], 1),
                      rss_after_restart_mb=round(scale["rss_restarted_mb"], 1),
                      per_channel_kb=round(per_channel * 1024, 1),
                      extrapolated_10k_mb=extrapolated,
                      note="measured at the channel count shown, not at 10,000; the "
                           "extrapolation is linear and only indicative (none below "
                           f"{MIN_EXTRAPOLATE} channels: noise dominates)"),
        "restart": figure(round(scale["restart_s"], 3), "s",
                          f"receiver restart with {scale['restart_open']} open channels",
                          target("restart with 10,000 channels in ≤ 3 s", "<=",
                                 SCALE_TARGET_RESTART_S, "s"),
                          stop_s=round(scale["stop_s"], 3),
                          note="measured at the channel count shown, not at 10,000; time from "
                               "starting the process until /api/status answers (the sender "
                               "was stopped first, so no live inbound stream)"),
    }
