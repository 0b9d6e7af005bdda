"""The figures of ``meterline bench`` (DESIGN §8): what each target is, the plan of a run, and
the report built from what :mod:`node.bench` measured (a plain JSON-able dict, ``SCHEMA``)."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.measure import Paced

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


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank of sorted `values`."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


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
