"""``GET /api/rails/reconcile``: the rail's statement matched to our payments, for a period.

The node decides nothing here: it asks its rail (:meth:`rails.port.Rail.reconcile`, which uses
:mod:`rails.reconcile`) and shows the answer. Amounts are minor units with their currency, as
the statement carries them.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import web

from node.errors import NodeError, NotFound
from node.keys import CONTEXT
from rails.port import StatementEntry


def _day(request: web.Request, name: str) -> date | None:
    text = request.query.get(name)
    if text is None:
        return None  # absent: no bound (an empty value is not a date, and is refused)
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise NodeError(f"{name}: {text[:40]!r} is not a date (YYYY-MM-DD)",
                        code="INVALID_PERIOD") from None


def _entry(entry: StatementEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"entry_id": entry.entry_id, "direction": entry.direction.value,
            "amount_minor": str(entry.amount_minor), "currency": entry.currency,
            "booking_date": entry.booking_date.isoformat() if entry.booking_date else None,
            "end_to_end_id": entry.end_to_end_id, "return_reason": entry.return_reason}


async def reconcile(request: web.Request) -> web.StreamResponse:
    unknown = sorted(set(request.query) - {"since", "until"})
    if unknown:
        raise NodeError(f"unknown query parameter {unknown[0][:40]!r} (since and until only)",
                        code="UNKNOWN_FIELD")
    since, until = _day(request, "since"), _day(request, "until")
    if since is not None and until is not None and since > until:
        raise NodeError(f"since {since} is after until {until}", code="INVALID_PERIOD")
    rail = request.app[CONTEXT].rail
    if rail is None:
        raise NotFound("this node has no rail configured ([bank] in config.toml)")
    result = await rail.reconcile(since=since, until=until)
    matches = [{"key": key, "outcome": "booked", "entry": _entry(e)}
               for key, e in sorted(result.booked.items())]
    matches += [{"key": key, "outcome": "returned", "entry": _entry(e)}
                for key, e in sorted(result.returned.items())]
    return web.json_response({
        "rail": rail.name,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "matches": matches,
        "differences": [{"kind": d.kind.value, "key": d.key, "reason": d.reason,
                         "entry": _entry(d.entry)} for d in result.differences],
        "outstanding": list(result.outstanding),
    })


def routes() -> list[web.RouteDef]:
    return [web.get("/api/rails/reconcile", reconcile)]
