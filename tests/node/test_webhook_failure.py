"""node.webhooks: a failed delivery is recorded and logged, and the round goes on (reviewer
finding)."""

from __future__ import annotations

from pathlib import Path

from node.cluster import free_port
from node.webhooks import Webhooks

from .conftest import ServicesFactory, node_with_peers


async def test_a_failed_delivery_ends_the_round_with_its_backoff_not_an_error(
        tmp_path: Path, services: ServicesFactory) -> None:
    """The failure was logged with ``event=``, structlog's own first argument: a TypeError out
    of the round, so "webhook.failed" was never logged (a misleading "webhook.round_failed"
    instead) and the other endpoints' catch-ups were left running beside the next round's."""
    svc = await node_with_peers(tmp_path, services, 0)
    hooks = Webhooks(svc.ctx)
    row, _ = await hooks.add(f"http://127.0.0.1:{free_port()}/hook")
    await svc.channels.commit(svc.sim.states[0], new=True)  # type: ignore[attr-defined]
    try:
        wait_s = await hooks.deliver_due()  # nothing listens: the delivery fails
    finally:
        await hooks.stop()
    stored = await hooks.get(row.id)
    assert stored.attempts == 1
    assert stored.last_error.startswith("event ")
    assert 0.05 <= wait_s <= 30.0
