"""Issue 13's targets, one row per figure, each with its target as a number and as text, the
ratio, and whether it is met (ADR 0310).

A target is either relative (``≥ 0.5 × verify_ceiling_per_s``: a factor of a reference figure
measured in the same run) or absolute (``≤ 300 MB``). ``ratio`` is the figure over the target's
base (the reference figure, or the absolute target itself) and is compared with ``factor`` (1 for
absolute targets). ``met`` is true or false, or None when the figure (or its reference) was not
measured, or was measured below the size the target is stated for without already missing it. A
missed target is a row like any other: the table is never filtered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UPDATES_FACTOR = 0.5
"""signed_updates_per_s ≥ UPDATES_FACTOR × verify_ceiling_per_s."""
P50_FACTOR = 2.0
P99_FACTOR = 5.0
"""latency_p50_ms / latency_p99_ms ≤ these × latency_floor_ms."""
CURVE_FACTOR = 0.8
PG_FACTOR = 0.3
SCALE_CHANNELS = 10_000
RSS_MB = 300.0
RESTART_S = 3.0
CURVE_TOP = 100
"""The channel count of the curve's last point (its first is 1)."""


@dataclass(frozen=True)
class Goal:
    name: str
    unit: str
    op: str | None  # ">=", "<=" or None (reported, no target)
    factor: float
    reference: str | None  # the headline figure the factor applies to; None: absolute
    text: str


GOALS = (
    Goal("signed_updates_per_s", "updates/s", ">=", UPDATES_FACTOR, "verify_ceiling_per_s",
         f"≥ {UPDATES_FACTOR} × verify_ceiling_per_s (fastest library, same run)"),
    Goal("units_per_s", "units/s", None, 1.0, None, "reported (signed-update rate × units "
         "per proof)"),
    Goal("latency_floor_ms", "ms", None, 1.0, None, "reported (sign + verify + 2 durable "
         "commits + 1 loopback WebSocket round trip)"),
    Goal("latency_p50_ms", "ms", "<=", P50_FACTOR, "latency_floor_ms",
         f"≤ {P50_FACTOR:g} × floor, single events through the admin API at 1,000/s"),
    Goal("latency_p99_ms", "ms", "<=", P99_FACTOR, "latency_floor_ms",
         f"≤ {P99_FACTOR:g} × floor and not saturated, single events through the admin API "
         "at 1,000/s"),
    Goal("channels", "channels", ">=", float(SCALE_CHANNELS), None,
         f"{SCALE_CHANNELS:,} open channels measured on one node"),
    Goal("rss_mb", "MB", "<=", RSS_MB, None, f"≤ {RSS_MB:,.0f} MB with {SCALE_CHANNELS:,} "
         "channels"),
    Goal("restart_s", "s", "<=", RESTART_S, None, f"≤ {RESTART_S:,.0f} s from process start to "
         f"the first update served, {SCALE_CHANNELS:,} channels"),
    Goal(f"aggregate_{CURVE_TOP}_per_s", "updates/s", ">=", CURVE_FACTOR,
         "aggregate_1_per_s",
         f"≥ {CURVE_FACTOR} × the one-channel aggregate, {CURVE_TOP} channels streaming at "
         "once"),
    Goal("pg_signed_updates_per_s", "updates/s", ">=", PG_FACTOR, "signed_updates_per_s",
         f"≥ {PG_FACTOR} × SQLite's signed_updates_per_s, both nodes on PostgreSQL"),
)
AT_SCALE = {"rss_mb", "restart_s"}
"""Stated for SCALE_CHANNELS channels: below that only a miss is conclusive."""


def _compare(op: str, ratio: float, factor: float) -> bool:
    return ratio >= factor if op == ">=" else ratio <= factor


def target_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per :data:`GOALS` entry from the headline `figures` (name → number or None;
    ``latency_saturated`` a bool, ``channels`` the count the scale figures were measured at)."""
    return [_row(goal, figures) for goal in GOALS]


def _row(goal: Goal, figures: dict[str, Any]) -> dict[str, Any]:
    value = figures.get(goal.name)
    if goal.reference:  # relative: factor × a reference figure of the same run
        base, factor = figures.get(goal.reference), goal.factor
        target = None if base is None else round(factor * base, 4)
    else:  # absolute: the target is its own base
        base = target = goal.factor if goal.op else None
        factor = 1.0
    row: dict[str, Any] = {
        "name": goal.name, "figure": value, "unit": goal.unit,
        "target": {"op": goal.op, "value": target, "text": goal.text},
        "reference": None if goal.reference is None else {"name": goal.reference,
                                                          "value": base},
        "factor": factor, "ratio": None, "met": None,
    }
    if goal.op is None:
        row["status"] = "reported" if value is not None else "not measured"
        return row
    if value is None or not base:
        missing = goal.name if value is None else goal.reference
        row["status"] = f"not measured ({missing})"
        return row
    ratio = value / base
    row["ratio"] = round(ratio, 4)
    met = _compare(goal.op, ratio, factor)
    why = ""
    if goal.name == "latency_p99_ms" and figures.get("latency_saturated"):
        met, why = False, " (saturated: the node did not keep 1,000/s)"
    channels = figures.get("channels")
    if goal.name in AT_SCALE and met and (channels or 0) < SCALE_CHANNELS:
        row["status"] = (f"not measured at {SCALE_CHANNELS:,} channels (within the target at "
                         f"{channels or 0:,})")
        return row
    row["met"] = met
    row["status"] = ("met" if met else "MISSED") + why
    return row


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are stated for, taken from a bench report (None where absent)."""
    f = report["figures"]
    scale, curve, pg = report["scale"], report["curve"], report["postgresql"]
    adm = f["admin_latency"]
    aggregate = {str(p["channels"]): p["updates_per_s"] for p in curve.get("points", [])}
    return {
        "verify_ceiling_per_s": f["verify_ceiling"]["value"],
        "signed_updates_per_s": f["signed_updates"]["value"],
        "units_per_s": f["metered_units"]["value"],
        "latency_floor_ms": f["latency_floor"]["value"],
        "latency_p50_ms": adm["p50"]["value"],
        "latency_p99_ms": adm["p99"]["value"],
        "latency_saturated": adm["saturated"],
        "channels": scale.get("channels_open"),
        "rss_mb": scale["rss"]["value"] if scale["measured"] else None,
        "restart_s": scale["restart"]["value"] if scale["measured"] else None,
        "aggregate_1_per_s": aggregate.get("1"),
        f"aggregate_{CURVE_TOP}_per_s": aggregate.get(str(CURVE_TOP)),
        "pg_signed_updates_per_s": pg["signed_updates_per_s"] if pg["measured"] else None,
    }
