"""Admin routes of long-lived channels (specs/admin-api.yaml): settle now, the schedule, a
schedule run at a given time, a top-up. Bodies are checked by node.api.validate's fields before
anything is used; the services (node.checkpoints, node.topups) do the rest."""

from __future__ import annotations

from aiohttp import web

from node.api.detail_reads import detail
from node.api.validate import MONEY, Body, Bool, Int, Nullable, Text, channel_ref, read_json
from node.errors import NodeError
from node.keys import CHANNELS
from protocol.errors import ProtocolError
from protocol.money import parse_money
from protocol.schedule import SettleSchedule
from protocol.types import MAX_AMOUNT, MAX_TIME_MS, Amount

SETTLE = Body("SettleRequest", {"wait": Bool("BAD_WAIT")})
SCHEDULE = Body("ScheduleRequest", {
    "every": Nullable(Text("BAD_DURATION", 16, r"^[0-9]{1,11}(ms|s|m|h|d)$", "\"1d\", \"12h\"")),
    "threshold": Nullable(MONEY),
})
RUN = Body("ScheduleRunRequest", {"at_ms": Int("BAD_TIME", 0, MAX_TIME_MS)})
TOPUP = Body("TopUpRequest", {"amount": MONEY, "wait": Bool("BAD_WAIT")},
             required=frozenset({"amount"}))


async def settle(request: web.Request) -> web.Response:
    body = SETTLE.check(await read_json(request, optional=True))
    channels = request.app[CHANNELS]
    cid = channels.resolve(channel_ref(request.match_info["channel_id"]))
    await channels.checkpoints.settle(cid, wait=body.get("wait", False))
    return web.json_response(await detail(request, cid))


async def set_schedule(request: web.Request) -> web.Response:
    from node.api.admin import parse_duration  # the one duration grammar (admin imports us)

    body = SCHEDULE.check(await read_json(request))
    channels = request.app[CHANNELS]
    cid = channels.resolve(channel_ref(request.match_info["channel_id"]))
    state = channels.get(cid)
    old = await channels.checkpoints.schedule(cid)
    every, threshold = old.every_ms, old.threshold
    if "every" in body:
        every = 0 if body["every"] in (None, "0ms", "0s") else parse_duration(body["every"])
    if "threshold" in body:
        threshold = Amount(0)
        if body["threshold"] is not None:
            try:
                amount = parse_money(body["threshold"], state.terms.scale)
            except ProtocolError as exc:
                raise NodeError(exc.message, code="INVALID_AMOUNT") from None
            if amount.currency != state.terms.currency:
                raise NodeError(f"the channel is in {state.terms.currency}, not "
                                f"{amount.currency}", code="WRONG_CURRENCY")
            if not 0 <= amount.amount <= MAX_AMOUNT:
                raise NodeError("a threshold out of range", code="INVALID_AMOUNT")
            threshold = Amount(amount.amount)
    await channels.checkpoints.set_schedule(cid, SettleSchedule(every, threshold))
    return web.json_response(await detail(request, cid))


async def run_schedules(request: web.Request) -> web.Response:
    """Run every channel's schedule at `at_ms` (default: now), as the node does on its own
    clock each watch interval: time is an input."""
    from node.context import now_ms

    body = RUN.check(await read_json(request))
    proposed = await request.app[CHANNELS].checkpoints.run_due(body.get("at_ms") or now_ms())
    return web.json_response({"proposed": proposed})


async def topup(request: web.Request) -> web.Response:
    body = TOPUP.check(await read_json(request))
    channels = request.app[CHANNELS]
    cid = channels.resolve(channel_ref(request.match_info["channel_id"]))
    try:
        await channels.topups.topup(cid, body["amount"], wait=body.get("wait", False))
    except ProtocolError as exc:
        raise NodeError(exc.message, code="INVALID_AMOUNT") from None
    return web.json_response(await detail(request, cid))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/channels/{channel_id}/settle", settle),
        web.post("/api/channels/{channel_id}/schedule", set_schedule),
        web.post("/api/channels/{channel_id}/topup", topup),
        web.post("/api/schedule/run", run_schedules),
    ]


__all__ = ["RUN", "SCHEDULE", "SETTLE", "TOPUP", "detail", "routes"]
