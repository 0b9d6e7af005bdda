"""Usage events with the sender on PostgreSQL: duplicates inside a batch and across retries,
and a kill -9 between commit and answer, charge each event once (the dedup rows and the proof
commit in one PostgreSQL transaction)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import companies, wait_for
from tests.e2e.test_usage_events import post, received, sent

PG_URL = os.environ.get("METERLINE_TEST_PG_URL")
pytestmark = pytest.mark.skipif(
    not PG_URL, reason="METERLINE_TEST_PG_URL is not set: PostgreSQL usage events test skipped")
KM = Decimal("0.0123")


async def _admin(sql: str) -> Any:
    import asyncpg

    assert PG_URL is not None
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.fixture
def database() -> Iterator[str]:
    assert PG_URL is not None
    name = f"meterline_e2e_events_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _rows(url: str) -> int:
    async def count() -> int:
        import asyncpg

        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            return int(await conn.fetchval("SELECT count(*) FROM usage_event"))
        finally:
            await conn.close()
    return asyncio.run(count())


def test_events_charge_once_on_postgresql_across_a_kill(tmp_path: Path, database: str) -> None:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    with companies(tmp_path, databases={"manufacturer": database}) as c:
        try:
            _run(c, database, now)
        except BaseException:
            for handle in (c.manufacturer, c.carrier):  # what the daemons said, for the log
                print(f"===== {handle.name}\n{handle.tail(30)}")
            raise


def _run(c: Any, database: str, now: str) -> None:
    """The batches, the kill and the retry (see the module docstring)."""
    cid = c.open_channel()
    man = c.manufacturer
    events = {"events": [{"id": f"PG-{i % 30}", "units": {"km": "1"}, "time": now}
                         for i in range(60)]}  # each id twice
    status, answer = post(man, cid, events)
    assert status == 200
    assert (answer["accepted"], answer["duplicate"]) == (30, 30)
    status, answer = post(man, cid, events)
    assert answer["duplicate"] == 60
    assert sent(man, cid) == 30 * KM
    # the carrier away: the answer waits for its receipt; kill the sender meanwhile
    c.carrier.stop()
    more = {"events": [{"id": f"PGK-{i}", "units": {"km": "1"}, "time": now}
                       for i in range(20)]}
    threading.Thread(target=lambda: _quiet(lambda: post(man, cid, more)),
                     daemon=True).start()
    wait_for(lambda: _rows(database) == 50, "the 20 new events to be committed")
    man.stop(kill=True)
    man.start()
    c.carrier.start()
    status, answer = post(man, cid, more)
    assert status == 200
    assert answer["duplicate"] == 20
    wait_for(lambda: received(c.carrier, cid) == 50 * KM, "the carrier to receive 50 km")
    assert sent(man, cid) == 50 * KM


def _quiet(call: Any) -> None:
    with contextlib.suppress(Exception):  # the connection dies with the node
        call()
