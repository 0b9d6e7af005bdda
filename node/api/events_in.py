"""``POST /api/channels/{id}/events``: a batch of usage events, plain or CloudEvents 1.0 JSON.

Bodies (specs/admin-api.yaml, ``UsageEventsRequest``):

* ``application/json``: ``{"events": [{"id", "units": {"km": "12.5"}, "ref", "time"}, …],
  "wait": true}``; an entry with ``specversion`` is read as a CloudEvent;
* ``application/cloudevents+json``: one CloudEvent ``{"specversion": "1.0", "id", "source",
  "type", "time", "data": {"units", "ref"}}``;
* ``application/cloudevents-batch+json``: a JSON array of CloudEvents.

At most ``MAX_BATCH`` events. A body that is not one of these is refused whole (400); an event
that is malformed is refused alone, with a code, beside the others. The answer lists, per
event, ``accepted`` / ``duplicate`` / ``refused`` (node.usage_events decides).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from node.api.validate import MAX_DEPTH, MAX_INT_DIGITS, BadInput, channel_ref
from node.keys import CHANNELS
from node.usage_events import UsageEvents
from node.views import money
from protocol import channel as ch
from protocol.errors import ProtocolError
from protocol.messages import USAGE_TEXT
from protocol.tariff import TariffLine, parse_quantity
from protocol.usage_events import MAX_BATCH, Decision, Outcome, UsageEvent
from rails import jsonsafe

EVENTS = web.AppKey("usage_events", UsageEvents)
MAX_EVENTS_BODY = 512 * 1024
"""100 CloudEvents of ~5 KiB each at most."""
CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENT_BATCH = "application/cloudevents-batch+json"
EVENT_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""An event id: 1 to 128 printable ASCII characters, no spaces (UUIDs, ERP document numbers)."""
_REF = re.compile(USAGE_TEXT)
_QUANTITY = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})",
    re.IGNORECASE)
PLAIN_MEMBERS = frozenset({"id", "units", "ref", "time"})
CLOUD_MEMBERS = frozenset({"specversion", "id", "source", "type", "time", "data", "subject",
                           "datacontenttype", "dataschema"})


class EventRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def parse_time(text: Any) -> int:
    """Milliseconds since the epoch of an RFC 3339 timestamp with its offset."""
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise EventRefused("BAD_TIME", "time must be an RFC 3339 timestamp such as "
                           "2026-12-02T13:00:00Z")
    fraction = (match.group(2) or "")[:7]
    zone = "+00:00" if match.group(3).upper() == "Z" else match.group(3)
    try:
        moment = datetime.fromisoformat(match.group(1).upper() + fraction + zone)
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise EventRefused("BAD_TIME", f"{text!r:.40} is not a valid time") from None


class EventReader:
    """Reads the events of one batch against a channel's tariff: one pass per event, with
    what events of a batch share (the tariff's units; the same time or quantity text, parsed
    once) kept for the batch. Each event is checked exactly as on its own."""

    def __init__(self, tariff: Sequence[TariffLine]) -> None:
        self.tariff = tariff
        self.by_unit = {line.unit: i for i, line in enumerate(tariff)}
        self.times: dict[str, int] = {}
        self.amounts: dict[tuple[int, str], int] = {}

    def read(self, raw: Any) -> UsageEvent:
        """One event (plain or CloudEvents shape) as the protocol's UsageEvent, or
        EventRefused."""
        if not isinstance(raw, dict):
            raise EventRefused("BAD_EVENT", "an event is a JSON object")
        cloud = "specversion" in raw
        allowed = CLOUD_MEMBERS if cloud else PLAIN_MEMBERS
        if not allowed.issuperset(raw):
            unknown = sorted(set(raw) - allowed)
            raise EventRefused("UNKNOWN_FIELD", f"unknown member(s) {', '.join(unknown[:5])} "
                               f"(an event takes {', '.join(sorted(allowed))})")
        event_id = raw.get("id")
        if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
            raise EventRefused("BAD_EVENT_ID", "id must be 1 to 128 printable ASCII characters")
        source: Any = ""
        kind: Any = ""
        if cloud:
            source, kind, units, ref = _cloud(raw)
        else:
            units, ref = raw.get("units"), raw.get("ref", "")
        if not isinstance(ref, str) or len(ref) > 64 or not _REF.fullmatch(ref) or len(
                ref := unicodedata.normalize("NFC", ref)) > 64:  # NFC may write one as three
            raise EventRefused("BAD_REFERENCE", "ref must be at most 64 characters of text "
                               "without control or invisible characters")
        if "time" not in raw:
            raise EventRefused("BAD_TIME", "time is required (RFC 3339): an event older than "
                               "the deduplication window is refused by it, so no retry charges "
                               "twice")
        time_ms = self.time(raw["time"])
        return UsageEvent(event_id, self.quantities(units), ref, time_ms, source or "",
                          kind or "")

    def time(self, text: Any) -> int:
        if isinstance(text, str):
            known = self.times.get(text)
            if known is None:
                known = self.times[text] = parse_time(text)
            return known
        return parse_time(text)

    def quantities(self, units: Any) -> tuple[int, ...]:
        if not isinstance(units, dict) or not 1 <= len(units) <= 16:
            raise EventRefused("BAD_UNITS", "units must be an object like {\"km\": \"12.5\"}")
        tariff, by_unit = self.tariff, self.by_unit
        quantities = [0] * len(tariff)
        for unit, value in units.items():
            index = by_unit.get(unit)
            if index is None:
                raise EventRefused("UNKNOWN_UNIT", f"the tariff has no unit {unit[:32]!r} "
                                   f"(it has {', '.join(by_unit)})")
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                value = str(value)
            if not isinstance(value, str):
                raise EventRefused("BAD_UNITS", f"{unit}: a quantity is a decimal string "
                                   "(\"12.5\") or a non-negative integer")
            known = self.amounts.get((index, value))
            if known is None:
                known = self.amounts[(index, value)] = _quantity(unit, value, tariff[index])
            quantities[index] = known
        return tuple(quantities)


def parse_event(raw: Any, tariff: Sequence[TariffLine]) -> UsageEvent:
    """One event on its own (EventReader.read for a batch)."""
    return EventReader(tariff).read(raw)


def _cloud(raw: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """A CloudEvent's source, type, units and ref (EventRefused when it is not one)."""
    if raw["specversion"] != "1.0":
        raise EventRefused("BAD_CLOUDEVENT", "specversion must be \"1.0\"")
    source, kind = raw.get("source"), raw.get("type")
    for name, value in (("source", source), ("type", kind)):
        if not isinstance(value, str) or not 1 <= len(value) <= 256 or not _REF.fullmatch(
                value):
            raise EventRefused("BAD_CLOUDEVENT", f"{name} must be 1 to 256 characters")
    if raw.get("datacontenttype", "application/json") != "application/json":
        raise EventRefused("BAD_CLOUDEVENT", "datacontenttype must be application/json")
    for name in ("subject", "dataschema"):
        if name in raw and not (isinstance(raw[name], str) and len(raw[name]) <= 256):
            raise EventRefused("BAD_CLOUDEVENT", f"{name} must be a string")
    data = raw.get("data")
    if not isinstance(data, dict) or set(data) - {"units", "ref"}:
        raise EventRefused("BAD_CLOUDEVENT", "data must be an object {units, ref}")
    return source, kind, data.get("units"), data.get("ref", "")


def _quantity(unit: str, value: str, line: TariffLine) -> int:
    if not _QUANTITY.fullmatch(value):
        raise EventRefused("BAD_UNITS", f"{unit}: a quantity is a decimal string (\"12.5\") "
                           "or a non-negative integer")
    try:
        return parse_quantity(value, line)
    except ProtocolError as exc:
        raise EventRefused("BAD_UNITS", exc.message) from None


async def _read(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_EVENTS_BODY:
        raise BadInput(f"the body is larger than {MAX_EVENTS_BODY} bytes", code="BODY_TOO_LARGE")
    raw = bytearray()
    while len(raw) <= MAX_EVENTS_BODY:
        chunk = await request.content.read(MAX_EVENTS_BODY + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > MAX_EVENTS_BODY:
        raise BadInput(f"the body is larger than {MAX_EVENTS_BODY} bytes", code="BODY_TOO_LARGE")
    try:
        return jsonsafe.load(bytes(raw), max_depth=MAX_DEPTH, max_number_chars=MAX_INT_DIGITS,
                             reject_duplicates=True)
    except jsonsafe.UnsafeJson as exc:
        raise BadInput(f"the body {exc}", code="BAD_JSON") from None


def batch_of(body: Any, content_type: str) -> tuple[list[Any], bool]:
    """The raw events of a body and whether to wait for the receipt."""
    if content_type == CLOUDEVENT:
        if not isinstance(body, dict):
            raise BadInput(f"{CLOUDEVENT} is one CloudEvent (a JSON object)", code="BAD_JSON")
        return [body], True
    if content_type == CLOUDEVENT_BATCH:
        if not isinstance(body, list):
            raise BadInput(f"{CLOUDEVENT_BATCH} is a JSON array of CloudEvents", code="BAD_JSON")
        events: Any = body
        wait: Any = True
    else:
        if not isinstance(body, dict):
            raise BadInput("the body must be a JSON object {\"events\": [...]}", code="BAD_JSON")
        unknown = sorted(set(body) - {"events", "wait"})
        if unknown:
            raise BadInput(f"unknown member(s) {', '.join(unknown[:5])} (this route takes "
                           "events, wait)", code="UNKNOWN_FIELD")
        events, wait = body.get("events"), body.get("wait", True)
        if not isinstance(wait, bool):
            raise BadInput("wait must be a JSON boolean (true or false)", code="BAD_WAIT")
        if not isinstance(events, list):
            raise BadInput("events is required: a list of usage events", code="MISSING_FIELD")
    if not 1 <= len(events) <= MAX_BATCH:
        raise BadInput(f"a batch has 1 to {MAX_BATCH} events, not {len(events)}",
                       code="BAD_BATCH")
    return events, wait


def answer_json(state: ch.ChannelState, raws: list[Any],
                results: list[Decision | EventRefused]) -> dict[str, Any]:
    out = []
    counts = dict.fromkeys(("accepted", "duplicate", "refused"), 0)
    prices: dict[int, dict[str, str]] = {}
    """Each distinct amount rendered once (the events of a batch mostly cost the same)."""
    for index, (raw, result) in enumerate(zip(raws, results, strict=True)):
        event_id = raw.get("id") if isinstance(raw, dict) else None
        entry: dict[str, Any] = {"index": index,
                                 "id": event_id if isinstance(event_id, str) else None}
        if isinstance(result, EventRefused) or result.outcome is Outcome.REFUSED:
            entry.update(status="refused", code=result.code, message=result.message)
            counts["refused"] += 1
        else:
            price = prices.get(result.amount)
            if price is None:
                price = prices[result.amount] = money(result.amount, state)
            status = result.outcome.value
            entry.update(status=status, nonce=result.nonce, amount=price)
            counts[status] += 1
        out.append(entry)
    return {"channel": state.channel_id.hex(), **counts, "events": out}


async def post_events(request: web.Request) -> web.Response:
    service = request.app[CHANNELS]
    cid = service.resolve(channel_ref(request.match_info["channel_id"]))
    raws, wait = batch_of(await _read(request), request.content_type)
    reader = EventReader(service.get(cid).terms.tariff)
    results: list[Decision | EventRefused] = []
    good: list[UsageEvent] = []
    for raw in raws:
        try:
            good.append(reader.read(raw))
            results.append(Decision(Outcome.ACCEPTED))  # a placeholder, replaced below
        except EventRefused as exc:
            results.append(exc)
    events = request.app[EVENTS]
    refused = [r.code for r in results if isinstance(r, EventRefused)]
    if refused:
        events.count_refused(refused)
    decisions = iter(await events.submit(cid, good, wait=wait) if good else [])
    results = [r if isinstance(r, EventRefused) else next(decisions) for r in results]
    return web.json_response(answer_json(service.get(cid), raws, results))


def routes() -> list[web.RouteDef]:
    return [web.post("/api/channels/{channel_id}/events", post_events)]


__all__ = ["EVENTS", "EventReader", "parse_event", "post_events", "routes"]
