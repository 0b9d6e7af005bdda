"""The scale phase of ``meterline bench``: open N more channels for real (each proposed, accepted,
funded through the sandbox bank and confirmed by the arbiter), measure the receiver's RSS, the
curve of aggregate updates/s over 1, 10 and 100 of those channels, then restart the paying node
and time it from process start until its first update is served (ADR 0310)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from node.bench_admin import AdminClient
from node.bench_curve import measure_curve
from node.bench_figures import TARIFF, UNIT, Plan, Say
from node.measure import rss_mb


async def open_channels(companies: Any, n: int, say: Say) -> tuple[list[str], int, float]:
    """Propose `n` channels to the carrier and wait until they are open on both sides: the ids,
    the carrier's open count and the seconds it took."""
    man, car = companies.manufacturer, companies.carrier
    admin = AdminClient(man.admin_port, man.token)
    car_admin = AdminClient(car.admin_port, car.token)
    opened: list[str] = []
    sem = asyncio.Semaphore(16)  # proposals in flight; deposits go through the bank lane of 16
    started = time.perf_counter()
    body = {"peer": car.node_id, "arbiter": companies.arbiter.node_id, "deposit": "1.00 EUR",
            "tariff": [TARIFF]}
    try:
        async def open_one() -> None:
            async with sem:
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
        while True:
            status = await car_admin.call("GET", "/api/status")
            car_open = int(status["channels"].get("open", 0))
            if car_open >= n + 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
    finally:
        await admin.close()
        await car_admin.close()
    return opened, car_open, time.perf_counter() - started


async def _curve(companies: Any, cids: list[str], plan: Plan, say: Say) -> dict[str, Any]:
    man = companies.manufacturer
    admin = AdminClient(man.admin_port, man.token)
    try:
        return await measure_curve(admin, cids, plan.curve_updates, say)
    except Exception as exc:  # an optional figure: report the failure, do not fail the run
        return {"measured": False, "points": [], "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        await admin.close()


async def _first_update(payer: Any, cid: str, started: float, deadline_s: float) -> float:
    """Seconds from `started` until one ``POST /pay`` through `payer` is answered (the update
    signed, committed, sent, verified and committed by the peer, receipted)."""
    admin = AdminClient(payer.admin_port, payer.token)
    try:
        while True:
            try:
                await admin.call("POST", f"/api/channels/{cid}/pay", {"units": {UNIT: "1"}})
                return time.perf_counter() - started
            except Exception:
                if time.perf_counter() - started > deadline_s:
                    raise
                await asyncio.sleep(0.01)
    finally:
        await admin.close()


def scale_phase(companies: Any, cid: str, plan: Plan, say: Say) -> dict[str, Any]:
    """The ``scale`` measurement and the ``curve`` (see the module docstring)."""
    man, car = companies.manufacturer, companies.carrier
    assert car.process is not None
    rss_before = rss_mb(car.process.pid)
    opened, car_open, open_seconds = asyncio.run(
        open_channels(companies, plan.scale_channels, say))
    rss_after = rss_mb(car.process.pid)
    assert man.process is not None
    sender_rss = rss_mb(man.process.pid)
    curve = asyncio.run(_curve(companies, opened, plan, say))

    say(f"scale: restarting the paying node with {car_open} open channels")
    restart = restart_until_served(man, man, cid, deadline_s=max(120.0, car_open * 0.05))
    return {"scale": {
        "channels_open": car_open, "opened_now": plan.scale_channels,
        "open_seconds": open_seconds, "rss_before_mb": rss_before, "rss_after_mb": rss_after,
        "sender_rss_mb": sender_rss, **restart}, "curve": curve}


def restart_until_served(node: Any, payer: Any, cid: str, *, deadline_s: float
                         ) -> dict[str, Any]:
    """SIGTERM `node`, start it, time it from its process start to the first update on `cid`
    served (paid through `payer`: the bench restarts the payer itself, ADR 0310); a failure is
    reported (``restart_error``) so that the figures measured before it are kept."""
    out: dict[str, Any] = {"restart_s": None, "port_s": None, "stop_s": None,
                           "sender_rss_restarted_mb": None, "restart_error": ""}
    try:
        started = time.perf_counter()
        node.stop()
        out["stop_s"] = time.perf_counter() - started
        started = time.perf_counter()
        node.start(timeout_s=deadline_s)
        out["port_s"] = time.perf_counter() - started
        out["restart_s"] = asyncio.run(_first_update(payer, cid, started, deadline_s))
        out["sender_rss_restarted_mb"] = rss_mb(node.process.pid)
    except Exception as exc:
        out["restart_error"] = f"{type(exc).__name__}: {exc}"
    return out
