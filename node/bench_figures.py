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

from node.bench_targets import (
    P50_FACTOR,
    P99_FACTOR,
    RESTART_S,
    RSS_MB,
    SCALE_CHANNELS,
    UPDATES_FACTOR,
    headline,
    target_rows,
)
from node.measure import Paced

SCHEMA = "meterline-bench/2"
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
TARGET_UNITS = 1_000_000.0
PACED_RATE = 1_000.0
MIN_EXTRAPOLATE = 50
TARGET_EVENTS = 10_000.0
"""Usage events/s (Stripe's default meter event stream limit, issue 11)."""
EVENT_BATCH = 100
EVENT_CLIENTS = 8
"""Requests in flight on the events API (an ERP's parallel senders)."""

Say = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``quick`` keeps the whole run around a minute."""

    updates: int
    aggregated_updates: int
    verify_seconds: float
    paced_updates: int
    unloaded_updates: int
    scale_channels: int
    events: int = 5_000
    single_events: int = 500
    curve_updates: int = 1_000
    floor_samples: int = 200

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
                10 if quick else 100),
            events=5_000 if quick else 50_000,
            single_events=500 if quick else 3_000,
            curve_updates=1_000 if quick else 10_000,
            floor_samples=200 if quick else 2_000,
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


def latency_figures(load: Paced, unloaded: list[float], where: str, measured: str,
                    floor_ms: float) -> dict[str, Any]:
    """p50 and p99 of `load` (paced at PACED_RATE), their targets P50_FACTOR and P99_FACTOR ×
    the run's latency floor (p99 also needs the rate kept), and the unloaded figures."""
    lat = [x * 1000 for x in load.latencies_s]
    base = [x * 1000 for x in unloaded]
    note = (f"paced at {PACED_RATE:,.0f} updates/s (open loop): {load.offered} offered, "
            f"{len(lat)} completed at {load.achieved_per_s:,.0f}/s"
            + ("; SATURATED: the node could not keep 1,000/s, so these latencies include "
               "the queue" if load.saturated else ""))
    p99 = figure(round(percentile(lat, 0.99), 3), "ms", f"{measured}; {note}",
                 target(f"p99 ≤ {P99_FACTOR:g} × floor ({floor_ms:.3f} ms) at 1,000 updates/s, "
                        "not saturated", "<=", round(P99_FACTOR * floor_ms, 4), "ms"))
    p99["met"] = p99["met"] and not load.saturated
    return {
        "where": where,
        "offered_rate_per_s": PACED_RATE,
        "offered": load.offered,
        "completed": len(lat),
        "achieved_rate_per_s": round(load.achieved_per_s, 1),
        "saturated": load.saturated,
        "p50": figure(round(percentile(lat, 0.50), 3), "ms", f"{measured}; {note}",
                      target(f"p50 ≤ {P50_FACTOR:g} × floor ({floor_ms:.3f} ms) at 1,000 "
                             "updates/s", "<=", round(P50_FACTOR * floor_ms, 4), "ms")),
        "p99": p99,
        "unloaded_p50_ms": round(percentile(base, 0.50), 3),
        "unloaded_p99_ms": round(percentile(base, 0.99), 3),
        "unloaded_mean_ms": round(statistics.fmean(base), 3) if base else 0.0,
        "unloaded_count": len(base),
    }


def build_report(plan: Plan, ceiling: dict[str, float], measured: dict[str, Any],
                 scale: dict[str, Any] | None, scale_error: str, *, quick: bool,
                 scale_asked: bool = True, curve: dict[str, Any] | None = None,
                 pg: dict[str, Any] | None = None, pg_error: str = "",
                 pg_url: str | None = None) -> dict[str, Any]:
    """The report from what was measured (see :mod:`node.bench`): the figures, the scale,
    curve and PostgreSQL sections, and the ``targets`` table built from them."""
    from node.bench_pg import pg_section

    ceil = round(ceiling["proof"], 1)
    floor = measured["floor"]
    upd = measured["updates"]
    updates_per_s = round(upd["count"] / upd["seconds"], 1)
    agg = measured["aggregated"]
    agg_updates_per_s = round(agg["count"] / agg["seconds"], 1)
    units_per_s = round(agg_updates_per_s * UNITS_PER_AGGREGATE, 1)
    ratio = round(updates_per_s / ceil, 4)
    stream_load, stream_unloaded = measured["latency"]
    admin_load, admin_unloaded = measured["admin_latency"]

    figures: dict[str, Any] = {
        "verify_ceiling": ceiling_figure(ceil, ceiling),
        "signed_updates": figure(
            updates_per_s, "updates/s",
            f"POST /api/channels/{{id}}/pay with repeat={upd['count']}, 1 {UNIT} per update, "
            "timed by the client from the request to the response (the API answers once the "
            "receiver's receipt covers the last update); every update signed by the sender, "
            "verified and committed (SQLite WAL, synchronous=FULL) by the receiver before its "
            "receipt; two node processes on loopback, one channel",
            target(f"≥ {UPDATES_FACTOR} × the verify ceiling ({ceil:,.0f}/s)", ">=",
                   round(UPDATES_FACTOR * ceil, 1), "updates/s"),
            updates=upd["count"], seconds=round(upd["seconds"], 3),
            ratio_to_ceiling=ratio,
            ratio_target=target(f"≥ {UPDATES_FACTOR} × verify ceiling", ">=",
                                UPDATES_FACTOR, "ratio"),
            ratio_met=ratio >= UPDATES_FACTOR),
        "latency_floor": figure(
            floor["value"], "ms",
            "sum of the medians of: one Ed25519 sign and one verify of a real BalanceProof "
            "(the per-update library), two durable SQLite commits of one small row (WAL, "
            "synchronous=FULL, like the node) and one loopback WebSocket echo round trip "
            f"(aiohttp server and client in this process), {floor['samples']:,} samples each",
            target("none: reported; the latency targets are multiples of it"),
            **{k: v for k, v in floor.items() if k != "value"}),
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
            "commit + receipt, the sender checks the receipt: held in memory and written with "
            "its next commit, ADR 0306), no admin HTTP", floor["value"]),
        "events_per_s": events_figure(measured["events"]),
        "admin_latency": latency_figures(
            admin_load, admin_unloaded, "admin API",
            "POST /api/channels/{id}/pay with one update, timed by the bench's keep-alive "
            "HTTP/1.1 client from the request to the whole response (includes the admin "
            "HTTP round trip and the JSON channel detail the API returns)", floor["value"]),
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
        "curve": curve if curve is not None else {
            "measured": False, "points": [],
            "reason": scale_error or "not run (the curve needs the scale phase's channels)"},
        "postgresql": pg_section(pg, pg_error, pg_url, updates_per_s, floor["value"]),
    }
    report["targets"] = target_rows(headline(report))
    return report


def events_figure(ev: dict[str, Any]) -> dict[str, Any]:
    per_s = round(ev["count"] / ev["seconds"], 1)
    single = round(ev["single_count"] / ev["single_seconds"], 1)
    return figure(
        per_s, "events/s",
        f"POST /api/channels/{{id}}/events, {ev['count']:,} new events in batches of "
        f"{EVENT_BATCH}, {EVENT_CLIENTS} requests in flight, timed by the client from the first "
        "request to the last answer; every event deduplicated (its id looked up and stored in "
        "the same transaction as its proof), priced by the tariff, carried by a signed proof "
        "shared by the events committed together, and receipted by the receiver before the "
        "answer (SQLite WAL, synchronous=FULL on both nodes)",
        target("≥ 10,000 events/s in batches of 100", ">=", TARGET_EVENTS, "events/s"),
        events=ev["count"], seconds=round(ev["seconds"], 3), batch=EVENT_BATCH,
        in_flight=EVENT_CLIENTS, single_request_per_s=single,
        single_events=ev["single_count"], single_seconds=round(ev["single_seconds"], 3),
        batch_speedup=round(per_s / single, 2) if single else None)


def ceiling_figure(ceil: float, ceiling: dict[str, float]) -> dict[str, Any]:
    """`verify_ceiling_per_s`: the fastest library's proof-level verify, with each measured
    library's verify and sign beside it (:func:`node.measure.verify_ceiling`)."""
    from node.measure import CEILING_OPS
    from protocol.crypto import BACKENDS, PER_UPDATE

    ceilings = {name: {f"{op}_per_s": round(ceiling[f"{name}_{op}"], 1) for op in CEILING_OPS}
                for name in BACKENDS if f"{name}_verify" in ceiling}
    fastest = max(ceilings, key=lambda name: ceilings[name]["verify_per_s"], default=None)

    def speedup(op: str) -> float | None:
        if not {"libsodium", "cryptography"} <= set(ceilings):
            return None
        return round(ceilings["libsodium"][f"{op}_per_s"]
                     / ceilings["cryptography"][f"{op}_per_s"], 2)

    return figure(
        ceil, "verifications/s",
        "canonical body encoding + Ed25519 verify of one real BalanceProof in a loop, this "
        f"process, one core, with each library in turns (best of 3): the fastest, {fastest}",
        target("none: the reference the signed-updates ratio is taken against"),
        library=fastest, raw_ed25519_per_s=round(ceiling["raw"], 1),
        path_library=PER_UPDATE.name, path_proof_per_s=round(ceiling.get("path", ceil), 1),
        ceilings=ceilings, verify_speedup=speedup("verify"), sign_speedup=speedup("sign"))


def scale_report(scale: dict[str, Any] | None, error: str, *, asked: bool) -> dict[str, Any]:
    if scale is None:
        reason = error or ("not requested (--no-scale)" if not asked else "not run")
        return {"measured": False, "reason": reason}
    n = scale["channels_open"]
    per_channel = ((scale["rss_after_mb"] - scale["rss_before_mb"]) / scale["opened_now"]
                   if scale["opened_now"] else 0.0)
    extrapolated: float | None = None
    if scale["opened_now"] >= MIN_EXTRAPOLATE and n < SCALE_CHANNELS:
        extrapolated = round(scale["rss_before_mb"] + per_channel * SCALE_CHANNELS, 1)
    at = ("" if n >= SCALE_CHANNELS
          else f"measured at {n:,} channels, not at {SCALE_CHANNELS:,}; ")
    report = {
        "measured": True,
        "channels_open": n,
        "measured_how": f"{scale['opened_now']} more channels opened between the two nodes "
                        "(each proposed, accepted, funded through the sandbox bank and "
                        "confirmed by the arbiter, OPEN on both sides); RSS of the receiver "
                        "process from /proc; restart = SIGTERM the paying node, start its "
                        "process, time until its first POST /pay is answered (the update "
                        "signed, committed, sent, verified and committed by the peer, "
                        "receipted), the peer running",
        "open_seconds": round(scale["open_seconds"], 2),
        "rss": figure(round(scale["rss_after_mb"], 1), "MB",
                      f"receiver RSS with {n:,} open channels",
                      target(f"{SCALE_CHANNELS:,} open channels in ≤ {RSS_MB:,.0f} MB RSS", "<=",
                             RSS_MB, "MB"),
                      rss_before_mb=round(scale["rss_before_mb"], 1),
                      sender_rss_mb=round(scale["sender_rss_mb"], 1),
                      sender_rss_after_restart_mb=_rounded(scale["sender_rss_restarted_mb"], 1),
                      per_channel_kb=round(per_channel * 1024, 1),
                      extrapolated_10k_mb=extrapolated,
                      note=at + "a linear extrapolation is only indicative (none below "
                                f"{MIN_EXTRAPOLATE} channels: noise dominates)"),
        "restart": restart_figure(scale, n, at),
    }
    for key in ("rss", "restart"):  # within the limit below SCALE_CHANNELS proves nothing
        if n < SCALE_CHANNELS and report[key]["met"]:
            report[key]["met"] = None
    return report


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def restart_figure(scale: dict[str, Any], n: int, at: str) -> dict[str, Any]:
    """`restart_s`: the paying node's process start to its first update served; None with the
    reason when the restart failed (the other scale figures stand)."""
    tgt = target(f"first update served ≤ {RESTART_S:g} s after start, {SCALE_CHANNELS:,} "
                 "channels", "<=", RESTART_S, "s")
    measured = (f"paying node's restart with {n:,} open channels, process start to its first "
                "update served")
    extra = {"stop_s": _rounded(scale["stop_s"], 3), "port_s": _rounded(scale["port_s"], 3),
             "note": at + "port_s: until the admin port accepted a connection"}
    if scale["restart_s"] is None:
        return {"value": None, "unit": "s", "target": tgt, "met": None, "measured": measured,
                "reason": scale.get("restart_error") or "not measured", **extra}
    return figure(round(scale["restart_s"], 3), "s", measured, tgt, **extra)
