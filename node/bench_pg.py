"""``meterline bench --pg URL``: the signed-updates and latency figures again with every daemon
on PostgreSQL, each in a fresh database of the server at URL (created for the run and dropped
after), reported beside SQLite's (the target: ≥ 0.3 × SQLite's signed updates/s)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node.bench_admin import AdminClient, updates_and_latency
from node.bench_figures import TARIFF, Plan, Say, latency_figures

ENV = "METERLINE_BENCH_PG_URL"
ROLES = ("arbiter", "manufacturer", "carrier")


def pg_url(option: str | None) -> str | None:
    """The server to measure on: ``--pg`` or else the environment (None: SQLite only)."""
    return option or os.environ.get(ENV) or None


def _execute(url: str, *statements: str) -> None:
    """Run `statements` outside a transaction (CREATE/DROP DATABASE) on `url`'s database."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                for sql in statements:
                    await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run())


@contextlib.contextmanager
def fresh_databases(url: str) -> Iterator[dict[str, str]]:
    """A new database per daemon on the server of `url` ({role: URL}), dropped afterwards."""
    base = url.rsplit("/", 1)[0]
    names = {role: f"meterline_bench_{role}_{os.urandom(4).hex()}" for role in ROLES}
    _execute(url, *(f'CREATE DATABASE "{name}"' for name in names.values()))
    try:
        yield {role: f"{base}/{name}" for role, name in names.items()}
    finally:
        _execute(url, *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                        for name in names.values()))


def shown(url: str) -> str:
    """The server's URL with its password masked, for the report."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def run_pg(url: str, plan: Plan, say: Say) -> dict[str, Any]:
    """Start the bank, the arbiter and both nodes on PostgreSQL and measure one channel."""
    from node.cluster import start_companies

    work = Path(tempfile.mkdtemp(prefix="meterline-bench-pg-"))
    try:
        with fresh_databases(url) as databases:
            say(f"PostgreSQL: starting the daemons on {shown(url)}")
            companies = start_companies(work, manufacturer_balance=100_000_000,
                                        databases=databases)
            try:
                cid = companies.open_channel(tariff=[TARIFF])
                man = companies.manufacturer
                port = man.admin_port
                assert port is not None

                async def measure() -> dict[str, Any]:
                    admin = AdminClient(port, man.token)  # in the loop that uses it
                    try:
                        return await updates_and_latency(
                            admin, cid, plan, lambda text: say(f"PostgreSQL: {text}"))
                    finally:
                        await admin.close()

                return asyncio.run(measure())
            finally:
                companies.cluster.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pg_section(measured: dict[str, Any] | None, error: str, url: str | None,
               sqlite_per_s: float, floor_ms: float) -> dict[str, Any]:
    """The report's ``postgresql`` block: its figures beside SQLite's, with the ratio."""
    if measured is None:
        return {"measured": False,
                "reason": error or f"not requested (--pg URL or {ENV})"}
    upd = measured["updates"]
    per_s = round(upd["count"] / upd["seconds"], 1)
    load, unloaded = measured["admin_latency"]
    return {
        "measured": True, "server": shown(url or ""),
        "signed_updates_per_s": per_s, "updates": upd["count"],
        "seconds": round(upd["seconds"], 3), "sqlite_signed_updates_per_s": sqlite_per_s,
        "ratio_to_sqlite": round(per_s / sqlite_per_s, 4) if sqlite_per_s else None,
        "admin_latency": latency_figures(
            load, unloaded, "admin API, PostgreSQL",
            "as the SQLite admin latency, with the bank, the arbiter and both nodes each on "
            "its own fresh PostgreSQL database", floor_ms),
        "measured_how": "the same POST /pay with repeat as SQLite's signed updates, every "
                        "daemon on its own fresh PostgreSQL database (dropped after the run)",
    }
