"""The daemons on PostgreSQL (`--db postgresql+asyncpg://…`): settle, restart, settle again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import CARRIER, ESCROW, MANUFACTURER, companies, wait_for
from tests.support import PG_URL, pg_databases

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="METERLINE_TEST_PG_URL is not set: PostgreSQL daemon test skipped")



@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    assert PG_URL is not None
    with pg_databases("e2e") as urls:
        yield urls


def test_settles_on_postgresql_across_a_restart(tmp_path: Path,
                                                databases: dict[str, str]) -> None:
    with companies(tmp_path, databases=databases) as c:
        cid = c.open_channel()
        funded = c.balances()
        c.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                           {"units": {"km": "2"}, "reference": "PG-1", "repeat": 2_000})
        for handle in (c.carrier, c.manufacturer, c.arbiter):  # every state from PostgreSQL
            handle.stop()
            handle.start()
        shown = c.carrier.api("GET", f"/api/channels/{cid}")
        assert shown["nonce_received"] == 2_000
        assert shown["received"]["precise"] == "49.20"  # 2,000 × 2 km × 0.0123 EUR
        c.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                           {"units": {"km": "2"}, "reference": "PG-2", "repeat": 10})
        c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
        wait_for(lambda: c.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
                 "the payouts to book")
        final = c.balances()
        sent = 2_010 * 2 * 12_300  # at scale 6
        assert final[CARRIER] - funded[CARRIER] == 10_000 + sent // 10_000
        assert final[MANUFACTURER] - funded[MANUFACTURER] == 500_000 - sent // 10_000
        assert final[ESCROW] == 0
