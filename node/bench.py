"""``meterline bench``: the figures of DESIGN §8 and issue 13, measured on this machine.

Everything runs for real: a sandbox bank, an arbiter and two ``meterline`` node processes on
loopback (:func:`node.cluster.start_companies`) in a temporary directory, one channel opened
through the bank and the arbiter, updates sent through the admin API and the per-channel
WebSocket stream, each verified and durably committed (SQLite WAL, synchronous=FULL) by the
receiver before its signed receipt. Nothing is simulated except where a figure says so.

The figures (see :func:`run`):

1. the Ed25519 verify ceiling of both libraries, one process, one core: the reference the
   throughput is compared to; and the latency floor (:mod:`node.bench_floor`);
2. signed updates/s, one update per unit (``POST /pay`` with ``repeat``);
3. metered units/s when one proof carries 1,000 units;
4. the latency of one update while paced at 1,000 updates/s, through the admin API
   (:mod:`node.bench_admin`) and inside the node (the sender's ``ChannelService.pay`` against
   the real receiver process);
4b. usage events/s through ``POST /events`` in batches of 100 (each deduplicated, priced,
   signed into a shared proof, committed and receipted), beside one request per event;
5. the ratio of (2) to published Lightning and Raiden figures;
6. scale: N open channels, RSS, the restart time until the first update is served, and the
   curve of aggregate updates/s over 1, 10 and 100 channels (:mod:`node.bench_scale`);
7. with ``pg_url``: (2) and (4) again with every daemon on PostgreSQL (:mod:`node.bench_pg`).

The result is a plain JSON-able dict with a stable layout (``SCHEMA``) whose ``targets`` table
(:mod:`node.bench_targets`) says of each figure whether it met its target; speed is reported
here, never asserted by tests.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.bench_admin import AdminClient, pay_repeat, updates_and_latency
from node.bench_figures import (
    EVENT_BATCH,
    EVENT_CLIENTS,
    PACED_RATE,
    TARIFF,
    UNIT,
    UNITS_PER_AGGREGATE,
    Plan,
    Say,
    build_report,
)
from node.bench_floor import latency_floor
from node.measure import paced, sequential, verify_ceiling


def _quiet_logs() -> None:
    from node.logs import configure_logging

    configure_logging(json=True, level="error")
    logging.getLogger().setLevel(logging.ERROR)


async def _admin_phase(companies: Any, cid: str, plan: Plan, say: Say) -> dict[str, Any]:
    man = companies.manufacturer
    admin = AdminClient(man.admin_port, man.token)
    try:
        out = await updates_and_latency(admin, cid, plan, say)
        n_agg = plan.aggregated_updates
        say(f"metered units: {n_agg:,} updates of {UNITS_PER_AGGREGATE:,} {UNIT}s each")
        out["aggregated"] = await pay_repeat(admin, cid, n_agg, UNITS_PER_AGGREGATE)
        out["events"] = await _events_phase(admin, cid, plan, say)
    finally:
        await admin.close()
    return out


async def _events_phase(admin: AdminClient, cid: str, plan: Plan, say: Say) -> dict[str, Any]:
    """Usage events through POST /events: batches of EVENT_BATCH, EVENT_CLIENTS requests in
    flight; then the same kind of events one request each. Every event is new (accepted)."""
    path = f"/api/channels/{cid}/events"
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    run_id = f"{time.time_ns():x}"

    def events(prefix: str, start: int, n: int) -> list[dict[str, Any]]:
        return [{"id": f"{run_id}-{prefix}-{i}", "units": {UNIT: "1"}, "ref": "BENCH",
                 "time": stamp} for i in range(start, start + n)]

    async def send(prefix: str, total: int, size: int) -> float:
        batches = [events(prefix, i, min(size, total - i)) for i in range(0, total, size)]
        pending = iter(batches)
        accepted = 0

        async def client() -> None:
            nonlocal accepted
            for batch in pending:
                answer = await admin.call("POST", path, {"events": batch})
                accepted += int(answer["accepted"])

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(EVENT_CLIENTS)))
        elapsed = time.perf_counter() - started
        if accepted != total:
            raise RuntimeError(f"{accepted} of {total} bench events accepted")
        return elapsed

    await send("warm", 500, EVENT_BATCH)
    say(f"usage events: {plan.events:,} in batches of {EVENT_BATCH}, {EVENT_CLIENTS} in flight")
    batched = await send("batch", plan.events, EVENT_BATCH)
    say(f"usage events: {plan.single_events:,} one request each, {EVENT_CLIENTS} in flight")
    single = await send("single", plan.single_events, 1)
    return {"count": plan.events, "seconds": batched,
            "single_count": plan.single_events, "single_seconds": single}


async def _node_phase(companies: Any, cid: str, plan: Plan, say: Say) -> dict[str, Any]:
    """The sender's own node code (ChannelService.pay) in this process, against the real
    receiver process: stream-level latency without the admin HTTP round trip."""
    from node.app import Node
    from node.config import load_config

    man = companies.manufacturer
    man.stop()  # one writer per data directory: the bench process becomes the manufacturer
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


def _optional(what: str, measure: Any) -> tuple[Any, str]:
    """Run an optional phase: its result, or None and why it failed (reported, not raised)."""
    try:
        return measure(), ""
    except Exception as exc:
        return None, f"{what} failed: {type(exc).__name__}: {exc}"


def run(*, quick: bool = False, updates: int | None = None, scale: bool = True,
        scale_channels: int | None = None, pg_url: str | None = None, say: Say | None = None,
        root: Path | None = None) -> dict[str, Any]:
    """Run every measurement and return the report (see the module docstring)."""
    from node.bench_pg import run_pg
    from node.bench_scale import scale_phase
    from node.cluster import start_companies

    plan = Plan.make(quick=quick, updates=updates, scale_channels=scale_channels)
    tell: Say = say or (lambda _text: None)
    total_started = time.perf_counter()
    tell(f"Ed25519 verify ceiling ({plan.verify_seconds:.1f} s)")
    ceiling = verify_ceiling(plan.verify_seconds, TARIFF)
    tell(f"latency floor ({plan.floor_samples} samples of each part)")
    measured: dict[str, Any] = {"floor": latency_floor(plan.floor_samples, TARIFF)}

    own_root = root is None
    work = root or Path(tempfile.mkdtemp(prefix="meterline-bench-"))
    tell(f"starting a bank, an arbiter and two nodes in {work}")
    _quiet_logs()
    companies = start_companies(work, manufacturer_balance=100_000_000, say=None)
    try:
        tell("opening the bench channel through the bank and the arbiter")
        cid = companies.open_channel(tariff=[TARIFF])
        measured |= asyncio.run(_admin_phase(companies, cid, plan, tell))
        scaled: dict[str, Any] | None = None
        scale_error = ""
        if scale and plan.scale_channels > 0:
            scaled, scale_error = _optional(
                "scale", lambda: scale_phase(companies, cid, plan, tell))
        measured |= asyncio.run(_node_phase(companies, cid, plan, tell))
    finally:
        tell("stopping the daemons")
        companies.cluster.stop()
        if own_root:
            shutil.rmtree(work, ignore_errors=True)
    pg: dict[str, Any] | None = None
    pg_error = ""
    if pg_url:
        pg, pg_error = _optional("PostgreSQL", lambda: run_pg(pg_url, plan, tell))
    report = build_report(plan, ceiling, measured,
                          None if scaled is None else scaled["scale"], scale_error,
                          quick=quick, scale_asked=scale,
                          curve=None if scaled is None else scaled["curve"],
                          pg=pg, pg_error=pg_error, pg_url=pg_url)
    report["run_seconds"] = round(time.perf_counter() - total_started, 1)
    return report
