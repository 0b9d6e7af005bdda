"""Admin API: JSON on localhost behind a bearer token. Everything the CLI does goes through here.

Described by ``specs/admin-api.yaml`` (served at ``/openapi.yaml``).
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from node.context import now_ms
from node.errors import NodeError, NotFound
from node.keys import CHANNELS, CONFIG, CONTEXT, ESCROW, OUTBOX, SIGNER, TOKEN, TRANSFERS
from node.storage.models import Peer
from node.views import channel_detail, channel_summary, minor, statement
from protocol.errors import ErrorCode, ProtocolError
from protocol.money import DEFAULT_SCALE, parse_decimal, parse_money
from protocol.tariff import parse_quantity, parse_tariff_line
from rails.errors import RailError

log = structlog.get_logger()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPENAPI = Path(__file__).resolve().parents[2] / "specs" / "admin-api.yaml"
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def problem(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}},
                             status=status)


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/openapi.yaml":
        return await handler(request)
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {request.app[TOKEN]}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return problem(401, "UNAUTHORIZED", "missing or wrong admin token "
                       "(Authorization: Bearer <token from the data directory's admin.token>)")
    return await handler(request)


@web.middleware
async def admin_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:12], path=request.path)
    if "channel_id" in request.match_info:
        structlog.contextvars.bind_contextvars(channel=request.match_info["channel_id"][:16])
    try:
        return await handler(request)
    except NodeError as exc:
        return problem(exc.status, exc.code, exc.message)
    except ProtocolError as exc:
        status = 409 if exc.code in (ErrorCode.INVALID_STATE, ErrorCode.CAPACITY_EXCEEDED) else 400
        return problem(status, exc.code.name, exc.message)
    except RailError as exc:
        return problem(502, exc.code, str(exc))
    except web.HTTPNotFound:
        return problem(404, "NO_SUCH_ROUTE", f"no admin route {request.method} {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        return problem(405, "METHOD_NOT_ALLOWED",
                       f"{request.method} is not allowed on {request.path} "
                       f"(allowed: {', '.join(sorted(exc.allowed_methods))})")


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise NodeError("the body is not JSON", code="BAD_JSON") from None
    if not isinstance(data, dict):
        raise NodeError("the body must be a JSON object", code="BAD_JSON")
    return data


def _int(body: dict[str, Any], field: str, default: int) -> int:
    value = body.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise NodeError(f"{field} must be an integer", code=f"BAD_{field.upper()}")
    return value


def parse_duration(text: str) -> int:
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise NodeError(f"{text!r} is not a duration like 24h, 90m or 30s", code="BAD_DURATION")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


async def status(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    body: dict[str, Any] = {
        "node_id": request.app[SIGNER].node_id.hex(),
        "name": config.name,
        "role": config.role,
        "public_url": config.public_url,
        "bank": {"rail": config.bank.rail, "account": config.bank.identification,
                 "url": config.bank.url},
    }
    if config.role == "arbiter":
        body["escrows"] = dict(Counter(s.phase.value for s in request.app[ESCROW].states.values()))
    else:
        body["channels"] = dict(Counter(
            s.phase.value for s in request.app[CHANNELS].states.values()))
    return web.json_response(body)


def peer_json(peer: Peer, allow: tuple[str, ...]) -> dict[str, Any]:
    return {"node_id": peer.node_id, "url": peer.url, "name": peer.name, "role": peer.role,
            "allowed": peer.node_id in allow, "account": json.loads(peer.info).get("account")}


async def list_peers(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({"peers": [peer_json(p, ctx.config.allow)
                                        for p in await ctx.all_peers()]})


async def add_peer(request: web.Request) -> web.Response:
    body = await json_body(request)
    url = body.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
        raise NodeError("url must be an http(s) URL such as http://127.0.0.1:7811",
                        code="BAD_URL")
    ctx = request.app[CONTEXT]
    info = await ctx.peers.info(url)
    node_id = str(info.get("node_id", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", node_id):
        raise NodeError(f"{url} did not answer with a node id", code="NOT_A_NODE")
    if node_id == ctx.node_id:
        raise NodeError("that URL is this node itself", code="SELF")
    async with ctx.db() as session, session.begin():
        row = await session.get(Peer, node_id)
        if row is None:
            row = Peer(node_id=node_id, added_ms=now_ms())
            session.add(row)
        row.url = url.rstrip("/")
        row.name = str(info.get("name", ""))[:100]
        row.role = "arbiter" if info.get("role") == "arbiter" else "node"
        row.info = json.dumps(info)
    return web.json_response(peer_json(row, ctx.config.allow), status=201)


async def list_channels(request: web.Request) -> web.Response:
    service = request.app[CHANNELS]
    channels = [channel_summary(s) for s in
                sorted(service.states.values(), key=lambda s: s.updated_ms, reverse=True)]
    held = [{"id": h.id, "peer": h.opener_id, "phase": "awaiting-acceptance"}
            for h in await service.held()]
    return web.json_response({"channels": channels, "proposals": held})


async def _detail(request: web.Request, cid: str) -> dict[str, Any]:
    state = request.app[CHANNELS].get(cid)
    transfers = await request.app[TRANSFERS].for_channel(cid)
    return channel_detail(state, transfers)


async def show_channel(request: web.Request) -> web.Response:
    cid = request.app[CHANNELS].resolve(request.match_info["channel_id"])
    return web.json_response(await _detail(request, cid))


async def open_channel(request: web.Request) -> web.Response:
    body = await json_body(request)
    scale = _int(body, "scale", DEFAULT_SCALE)
    for field in ("peer", "arbiter", "deposit"):
        if not isinstance(body.get(field), str):
            raise NodeError(f"{field} is required", code="MISSING_FIELD")
    tariffs = body.get("tariff") or []
    if isinstance(tariffs, str):
        tariffs = [tariffs]
    if not tariffs or not all(isinstance(t, str) for t in tariffs):
        raise NodeError("tariff needs at least one line like 'km=0.0123'", code="INVALID_TARIFF")
    lines = tuple(parse_tariff_line(t, scale=scale) for t in tariffs)
    window = parse_duration(body["dispute_window"]) if body.get("dispute_window") else (
        request.app[CONFIG].dispute_window_ms)
    service = request.app[CHANNELS]
    state = await service.open(
        peer_id=await _peer_id(request, body["peer"]),
        arbiter_id=await _peer_id(request, body["arbiter"]),
        deposit=body["deposit"], peer_deposit=body.get("peer_deposit"), tariff=lines,
        dispute_window_ms=window, scale=scale)
    return web.json_response(await _detail(request, state.channel_id.hex()), status=201)


async def _peer_id(request: web.Request, ref: str) -> str:
    """A peer by node id, unique node-id prefix or name."""
    peers = await request.app[CONTEXT].all_peers()
    ref_l = ref.lower()
    matches = [p for p in peers if p.node_id.startswith(ref_l) or p.name == ref]
    if len(matches) == 1:
        return str(matches[0].node_id)
    if not matches:
        raise NotFound(f"no peer {ref!r}: add it with `meterline peer add URL`",
                       code="UNKNOWN_PEER")
    raise NodeError(f"{ref!r} matches several peers", code="AMBIGUOUS_PEER")


async def accept_channel(request: web.Request) -> web.Response:
    state = await request.app[CHANNELS].accept_held(request.match_info["channel_id"])
    return web.json_response(await _detail(request, state.channel_id.hex()))


async def close_channel(request: web.Request) -> web.Response:
    body = await json_body(request) if request.can_read_body else {}
    service = request.app[CHANNELS]
    cid = service.resolve(request.match_info["channel_id"])
    if body.get("force"):
        await service.force_close(cid)
    else:
        await service.close(cid)
    return web.json_response(await _detail(request, cid))


async def pay(request: web.Request) -> web.Response:
    body = await json_body(request)
    service = request.app[CHANNELS]
    cid = service.resolve(request.match_info["channel_id"])
    state = service.get(cid)
    terms = state.terms
    quantities = [0] * len(terms.tariff)
    units = body.get("units") or {}
    if not isinstance(units, dict):
        raise NodeError("units is an object like {\"km\": \"12.5\"}", code="BAD_UNITS")
    by_unit = {line.unit: i for i, line in enumerate(terms.tariff)}
    for unit, text in units.items():
        if not isinstance(text, str):
            raise NodeError(f"the quantity of {unit} must be a decimal string like \"12.5\"",
                            code="BAD_UNITS")
        if unit not in by_unit:
            raise NodeError(f"the tariff has no unit {unit!r} (it has {', '.join(by_unit)})",
                            code="UNKNOWN_UNIT")
        quantities[by_unit[unit]] = parse_quantity(text, terms.tariff[by_unit[unit]])
    direct = 0
    if body.get("amount"):
        money = parse_money(str(body["amount"]), terms.scale)
        if money.currency != terms.currency:
            raise NodeError(f"the channel is in {terms.currency}, not {money.currency}",
                            code="WRONG_CURRENCY")
        direct = money.amount
    if not any(quantities) and not direct:
        raise NodeError("give units (km=12.5) or an amount (\"3.20 EUR\")", code="NOTHING_TO_PAY")
    reference = str(body.get("reference") or "")
    if len(reference) > 64 or not re.fullmatch(r"[\x20-\x7e]*", reference):
        raise NodeError("a reference is at most 64 printable ASCII characters",
                        code="BAD_REFERENCE")
    repeat = _int(body, "repeat", 1)
    await service.pay(cid, quantities=quantities, direct_amount=direct, reference=reference,
                      repeat=repeat, wait=bool(body.get("wait", True)))
    return web.json_response(await _detail(request, cid))


async def channel_statement(request: web.Request) -> web.Response:
    service = request.app[CHANNELS]
    cid = service.resolve(request.match_info["channel_id"])
    transfers = await request.app[TRANSFERS].for_channel(cid)
    return web.json_response(await statement(request.app[CONTEXT], service.get(cid), transfers))


async def list_escrows(request: web.Request) -> web.Response:
    escrow = request.app[ESCROW]
    out = []
    for cid, state in escrow.states.items():
        cur = state.terms.currency
        out.append({"id": cid, "phase": state.phase.value, "currency": cur,
                    "deposited": {"opener": minor(state.deposited[0], cur),
                                  "peer": minor(state.deposited[1], cur)},
                    "payouts": None if state.payouts is None else
                    {"opener": minor(state.payouts.opener, cur),
                     "peer": minor(state.payouts.peer, cur)},
                    "deadline_ms": state.deadline_ms})
    unapplied = [
        {"entry_id": c.entry_id, "reference": c.reference,
         "amount": minor(c.amount_minor, c.currency), "debtor": c.debtor,
         "booked_ms": c.booked_ms, "reason": c.reason}
        for c in await escrow.unapplied()
    ]
    return web.json_response({"escrows": out, "unapplied_credits": unapplied})


async def list_outbox(request: web.Request) -> web.Response:
    """Deliveries not done: pending (retried until delivered) and refused (ended by a refusal
    the recipient signed; kept for the operator)."""
    rows = await request.app[OUTBOX].rows()
    return web.json_response({"outbox": [
        {"id": r.id, "channel": r.channel_id, "kind": r.kind, "target": r.target,
         "recipient": r.recipient, "purpose": r.purpose, "urgent": r.urgent,
         "attempts": r.attempts, "created_ms": r.created_ms,
         "next_attempt_ms": None if r.refused else r.next_attempt_ms,
         "last_error": r.last_error, "refused": r.refused}
        for r in rows
    ]})


async def openapi(request: web.Request) -> web.StreamResponse:
    if not OPENAPI.exists():
        raise NotFound("the OpenAPI document is not installed")
    return web.FileResponse(OPENAPI, headers={"Content-Type": "application/yaml"})


def routes(role: str) -> list[web.RouteDef]:
    common = [
        web.get("/openapi.yaml", openapi),
        web.get("/api/status", status),
        web.get("/api/peers", list_peers),
        web.post("/api/peers", add_peer),
        web.get("/api/outbox", list_outbox),
    ]
    if role == "arbiter":
        return [*common, web.get("/api/escrows", list_escrows)]
    return [
        *common,
        web.get("/api/channels", list_channels),
        web.post("/api/channels", open_channel),
        web.get("/api/channels/{channel_id}", show_channel),
        web.post("/api/channels/{channel_id}/accept", accept_channel),
        web.post("/api/channels/{channel_id}/close", close_channel),
        web.post("/api/channels/{channel_id}/pay", pay),
        web.get("/api/channels/{channel_id}/statement", channel_statement),
    ]


__all__ = ["parse_decimal", "routes"]
