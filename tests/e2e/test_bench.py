"""`meterline bench --quick --json` as a subprocess: every figure present, positive, with its unit
and target, and the ratios consistent with the figures. Behaviour only: how fast meterline is
is the benchmark's answer, never a test's threshold."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest

from node.bench_curve import LEVELS
from node.bench_figures import (
    LIGHTNING_BEST,
    RAIDEN_SIMULATED,
    SCHEMA,
    TARGET_EVENTS,
    TARGET_UNITS,
)
from node.bench_targets import GOALS, P50_FACTOR, P99_FACTOR, UPDATES_FACTOR


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "bench", "--quick", "--json"],
        capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.strip(), "the benchmark reports progress on stderr"
    data: dict[str, Any] = json.loads(out.stdout)  # stdout is exactly one JSON object
    return data


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


def check_figure(fig: dict[str, Any], unit: str, op: str | None, target: float | None) -> None:
    """A figure's shape; `target` None with an `op`: any positive number (relative targets)."""
    assert positive(fig["value"]), fig
    assert fig["unit"] == unit
    assert fig["target"]["text"]
    assert fig["target"]["op"] == op
    if op is not None and target is None:
        target = fig["target"]["value"]
        assert positive(target)
    assert fig["target"]["value"] == target
    assert isinstance(fig["measured"], str)
    assert fig["measured"]
    if op == ">=":
        assert fig["met"] is (fig["value"] >= target)
    elif op == "<=":
        assert fig["met"] is (fig["value"] <= target)
    else:
        assert fig["met"] is None


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.01, abs_tol=0.01)


def test_schema_and_setup(report: dict[str, Any]) -> None:
    assert report["schema"] == SCHEMA
    assert report["quick"] is True
    assert positive(report["machine"]["cpus"])
    assert set(report["figures"]) == {"verify_ceiling", "signed_updates", "metered_units",
                                      "latency", "admin_latency", "events_per_s",
                                      "latency_floor"}
    assert {"scale", "curve", "postgresql", "targets"} <= set(report)


def test_events_per_s_batched_beside_one_request_each(report: dict[str, Any]) -> None:
    fig = report["figures"]["events_per_s"]
    check_figure(fig, "events/s", ">=", TARGET_EVENTS)
    assert (fig["batch"], fig["events"]) == (100, 5_000)
    assert close(fig["value"], fig["events"] / fig["seconds"])
    assert positive(fig["single_request_per_s"])
    assert close(fig["single_request_per_s"], fig["single_events"] / fig["single_seconds"])
    assert close(fig["batch_speedup"], fig["value"] / fig["single_request_per_s"])


def test_verify_ceiling(report: dict[str, Any]) -> None:
    fig = report["figures"]["verify_ceiling"]
    check_figure(fig, "verifications/s", None, None)
    assert positive(fig["raw_ed25519_per_s"])
    # both libraries measured in the same run; the ceiling is the fastest one's verify
    ceilings = fig["ceilings"]
    assert set(ceilings) == {"libsodium", "cryptography"}
    for per_library in ceilings.values():
        assert set(per_library) == {"verify_per_s", "sign_per_s", "raw_verify_per_s"}
        assert all(positive(v) for v in per_library.values())
    assert fig["value"] == max(c["verify_per_s"] for c in ceilings.values())
    assert fig["value"] == ceilings[fig["library"]]["verify_per_s"]
    assert fig["raw_ed25519_per_s"] == ceilings[fig["library"]]["raw_verify_per_s"]
    assert fig["path_library"] == "libsodium"
    assert positive(fig["path_proof_per_s"])
    for op in ("verify", "sign"):
        assert close(fig[f"{op}_speedup"], ceilings["libsodium"][f"{op}_per_s"]
                     / ceilings["cryptography"][f"{op}_per_s"])


def test_signed_updates_and_ratio(report: dict[str, Any]) -> None:
    fig = report["figures"]["signed_updates"]
    ceiling = report["figures"]["verify_ceiling"]["value"]
    check_figure(fig, "updates/s", ">=", None)
    assert close(fig["target"]["value"], UPDATES_FACTOR * ceiling)
    assert fig["updates"] >= 100
    assert positive(fig["seconds"])
    assert close(fig["value"], fig["updates"] / fig["seconds"])
    assert close(fig["ratio_to_ceiling"], fig["value"] / ceiling)
    assert fig["ratio_target"]["op"] == ">="
    assert fig["ratio_target"]["value"] == UPDATES_FACTOR
    assert fig["ratio_met"] is (fig["ratio_to_ceiling"] >= UPDATES_FACTOR)


def test_metered_units(report: dict[str, Any]) -> None:
    fig = report["figures"]["metered_units"]
    check_figure(fig, "units/s", ">=", TARGET_UNITS)
    assert fig["units_per_update"] > 1
    assert close(fig["updates_per_s"], fig["updates"] / fig["seconds"])
    assert close(fig["value"], fig["updates_per_s"] * fig["units_per_update"])


@pytest.mark.parametrize("which", ["latency", "admin_latency"])
def test_latency(report: dict[str, Any], which: str) -> None:
    block = report["figures"][which]
    floor = report["figures"]["latency_floor"]["value"]
    check_figure(block["p50"], "ms", "<=", None)
    assert close(block["p50"]["target"]["value"], P50_FACTOR * floor)
    p99 = block["p99"]
    assert close(p99["target"]["value"], P99_FACTOR * floor)
    assert p99["met"] is (p99["value"] <= p99["target"]["value"] and not block["saturated"])
    assert block["p50"]["value"] <= block["p99"]["value"]
    assert block["offered_rate_per_s"] == 1000
    assert 0 < block["completed"] == block["offered"]
    assert positive(block["achieved_rate_per_s"])
    assert isinstance(block["saturated"], bool)
    assert 0 < block["unloaded_p50_ms"] <= block["unloaded_p99_ms"]
    assert block["where"]


def test_comparison_is_consistent(report: dict[str, Any]) -> None:
    cmp_ = report["comparison"]
    updates = report["figures"]["signed_updates"]["value"]
    assert cmp_["updates_per_s"] == updates
    assert cmp_["lightning_best_published_per_s"] == LIGHTNING_BEST == 89
    assert cmp_["raiden_simulated_published_per_s"] == RAIDEN_SIMULATED == 164
    assert close(cmp_["ratio_to_lightning"], updates / 89)
    assert close(cmp_["ratio_to_raiden"], updates / 164)
    assert "published" in cmp_["sources"]["lightning"]
    assert "published" in cmp_["sources"]["raiden"]


def test_scale_measured_at_fewer_channels_is_never_a_pass(report: dict[str, Any]) -> None:
    scale = report["scale"]
    assert scale["measured"], scale
    assert scale["channels_open"] < 10_000  # --quick
    for key, unit, limit in (("rss", "MB", 300.0), ("restart", "s", 3.0)):
        fig = scale[key]
        assert positive(fig["value"])
        assert (fig["unit"], fig["target"]["op"], fig["target"]["value"]) == (unit, "<=", limit)
        assert fig["measured"]
        # within the limit below 10,000 channels proves nothing: null; over it: missed
        assert scale[key]["met"] is (False if scale[key]["value"] > limit else None)


def test_latency_floor_is_the_sum_of_its_parts(report: dict[str, Any]) -> None:
    fig = report["figures"]["latency_floor"]
    check_figure(fig, "ms", None, None)
    parts = ("sign_ms", "verify_ms", "commit_ms", "websocket_rtt_ms")
    assert all(positive(fig[part]) for part in parts)
    assert fig["commits"] == 2
    assert close(fig["value"], fig["sign_ms"] + fig["verify_ms"] + 2 * fig["commit_ms"]
                 + fig["websocket_rtt_ms"])


def test_scale_restart_is_until_the_first_update(report: dict[str, Any]) -> None:
    scale = report["scale"]
    assert scale["measured"], scale  # --quick opens 10 channels: the phase must run
    assert scale["channels_open"] == 11
    restart = scale["restart"]
    assert 0 < restart["port_s"] <= restart["value"]


def test_curve_points(report: dict[str, Any]) -> None:
    curve = report["curve"]
    assert curve["measured"] is True
    assert [p["channels"] for p in curve["points"]] == [1, 10]  # --quick: 10 channels
    assert curve["not_measured"] == [n for n in LEVELS if n > 10]
    for point in curve["points"]:
        assert point["updates"] >= point["channels"] * 20
        assert close(point["updates_per_s"], point["updates"] / point["seconds"])
        assert close(point["ratio_to_one"],
                     point["updates_per_s"] / curve["points"][0]["updates_per_s"])


def test_postgresql_section(report: dict[str, Any]) -> None:
    pg = report["postgresql"]
    assert pg["measured"] is False  # the test runs without --pg
    assert "--pg" in pg["reason"]


def test_targets_table(report: dict[str, Any]) -> None:
    rows = report["targets"]
    assert [row["name"] for row in rows] == [goal.name for goal in GOALS]
    by_name = {row["name"]: row for row in rows}
    figures = report["figures"]
    assert by_name["signed_updates_per_s"]["figure"] == figures["signed_updates"]["value"]
    assert by_name["latency_floor_ms"]["figure"] == figures["latency_floor"]["value"]
    assert by_name["latency_p50_ms"]["figure"] == figures["admin_latency"]["p50"]["value"]
    assert by_name["channels"]["figure"] == report["scale"]["channels_open"]
    for row in rows:
        assert row["met"] in (True, False, None)
        assert isinstance(row["status"], str)
        assert row["status"]
        assert row["target"]["text"]
        if row["met"] is not None:
            assert positive(row["ratio"])
            base = row["reference"]["value"] if row["reference"] else row["target"]["value"]
            assert close(row["ratio"] * base, row["figure"])
    for name in ("aggregate_100_per_s", "pg_signed_updates_per_s"):  # not measured by --quick
        assert by_name[name]["met"] is None
