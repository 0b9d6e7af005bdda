"""Many channels on one node, for real (issue 13): a sandbox bank, an arbiter and two node
processes; 120 channels proposed, accepted, funded through the bank and confirmed by the
arbiter (node.bench_scale.open_channels, what `meterline bench` opens), the receiver restarted
and serving an update again (restart_until_served).
The arbiter answers a batched status query (ADR 0315) for every one of them, 16 at a time.
Behaviour only: the figures are reported by `meterline bench`, never asserted here."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from node.bench_scale import open_channels, restart_until_served
from node.cluster import Companies, start_companies
from node.peerclient import PeerClient
from protocol.messages import MAX_STATUS_BATCH, EscrowStatuses, EscrowStatusQuery
from protocol.types import ChannelId

CHANNELS = 120


async def _statuses(companies: Companies, ids: list[str]) -> dict[str, str]:
    """Every channel's phase at the arbiter, asked 16 a request (signed, our challenge)."""
    client = PeerClient(node_id=companies.manufacturer.node_id, ssl_context=None,
                        max_body_bytes=1 << 20)
    phases: dict[str, str] = {}
    arbiter = bytes.fromhex(companies.arbiter.node_id)
    try:
        for i in range(0, len(ids), MAX_STATUS_BATCH):
            asked = tuple(ChannelId(bytes.fromhex(c)) for c in ids[i:i + MAX_STATUS_BATCH])
            challenge = secrets.token_bytes(16)
            answer = await client.send(companies.arbiter.url, "/p2p/status",
                                       EscrowStatusQuery(asked, challenge))
            assert isinstance(answer, EscrowStatuses)
            answer.verify_signature(arbiter)
            assert answer.challenge == challenge
            assert answer.unknown == ()
            assert [s.channel_id for s in answer.statuses] == list(asked)
            for status in answer.statuses:
                assert status.challenge == challenge
                assert len(status.funding) == 1  # the opener's deposit, booked and signed
                status.funding[0].verify_signature(arbiter)
                phases[status.channel_id.hex()] = status.phase
    finally:
        await client.close()
    return phases


def test_120_channels_open_for_real_and_the_restarted_receiver_serves_an_update(
        tmp_path: Path) -> None:
    companies = start_companies(tmp_path, manufacturer_balance=10_000_000)
    try:
        opened, car_open, seconds = asyncio.run(
            open_channels(companies, CHANNELS, lambda _text: None))
        assert len(set(opened)) == CHANNELS
        assert car_open == CHANNELS
        assert seconds > 0

        first = min(opened)
        restart: dict[str, Any] = restart_until_served(
            companies.carrier, companies.manufacturer, first, deadline_s=120.0)
        assert restart["restart_error"] == ""
        assert 0 < restart["port_s"] < restart["restart_s"]

        listing = companies.carrier.api("GET", "/api/channels")["channels"]
        ours = sorted(c["id"] for c in listing if c["phase"] == "open")
        assert ours == sorted(opened)
        # the update served after the restart is committed by the receiver, on `first` only
        received = {c["id"]: str(c["received"]) for c in listing}
        others = {received[c] for c in opened if c != first}
        assert len(others) == 1
        assert received[first] not in others

        phases = asyncio.run(_statuses(companies, ours))
        assert phases == dict.fromkeys(ours, "open")
    finally:
        companies.cluster.stop()
