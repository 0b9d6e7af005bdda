"""`meterline bench --quick --no-scale --pg URL --json` as a subprocess: the PostgreSQL section is
measured beside SQLite's, with the ratio and its row in the targets table, and the databases the
run made are gone afterwards. Shape only, never a speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest

from node.bench_pg import shown
from node.bench_targets import PG_FACTOR
from tests.support import PG_URL

pytestmark = pytest.mark.skipif(PG_URL is None, reason="METERLINE_TEST_PG_URL is not set: "
                                "the PostgreSQL bench is skipped")


def bench_databases() -> set[str]:
    import asyncio

    import asyncpg

    async def names() -> set[str]:
        assert PG_URL is not None
        conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            rows = await conn.fetch("SELECT datname FROM pg_database "
                                    "WHERE datname LIKE 'meterline_bench_%'")
        finally:
            await conn.close()
        return {row["datname"] for row in rows}

    return asyncio.run(names())


@pytest.fixture(scope="module")
def run() -> tuple[dict[str, Any], set[str]]:
    before = bench_databases()
    assert PG_URL is not None
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "bench", "--quick", "--no-scale", "--json",
         "--pg", PG_URL], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout)
    return report, bench_databases() - before


def test_postgresql_beside_sqlite(run: tuple[dict[str, Any], set[str]]) -> None:
    report, _ = run
    pg = report["postgresql"]
    assert pg["measured"] is True, pg
    per_s, sqlite = pg["signed_updates_per_s"], pg["sqlite_signed_updates_per_s"]
    assert per_s > 0
    assert sqlite == report["figures"]["signed_updates"]["value"]
    assert math.isclose(per_s, pg["updates"] / pg["seconds"], rel_tol=0.01)
    assert math.isclose(pg["ratio_to_sqlite"], per_s / sqlite, rel_tol=0.01)
    latency = pg["admin_latency"]
    assert 0 < latency["p50"]["value"] <= latency["p99"]["value"]
    assert latency["completed"] == latency["offered"] > 0
    assert pg["server"] == shown(PG_URL or "")  # the password, if any, masked


def test_postgresql_row_in_the_targets(run: tuple[dict[str, Any], set[str]]) -> None:
    report, _ = run
    row = next(r for r in report["targets"] if r["name"] == "pg_signed_updates_per_s")
    assert row["figure"] == report["postgresql"]["signed_updates_per_s"]
    assert row["factor"] == PG_FACTOR
    assert row["met"] is (row["ratio"] >= PG_FACTOR)


def test_the_run_dropped_its_databases(run: tuple[dict[str, Any], set[str]]) -> None:
    _, left = run
    assert left == set()
