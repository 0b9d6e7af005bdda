"""The curve of cost against work: aggregate signed updates/s with 1, 10 and 100 channels
streaming at once, each channel opened for real (bank and arbiter) by the scale phase.

At each point one ``POST /pay`` with ``repeat`` runs on every channel at the same time; the
aggregate is the updates the senders' nonces moved by (every one receipted when its call
returns) over the wall time from the first request to the last answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from node.bench_admin import AdminClient
from node.bench_figures import UNIT, Say

LEVELS = (1, 10, 100)
MIN_REPEAT = 20
"""Updates per channel at the widest point, whatever the total: enough to stream, not one call."""


async def _nonces(admin: AdminClient, cids: Sequence[str]) -> list[int]:
    details = await asyncio.gather(*(admin.call("GET", f"/api/channels/{cid}") for cid in cids))
    return [int(d["nonce_sent"]) for d in details]


async def _point(admin: AdminClient, cids: Sequence[str], repeat: int) -> dict[str, Any]:
    before = await _nonces(admin, cids)
    body = {"units": {UNIT: "1"}, "repeat": repeat}
    started = time.perf_counter()
    answers = await asyncio.gather(*(admin.call("POST", f"/api/channels/{cid}/pay", body)
                                     for cid in cids))
    seconds = time.perf_counter() - started
    updates = sum(int(a["nonce_sent"]) - b for a, b in zip(answers, before, strict=True))
    return {"channels": len(cids), "repeat": repeat, "updates": updates,
            "seconds": round(seconds, 3), "updates_per_s": round(updates / seconds, 1)}


async def measure_curve(admin: AdminClient, cids: Sequence[str], total: int,
                        say: Say) -> dict[str, Any]:
    """The points of :data:`LEVELS` that `cids` (open channels) allow, `total` updates each
    (split evenly, at least MIN_REPEAT per channel); the levels left out are listed."""
    levels = [n for n in LEVELS if n <= len(cids)]
    widest = cids[:max(levels, default=0)]
    say(f"curve: warming up {len(widest)} channels")
    await asyncio.gather(*(admin.call("POST", f"/api/channels/{cid}/pay",
                                      {"units": {UNIT: "1"}, "repeat": 5}) for cid in widest))
    points = []
    for n in levels:
        say(f"curve: {n} channel(s) streaming at once, {total:,} updates")
        points.append(await _point(admin, widest[:n], max(MIN_REPEAT, total // n)))
    one = points[0]["updates_per_s"] if points else None
    for p in points:
        p["ratio_to_one"] = round(p["updates_per_s"] / one, 4) if one else None
    return {"measured": bool(points), "points": points,
            "not_measured": [n for n in LEVELS if n not in levels],
            "channels_available": len(cids),
            "measured_how": "concurrent POST /api/channels/{id}/pay with repeat on each of N "
                            "channels (opened through the sandbox bank and the arbiter); "
                            "aggregate = receipted updates (the senders' nonces) / wall time "
                            "from the first request to the last answer"}
