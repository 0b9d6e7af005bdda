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

from node.bench_figures import (
    LIGHTNING_BEST,
    RAIDEN_SIMULATED,
    SCHEMA,
    TARGET_P50_MS,
    TARGET_P99_MS,
    TARGET_RATIO,
    TARGET_UNITS,
    TARGET_UPDATES,
)


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
    assert positive(fig["value"]), fig
    assert fig["unit"] == unit
    assert fig["target"]["text"]
    assert fig["target"]["op"] == op
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
                                      "latency", "admin_latency"}


def test_verify_ceiling(report: dict[str, Any]) -> None:
    fig = report["figures"]["verify_ceiling"]
    check_figure(fig, "verifications/s", None, None)
    assert positive(fig["raw_ed25519_per_s"])


def test_signed_updates_and_ratio(report: dict[str, Any]) -> None:
    fig = report["figures"]["signed_updates"]
    check_figure(fig, "updates/s", ">=", TARGET_UPDATES)
    assert fig["updates"] >= 100
    assert positive(fig["seconds"])
    assert close(fig["value"], fig["updates"] / fig["seconds"])
    ceiling = report["figures"]["verify_ceiling"]["value"]
    assert close(fig["ratio_to_ceiling"], fig["value"] / ceiling)
    assert fig["ratio_target"]["op"] == ">="
    assert fig["ratio_target"]["value"] == TARGET_RATIO
    assert fig["ratio_met"] is (fig["ratio_to_ceiling"] >= TARGET_RATIO)


def test_metered_units(report: dict[str, Any]) -> None:
    fig = report["figures"]["metered_units"]
    check_figure(fig, "units/s", ">=", TARGET_UNITS)
    assert fig["units_per_update"] > 1
    assert close(fig["updates_per_s"], fig["updates"] / fig["seconds"])
    assert close(fig["value"], fig["updates_per_s"] * fig["units_per_update"])


@pytest.mark.parametrize("which", ["latency", "admin_latency"])
def test_latency(report: dict[str, Any], which: str) -> None:
    block = report["figures"][which]
    check_figure(block["p50"], "ms", "<=", TARGET_P50_MS)
    check_figure(block["p99"], "ms", "<=", TARGET_P99_MS)
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


def test_scale_measured_or_honestly_skipped(report: dict[str, Any]) -> None:
    scale = report["scale"]
    if not scale["measured"]:
        assert scale["reason"]
        return
    assert scale["channels_open"] >= 2
    check_figure(scale["rss"], "MB", "<=", 300.0)
    check_figure(scale["restart"], "s", "<=", 3.0)
