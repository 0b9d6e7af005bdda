"""``GET /api/events``: the event log (node.events) as server-sent events or JSON pages.

A client that asks for ``text/event-stream`` (its Accept header names it) gets the events after
``after`` (or after its ``Last-Event-ID``), then each new one as it commits, each with its ``id:``
line, so a client that reconnects resumes where it left off and loses nothing; a comment line
every 15 s keeps proxies from closing an idle stream. Any other client gets one JSON page
(``events``, ``last_id``, ``more``); it asks again with ``after=last_id``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from node.api.validate import NO_BODY, Body, Text, TextOrList, read_json
from node.errors import NodeError
from node.events import EVENT_TYPES, PAGE_MAX, event_json, parse_types
from node.keys import CONTEXT, WEBHOOKS
from node.storage.models import WebhookEndpoint

KEEPALIVE_S = 15.0
QUERY = frozenset({"after", "limit", "types"})
MAX_ID = 2**63 - 1


def _int(name: str, text: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not (
            low <= int(text) <= high):
        raise NodeError(f"{name}: {text[:40]!r} is not an integer in {low}..{high}",
                        code="BAD_QUERY")
    return int(text)


def _query(request: web.Request) -> tuple[int, int, tuple[str, ...] | None]:
    unknown = sorted(set(request.query) - QUERY)
    if unknown:
        raise NodeError(f"unknown query parameter {unknown[0][:40]!r} (after, limit and types "
                        "only)", code="UNKNOWN_FIELD")
    after = 0
    if "after" in request.query:
        after = _int("after", request.query["after"], 0, MAX_ID)
    elif "Last-Event-ID" in request.headers:
        after = _int("Last-Event-ID", request.headers["Last-Event-ID"].strip(), 0, MAX_ID)
    limit = _int("limit", request.query.get("limit", "100"), 1, PAGE_MAX)
    types = None
    if "types" in request.query:
        try:
            types = parse_types(request.query["types"])
        except ValueError as exc:
            raise NodeError(str(exc), code="UNKNOWN_EVENT_TYPE") from None
    return after, limit, types


def wants_stream(request: web.Request) -> bool:
    """Only an explicit ``text/event-stream`` in Accept (``*/*`` gets the JSON page)."""
    return any(part.split(";")[0].strip().lower() == "text/event-stream"
               for part in request.headers.get("Accept", "").split(","))


async def events(request: web.Request) -> web.StreamResponse:
    after, limit, types = _query(request)
    log = request.app[CONTEXT].events
    if not wants_stream(request):
        rows = await log.page(after, limit + 1, types)
        page = [event_json(r) for r in rows[:limit]]
        return web.json_response({"events": page, "last_id": page[-1]["id"] if page else after,
                                  "more": len(rows) > limit})
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    try:
        while not log.closing:
            seen = log.generation
            rows = await log.page(after, PAGE_MAX, types)
            for row in rows:
                await response.write(frame(event_json(row)))
                after = row.id
            if len(rows) == PAGE_MAX:
                continue
            if not await log.wait(KEEPALIVE_S, seen):
                await response.write(b": keepalive\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away; it resumes with Last-Event-ID
    return response


def frame(event: dict[str, Any]) -> bytes:
    """One server-sent event: ``id:``, ``event:`` (the type) and the JSON ``data:`` line."""
    data = json.dumps(event, sort_keys=True, separators=(",", ":"))
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n".encode()


async def event_types(_request: web.Request) -> web.Response:
    return web.json_response({"types": [{"type": t, "description": d}
                                        for t, d in EVENT_TYPES.items()]})


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end live event streams at once (clients resume with Last-Event-ID)."""
    app[CONTEXT].events.close()


# -- webhooks -----------------------------------------------------------------------------------

EVENT_PATTERN = Text("UNKNOWN_EVENT_TYPE", 40, r"^[a-z*][a-z.*]{0,39}$",
                     "an event type like channel.opened, a prefix like channel.*, or *")
ADD_WEBHOOK = Body("AddWebhookRequest", {
    "url": Text("BAD_URL", 300, r"^https?://[^\x00-\x20\x7f]+$",
                "an http(s) URL like https://erp.example.com/meterline"),
    "events": TextOrList(EVENT_PATTERN, 20),
}, frozenset({"url"}))


def _webhook_id(request: web.Request) -> int:
    text = request.match_info["webhook_id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise NodeError(f"{text[:40]!r} is not a webhook id (a number; see `meterline webhook "
                        "list`)", code="BAD_WEBHOOK_ID")
    return int(text)


async def webhook_json(request: web.Request, row: WebhookEndpoint) -> dict[str, Any]:
    pending, oldest = await request.app[WEBHOOKS].pending(row)
    return {"id": row.id, "url": row.url, "events": row.events.split(","),
            "created_ms": row.created_ms, "cursor": row.cursor, "delivered": row.delivered,
            "pending": pending, "oldest_pending_ms": oldest, "attempts": row.attempts,
            "next_attempt_ms": row.next_attempt_ms or None, "last_error": row.last_error}


async def list_webhooks(request: web.Request) -> web.Response:
    rows = await request.app[WEBHOOKS].endpoints()
    return web.json_response({"webhooks": [await webhook_json(request, r) for r in rows]})


async def add_webhook(request: web.Request) -> web.Response:
    body = ADD_WEBHOOK.check(await read_json(request))
    events_ = body.get("events", "*")
    patterns = events_ if isinstance(events_, str) else ",".join(events_)
    row, secret = await request.app[WEBHOOKS].add(body["url"], patterns)
    return web.json_response({**await webhook_json(request, row), "secret": secret},
                             status=201)


async def remove_webhook(request: web.Request) -> web.Response:
    endpoint_id = _webhook_id(request)
    await request.app[WEBHOOKS].remove(endpoint_id)
    return web.json_response({"removed": endpoint_id})


async def test_webhook(request: web.Request) -> web.Response:
    NO_BODY.check(await read_json(request, optional=True))
    outcome = await request.app[WEBHOOKS].test(_webhook_id(request))
    return web.json_response({"delivered": outcome.ok, "status": outcome.status,
                              "error": outcome.error})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/events", events), web.get("/api/events/types", event_types),
            web.get("/api/webhooks", list_webhooks), web.post("/api/webhooks", add_webhook),
            web.delete("/api/webhooks/{webhook_id}", remove_webhook),
            web.post("/api/webhooks/{webhook_id}/test", test_webhook)]
