"""Storage faults (issue 14, ADR 0250): the node's database on a filesystem that fills up, and
a PostgreSQL database that goes away mid-stream. The node stops acknowledging, says why
(``node info``, a log line), and resumes by itself once storage is back, with nothing lost and
nothing acknowledged that was not committed (the payer's receipts against the payee's committed
state, read from the payee's own database)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node.cluster import ClusterError, NodeHandle, meterline_argv
from node.storage.codec import decode_channel
from tests.e2e.cluster import Companies, companies, wait_for
from tests.faults.fullfs import SmallFs, small_fs

PG_URL = os.environ.get("METERLINE_TEST_PG_URL")


def _show(node: NodeHandle, cid: str) -> dict[str, Any]:
    shown: dict[str, Any] = node.api("GET", f"/api/channels/{cid}")
    return shown


def _info_cli(node: NodeHandle) -> tuple[dict[str, Any], str]:
    argv = [*meterline_argv(), "node", "info", "--data-dir", str(node.directory)]
    human = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    as_json = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60,
                             check=True)
    return json.loads(as_json.stdout), human.stdout


def _committed_received(db: Path, cid: str) -> int:
    """The payee's committed received nonce, read from its database file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (blob,) = conn.execute("SELECT state FROM channel WHERE id = ?", (cid,)).fetchone()
    return decode_channel(blob).received.nonce


def _pay(node: NodeHandle, cid: str, repeat: int, *, wait: bool = True) -> dict[str, Any]:
    paid: dict[str, Any] = node.api("POST", f"/api/channels/{cid}/pay", {
        "units": {"km": "1"}, "reference": "FULL-DISK", "repeat": repeat, "wait": wait})
    return paid


@pytest.fixture
def on_small_disks(tmp_path: Path) -> Iterator[tuple[Companies, SmallFs, SmallFs]]:
    with small_fs(tmp_path / "carrier-fs") as carrier_fs, \
            small_fs(tmp_path / "manufacturer-fs") as man_fs:
        dbs = {"carrier": f"sqlite+aiosqlite:///{carrier_fs.root / 'carrier.sqlite'}",
               "manufacturer": f"sqlite+aiosqlite:///{man_fs.root / 'manufacturer.sqlite'}"}
        with companies(tmp_path / "cluster", databases=dbs) as c:
            yield c, carrier_fs, man_fs


def test_a_full_disk_stops_acknowledging_says_why_and_resumes_with_nothing_lost(
        on_small_disks: tuple[Companies, SmallFs, SmallFs]) -> None:
    c, carrier_fs, man_fs = on_small_disks
    payee_db = carrier_fs.root / "carrier.sqlite"
    cid = c.open_channel()
    assert _pay(c.manufacturer, cid, 200)["acked_nonce_sent"] == 200

    # -- the payee's disk fills: it commits nothing, so it acknowledges nothing --------------
    carrier_fs.fill()
    sent = _pay(c.manufacturer, cid, 300, wait=False)["nonce_sent"]
    assert sent == 500
    wait_for(lambda: c.carrier.api("GET", "/api/info")["storage"]["state"] == "unavailable",
             "the payee to notice its full disk", 30)
    info, human = _info_cli(c.carrier)
    assert info["storage"]["backend"] == "sqlite"
    assert info["storage"]["failures"] >= 1
    assert "full" in info["storage"]["error"], info["storage"]  # "database or disk is full"
    assert "storage   UNAVAILABLE (sqlite)" in human
    assert "not acknowledged" in human
    acked = _show(c.manufacturer, cid)["acked_nonce_sent"]
    assert acked < sent
    assert acked <= _committed_received(payee_db, cid)  # no receipt beyond what is stored
    assert "storage.unavailable" in c.carrier.log_path.read_text()  # type: ignore[union-attr]

    # -- space again: the payer's stream resends, the payee commits and acknowledges ---------
    carrier_fs.free()
    wait_for(lambda: _show(c.manufacturer, cid)["acked_nonce_sent"] == sent,
             "the payee to acknowledge everything once its disk has room", 60)
    assert _committed_received(payee_db, cid) == sent
    assert _show(c.carrier, cid)["nonce_received"] == sent
    assert c.carrier.api("GET", "/api/info")["storage"]["state"] == "ok"
    assert "storage.recovered" in c.carrier.log_path.read_text()  # type: ignore[union-attr]

    # -- the payer's disk fills: a payment is refused 503 and nothing is signed away ---------
    man_fs.fill()
    with pytest.raises(ClusterError, match=r"503.*STORAGE_UNAVAILABLE"):
        _pay(c.manufacturer, cid, 10)
    assert c.manufacturer.api("GET", "/api/info")["storage"]["state"] == "unavailable"
    shown = _show(c.manufacturer, cid)
    assert (shown["nonce_sent"], shown["acked_nonce_sent"]) == (sent, sent)
    man_fs.free()
    assert _pay(c.manufacturer, cid, 10)["acked_nonce_sent"] == sent + 10
    assert c.manufacturer.api("GET", "/api/info")["storage"]["state"] == "ok"
    assert _committed_received(payee_db, cid) == sent + 10
    received = Decimal(_show(c.carrier, cid)["received"]["precise"])
    assert received == Decimal("0.0123") * (sent + 10)  # every km once, none lost or doubled


# -- PostgreSQL going away mid-stream -----------------------------------------------------------
#
# Not `pg_ctlcluster … restart`: the server is shared by every test run on the machine, and a
# restart would fail theirs. The payee's own database is taken away instead, the way a restart
# looks from the node: `ALTER DATABASE … ALLOW_CONNECTIONS false` and pg_terminate_backend on
# its connections (open transactions die mid-operation, new connections are refused), then given
# back (ADR 0250).


async def _pg(sql: str, *, database: str = "postgres") -> Any:
    import asyncpg

    assert PG_URL is not None
    base = PG_URL.replace("postgresql+asyncpg://", "postgresql://", 1).rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{base}/{database}")
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_database() -> Iterator[tuple[str, str]]:
    if not PG_URL:
        pytest.skip("METERLINE_TEST_PG_URL is not set: PostgreSQL storage-fault test skipped")
    name = f"meterline_faults_{secrets.token_hex(4)}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield name, f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_pg(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pg_received(name: str, cid: str) -> int:
    rows = asyncio.run(_pg(f"SELECT state FROM channel WHERE id = '{cid}'", database=name))
    return decode_channel(bytes(rows[0]["state"])).received.nonce


def test_postgresql_taken_away_mid_stream_stops_acks_and_resumes_with_nothing_lost(
        tmp_path: Path, pg_database: tuple[str, str]) -> None:
    name, url = pg_database
    with companies(tmp_path, databases={"carrier": url}) as c:
        cid = c.open_channel()
        assert _pay(c.manufacturer, cid, 100)["acked_nonce_sent"] == 100
        paying: dict[str, Any] = {}

        def pay() -> None:
            try:
                paying["ok"] = _pay(c.manufacturer, cid, 4_000)
            except ClusterError as exc:  # the 504 the pay call gives up with is expected
                paying["error"] = str(exc)

        payer = threading.Thread(target=pay)
        payer.start()
        wait_for(lambda: _show(c.carrier, cid)["nonce_received"] > 600, "the stream to flow")
        asyncio.run(_pg(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        asyncio.run(_pg("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}'"))
        wait_for(lambda: c.carrier.api("GET", "/api/info")["storage"]["state"] == "unavailable",
                 "the payee to notice its database is gone", 30)
        _, human = _info_cli(c.carrier)
        assert "storage   UNAVAILABLE (postgresql)" in human
        frozen = _show(c.manufacturer, cid)["acked_nonce_sent"]
        payer.join(timeout=3)  # give the stream time: no receipt may come while it is gone
        assert _show(c.manufacturer, cid)["acked_nonce_sent"] == frozen
        assert frozen < 4_100

        asyncio.run(_pg(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        assert _pg_received(name, cid) >= frozen  # every receipt given was committed
        payer.join(timeout=120)
        assert not payer.is_alive()
        wait_for(lambda: _show(c.manufacturer, cid)["acked_nonce_sent"] == 4_100,
                 "the payee to acknowledge everything once its database is back", 60)
        assert _pg_received(name, cid) == 4_100
        shown = _show(c.carrier, cid)
        assert shown["nonce_received"] == 4_100
        assert Decimal(shown["received"]["precise"]) == Decimal("0.0123") * 4_100
        assert c.carrier.api("GET", "/api/info")["storage"]["state"] == "ok"
        assert "error" not in paying or "NOT_ACKNOWLEDGED" in paying["error"], paying
