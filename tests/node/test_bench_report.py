"""The bench's report builder and issue 13's targets table, from given figures: every row is
present, a missed target shows missed, a figure not measured shows null, the ratios are the
figure over its base. No daemon and no timing: the figures are made up here."""

from __future__ import annotations

import math
from typing import Any

import pytest

from node.bench_figures import Plan, build_report
from node.bench_targets import GOALS, target_rows
from node.measure import Paced

ALL_MET: dict[str, Any] = {
    "verify_ceiling_per_s": 20_000.0, "signed_updates_per_s": 12_000.0,
    "units_per_s": 9_000_000.0, "latency_floor_ms": 1.0, "latency_p50_ms": 1.5,
    "latency_p99_ms": 4.0, "latency_saturated": False, "channels": 10_001, "rss_mb": 250.0,
    "restart_s": 2.0, "aggregate_1_per_s": 5_000.0, "aggregate_100_per_s": 4_500.0,
    "pg_signed_updates_per_s": 4_000.0,
}


def rows(**changes: Any) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in target_rows({**ALL_MET, **changes})}


def test_every_goal_is_a_row_in_order() -> None:
    names = [row["name"] for row in target_rows(ALL_MET)]
    assert names == [goal.name for goal in GOALS]
    assert "signed_updates_per_s" in names
    assert "pg_signed_updates_per_s" in names


def test_all_met() -> None:
    table = rows()
    for name, row in table.items():
        if row["target"]["op"] is None:
            assert (row["met"], row["status"], row["ratio"]) == (None, "reported", None)
        else:
            assert row["met"] is True, name
            assert row["status"] == "met"


def test_ratios_and_targets_are_the_figure_over_its_base() -> None:
    table = rows()
    upd = table["signed_updates_per_s"]
    assert upd["ratio"] == pytest.approx(12_000 / 20_000)
    assert upd["target"]["value"] == pytest.approx(0.5 * 20_000)
    assert upd["reference"] == {"name": "verify_ceiling_per_s", "value": 20_000.0}
    assert upd["factor"] == 0.5
    p50, p99 = table["latency_p50_ms"], table["latency_p99_ms"]
    assert (p50["ratio"], p50["target"]["value"], p50["factor"]) == (1.5, 2.0, 2.0)
    assert (p99["ratio"], p99["target"]["value"], p99["factor"]) == (4.0, 5.0, 5.0)
    curve = table["aggregate_100_per_s"]
    assert curve["ratio"] == pytest.approx(0.9)
    assert curve["target"]["value"] == pytest.approx(4_000.0)
    pg = table["pg_signed_updates_per_s"]
    assert pg["ratio"] == pytest.approx(4_000 / 12_000, rel=1e-3)
    assert pg["target"]["value"] == pytest.approx(3_600.0)
    rss = table["rss_mb"]  # absolute: its own base, compared with 1
    assert (rss["reference"], rss["factor"], rss["target"]["value"]) == (None, 1.0, 300.0)
    assert rss["ratio"] == pytest.approx(250 / 300, rel=1e-3)
    assert table["channels"]["ratio"] == pytest.approx(1.0001)
    assert table["restart_s"]["target"]["value"] == 3.0


@pytest.mark.parametrize(("name", "value"), [
    ("signed_updates_per_s", 9_999.0), ("latency_p50_ms", 2.01), ("latency_p99_ms", 5.5),
    ("channels", 9_999), ("rss_mb", 300.5), ("restart_s", 3.2),
    ("aggregate_100_per_s", 3_999.0), ("pg_signed_updates_per_s", 3_500.0),
])
def test_a_missed_target_is_shown_missed(name: str, value: float) -> None:
    row = rows(**{name: value})[name]
    assert row["met"] is False
    assert row["status"].startswith("MISSED")
    assert row["figure"] == value
    assert row["ratio"] is not None


def test_p99_within_the_factor_is_missed_when_saturated() -> None:
    row = rows(latency_saturated=True)["latency_p99_ms"]
    assert row["ratio"] == 4.0
    assert row["met"] is False
    assert "saturated" in row["status"]
    assert rows(latency_saturated=True)["latency_p50_ms"]["met"] is True


@pytest.mark.parametrize(("missing", "affected"), [
    ("pg_signed_updates_per_s", ["pg_signed_updates_per_s"]),
    ("aggregate_100_per_s", ["aggregate_100_per_s"]),
    ("aggregate_1_per_s", ["aggregate_100_per_s"]),
    ("latency_floor_ms", ["latency_p50_ms", "latency_p99_ms"]),
    ("rss_mb", ["rss_mb"]),
])
def test_not_measured_is_null(missing: str, affected: list[str]) -> None:
    table = rows(**{missing: None})
    for name in affected:
        assert table[name]["met"] is None
        assert table[name]["ratio"] is None
        assert table[name]["status"].startswith("not measured")
    assert table["signed_updates_per_s"]["met"] is True  # the others stand


def test_scale_figures_below_10000_channels_are_null_unless_already_over() -> None:
    table = rows(channels=101, rss_mb=90.0, restart_s=0.8)
    assert table["channels"]["met"] is False  # the count itself is the target: missed
    for name in ("rss_mb", "restart_s"):
        assert table[name]["met"] is None
        assert "not measured at 10,000" in table[name]["status"]
    over = rows(channels=101, rss_mb=320.0, restart_s=4.0)
    assert over["rss_mb"]["met"] is False
    assert over["restart_s"]["met"] is False


# -- the whole report from given measurements -------------------------------------------------


def paced(ms: list[float], *, saturated: bool = False) -> Paced:
    return Paced(offered=len(ms), latencies_s=[x / 1000 for x in ms], elapsed_s=len(ms) / 1000,
                 saturated=saturated)


def ceiling(verify: float) -> dict[str, float]:
    out = {"path": verify, "proof": verify, "raw": verify * 1.1}
    for lib, k in (("libsodium", 1.0), ("cryptography", 0.5)):
        out |= {f"{lib}_verify": verify * k, f"{lib}_sign": verify * 2 * k,
                f"{lib}_raw_verify": verify * 1.1 * k}
    return out


def measured(*, saturated: bool = False) -> dict[str, Any]:
    return {
        "floor": {"value": 1.0, "sign_ms": 0.03, "verify_ms": 0.05, "commit_ms": 0.4,
                  "commits": 2, "websocket_rtt_ms": 0.12, "samples": 10, "proof_bytes": 188},
        "updates": {"count": 6_000, "seconds": 1.0},
        "aggregated": {"count": 1_000, "seconds": 0.5},
        "latency": (paced([0.5] * 99 + [3.0]), [0.4, 0.6]),
        "admin_latency": (paced([1.0] * 98 + [9.0, 9.0], saturated=saturated), [0.8, 1.2]),
        "events": {"count": 5_000, "seconds": 0.5, "single_count": 500, "single_seconds": 0.5},
    }


SCALE = {"channels_open": 101, "opened_now": 100, "open_seconds": 30.0, "rss_before_mb": 80.0,
         "rss_after_mb": 90.0, "sender_rss_mb": 95.0, "sender_rss_restarted_mb": 85.0,
         "restart_s": 0.9, "port_s": 0.6, "stop_s": 0.2}
CURVE = {"measured": True, "points": [
    {"channels": 1, "updates_per_s": 4_000.0, "ratio_to_one": 1.0},
    {"channels": 10, "updates_per_s": 3_800.0, "ratio_to_one": 0.95},
    {"channels": 100, "updates_per_s": 2_000.0, "ratio_to_one": 0.5}], "not_measured": []}


def report(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"scale": SCALE, "scale_error": "", "curve": CURVE,
                            "saturated": False, **kw}
    return build_report(Plan.make(quick=True), ceiling(10_000.0),
                        measured(saturated=args.pop("saturated")), args.pop("scale"),
                        args.pop("scale_error"), quick=True, **args)


def by_name(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rep["targets"]}


def test_report_targets_come_from_the_figures() -> None:
    rep = report()
    table = by_name(rep)
    upd = table["signed_updates_per_s"]
    assert (upd["figure"], upd["reference"]["value"]) == (6_000.0, 10_000.0)
    assert (upd["ratio"], upd["met"]) == (0.6, True)
    assert rep["figures"]["signed_updates"]["target"]["value"] == 5_000.0
    assert table["units_per_s"]["figure"] == 2_000_000.0
    assert table["latency_floor_ms"]["figure"] == 1.0
    assert rep["figures"]["latency_floor"]["commit_ms"] == 0.4
    p50, p99 = table["latency_p50_ms"], table["latency_p99_ms"]  # the admin API's
    assert (p50["figure"], p50["met"]) == (1.0, True)
    assert (p99["figure"], p99["met"], p99["ratio"]) == (9.0, False, 9.0)  # > 5 × floor
    assert rep["figures"]["admin_latency"]["p99"]["met"] is False
    assert rep["figures"]["latency"]["p99"]["met"] is True  # 3 ms ≤ 5 × 1 ms
    curve = table["aggregate_100_per_s"]
    assert (curve["figure"], curve["ratio"], curve["met"]) == (2_000.0, 0.5, False)
    assert table["channels"]["figure"] == 101
    assert table["rss_mb"]["met"] is None
    assert table["restart_s"]["met"] is None
    assert table["restart_s"]["figure"] == 0.9
    assert rep["scale"]["restart"]["port_s"] == 0.6
    pg = table["pg_signed_updates_per_s"]
    assert (pg["figure"], pg["met"]) == (None, None)
    assert rep["postgresql"]["measured"] is False
    assert rep["postgresql"]["reason"]


def test_report_saturated_admin_latency_misses_p99() -> None:
    rep = report(saturated=True)
    assert by_name(rep)["latency_p99_ms"]["met"] is False
    assert rep["figures"]["admin_latency"]["saturated"] is True


def test_report_with_postgresql_beside_sqlite() -> None:
    pg = {"updates": {"count": 3_000, "seconds": 1.0},
          "admin_latency": (paced([2.0] * 100), [2.0])}
    rep = report(pg=pg, pg_url="postgresql+asyncpg://postgres:secret@127.0.0.1:5432/x")
    section = rep["postgresql"]
    assert section["measured"] is True
    assert (section["signed_updates_per_s"], section["ratio_to_sqlite"]) == (3_000.0, 0.5)
    assert "secret" not in section["server"]
    row = by_name(rep)["pg_signed_updates_per_s"]
    assert (row["figure"], row["ratio"], row["met"]) == (3_000.0, 0.5, True)
    assert section["admin_latency"]["p50"]["value"] == 2.0


def test_report_without_scale_has_null_scale_rows() -> None:
    rep = report(scale=None, scale_error="scale failed: RuntimeError: x", curve=None)
    table = by_name(rep)
    for name in ("channels", "rss_mb", "restart_s", "aggregate_100_per_s"):
        assert table[name]["met"] is None, name
        assert table[name]["figure"] is None
    assert rep["scale"] == {"measured": False, "reason": "scale failed: RuntimeError: x"}
    assert rep["curve"]["measured"] is False
    assert all(math.isfinite(r["figure"]) for r in rep["targets"] if r["figure"] is not None)


def test_report_a_failed_restart_keeps_the_other_scale_figures() -> None:
    failed = {**SCALE, "restart_s": None, "port_s": None, "sender_rss_restarted_mb": None,
              "restart_error": "ClusterError: nothing listening"}
    rep = report(scale=failed)
    restart = rep["scale"]["restart"]
    assert (restart["value"], restart["met"]) == (None, None)
    assert restart["reason"] == "ClusterError: nothing listening"
    table = by_name(rep)
    assert table["restart_s"]["met"] is None
    assert table["restart_s"]["status"].startswith("not measured")
    assert table["rss_mb"]["figure"] == 90.0
    assert table["channels"]["figure"] == 101


def test_the_text_report_renders_every_section() -> None:
    from node.cli.bench import render

    failed = {**SCALE, "restart_s": None, "port_s": None, "sender_rss_restarted_mb": None,
              "restart_error": "ClusterError: nothing listening"}
    pg = {"updates": {"count": 3_000, "seconds": 1.0},
          "admin_latency": (paced([2.0] * 100), [2.0])}
    for rep in (report(), report(scale=failed, pg=pg, pg_url="postgresql+asyncpg://h/x"),
                report(scale=None, curve=None)):
        text = render({**rep, "run_seconds": 1.0})
        for row in rep["targets"]:
            assert row["name"] in text
        assert "MISSED" in text  # the saturated/over-floor admin p99 of these figures
