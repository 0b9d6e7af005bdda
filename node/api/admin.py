"""Admin API: JSON on localhost behind a bearer token. Everything the CLI does goes through here.

Described by ``specs/admin-api.yaml`` (served at ``/openapi.yaml``). Every body is read and
checked by ``node.api.validate`` (size, depth, integer length, then each member's type, range,
length and pattern, unknown members refused) before a handler uses any of it.
"""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy.exc import DBAPIError

from node import payout_returns
from node.api import admin_ops, events_in
from node.api.consent import routes as consent_routes
from node.api.detail_reads import detail as _detail  # what every route answering a channel shows
from node.api.escrows import routes as escrow_routes
from node.api.events_out import routes as events_routes
from node.api.metrics import routes as metrics_routes
from node.api.payout_account import routes as payout_account_routes
from node.api.reconcile import routes as reconcile_routes
from node.api.settle import routes as settle_routes
from node.api.validate import CLOSE, NO_BODY, OPEN_CHANNEL, PAY, channel_ref, read_json
from node.context import now_ms
from node.dashboard import routes as dashboard_routes
from node.dashboard import session as dashboard_session
from node.errors import NodeError, NotFound
from node.keys import CHANNELS, CONFIG, CONTEXT, ESCROW, OUTBOX, SIGNER, TOKEN, TRANSFERS
from node.peers import check_identity, remember, verified_account
from node.roles import Role
from node.storage.db import unavailable
from node.storage.models import HeldProposal, Peer
from node.views import channel_summary, minor, statement
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import URL, ChannelProposal
from protocol.money import DEFAULT_SCALE, parse_decimal, parse_money
from protocol.tariff import parse_quantity, parse_tariff_line
from protocol.types import MAX_DISPUTE_WINDOW_MS
from rails.errors import RailError

log = structlog.get_logger()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPENAPI = Path(__file__).resolve().parents[2] / "specs" / "admin-api.yaml"
_DURATION = re.compile(r"([0-9]{1,11})(ms|s|m|h|d)")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def problem(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}},
                             status=status)


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/openapi.yaml" or dashboard_session.public(request) or (
            dashboard_session.allows(request, request.app[TOKEN], now_ms())):
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
    except (DBAPIError, ConnectionError) as exc:  # a read that met storage away (ADR 0250)
        storage = unavailable(request.app[CONTEXT].engine, exc)
        if storage is None:
            raise
        return problem(storage.status, storage.code, storage.message)
    except web.HTTPNotFound:
        return problem(404, "NO_SUCH_ROUTE", f"no admin route {request.method} {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        answer = problem(405, "METHOD_NOT_ALLOWED",
                         f"{request.method} is not allowed on {request.path} (allowed: {allowed})")
        answer.headers["Allow"] = allowed  # RFC 9110 §15.5.6: a 405 MUST carry Allow
        return answer


async def json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, read under node.api.validate's guards (size, depth, integer
    length); the caller still checks its members."""
    return await read_json(request)


def parse_duration(text: str) -> int:
    """Milliseconds of ``24h``, ``90m``, ``30s``…; at most a year (no window is longer)."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise NodeError(f"{text!r:.40} is not a duration like 24h, 90m or 30s",
                        code="BAD_DURATION")
    ms = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if ms > MAX_DISPUTE_WINDOW_MS:
        raise NodeError(f"{text} is longer than {MAX_DISPUTE_WINDOW_MS // 86_400_000} days",
                        code="BAD_DURATION")
    return ms


def _channel_ref(request: web.Request) -> str:
    return channel_ref(request.match_info["channel_id"])


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
    if config.role is Role.ARBITER:
        body["escrows"] = dict(Counter(s.phase.value for s in request.app[ESCROW].states.values()))
    else:
        body["channels"] = dict(Counter(
            s.phase.value for s in request.app[CHANNELS].states.values()))
    return web.json_response(body)


def peer_json(peer: Peer, allow: tuple[str, ...]) -> dict[str, Any]:
    """A peer as stored; `account` only from its signed record (None for a row written before
    records were signed: add the peer again)."""
    account = verified_account(peer)
    return {"node_id": peer.node_id, "url": peer.url, "name": peer.name, "role": peer.role,
            "allowed": peer.node_id in allow, "issued_ms": peer.issued_ms,
            "account": None if account is None else {
                "scheme": account.scheme, "identification": account.identification,
                "name": account.name}}


async def list_peers(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({"peers": [peer_json(p, ctx.config.allow)
                                        for p in await ctx.all_peers()]})


_PEER_URL = URL.pattern
"""The wire's rule for a peer API's URL (protocol.messages.URL): a record that names any other
could never be signed and decoded."""
"""The wire's URL rule (NodeInfo.url, callbacks): what a peer record may hold."""


async def add_peer(request: web.Request) -> web.Response:
    """Learn (or refresh) a peer from its signed answer to our fresh challenge (node.peers)."""
    body = await json_body(request)
    unknown = set(body) - {"url", "id"}
    if unknown:
        raise NodeError(f"unknown fields {sorted(unknown)} (url, id)", code="UNKNOWN_FIELD")
    url = body.get("url")
    if not isinstance(url, str) or len(url) > URL.max_len or not (
            _PEER_URL and _PEER_URL.fullmatch(url.rstrip("/"))):
        raise NodeError("url must be an http(s) URL such as https://carrier.example:7811 "
                        f"(at most {URL.max_len} characters)", code="BAD_URL")
    url = url.rstrip("/")
    pin = body.get("id")
    if pin is not None and (not isinstance(pin, str)
                            or not re.fullmatch(r"[0-9a-fA-F]{64}", pin)):
        raise NodeError("id must be the peer's full node id (64 hex digits)", code="BAD_ID")
    ctx = request.app[CONTEXT]
    challenge = secrets.token_bytes(16)
    info = await ctx.peers.identity(url, challenge)
    check_identity(info, url=url, challenge=challenge, pin=None if pin is None else pin.lower(),
                   self_id=ctx.node_id, now=now_ms())
    got = await remember(ctx, request.app[CHANNELS], info, url=url, announced=False)
    return web.json_response(
        {**peer_json(got.peer, ctx.config.allow), "status": got.status,
         "changed": list(got.changed)},
        status=201 if got.status == "added" else 200)


async def list_channels(request: web.Request) -> web.Response:
    service = request.app[CHANNELS]
    channels = [channel_summary(s) for s in
                sorted(service.states.values(), key=lambda s: s.updated_ms, reverse=True)]
    held = [held_json(h, service.proposals.held_reason(h)) for h in await service.proposals.held()]
    return web.json_response({"channels": channels, "proposals": held})


def held_json(held: HeldProposal, reason: str) -> dict[str, Any]:
    """A proposal waiting for the operator: who, what it asks of us, and why it waits."""
    terms = ChannelProposal.decode(held.proposal).terms
    cur = terms.currency
    return {"id": held.id, "peer": held.opener_id, "phase": "awaiting-acceptance",
            "reason": reason, "received_ms": held.received_ms,
            "deposit": {"ours": minor(terms.peer_deposit, cur),
                        "peer": minor(terms.opener_deposit, cur)},
            "dispute_window_ms": terms.dispute_window_ms}


async def show_channel(request: web.Request) -> web.Response:
    cid = request.app[CHANNELS].resolve(_channel_ref(request))
    return web.json_response(await _detail(request, cid))


async def open_channel(request: web.Request) -> web.Response:
    body = OPEN_CHANNEL.check(await read_json(request))
    scale: int = body.get("scale", DEFAULT_SCALE)
    tariffs = body["tariff"]
    lines = tuple(parse_tariff_line(t, scale=scale)
                  for t in ([tariffs] if isinstance(tariffs, str) else tariffs))
    window = parse_duration(body["dispute_window"]) if "dispute_window" in body else (
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
    NO_BODY.check(await read_json(request, optional=True))
    state = await request.app[CHANNELS].proposals.accept_held(_channel_ref(request))
    return web.json_response(await _detail(request, state.channel_id.hex()))


async def reject_channel(request: web.Request) -> web.Response:
    """Delete a proposal held for the operator (the counterpart of accept)."""
    NO_BODY.check(await read_json(request, optional=True))
    held = await request.app[CHANNELS].proposals.reject_held(_channel_ref(request))
    return web.json_response({"id": held.id, "peer": held.opener_id, "phase": "rejected"})


async def close_channel(request: web.Request) -> web.Response:
    body = CLOSE.check(await read_json(request, optional=True))
    service = request.app[CHANNELS]
    cid = service.resolve(_channel_ref(request))
    if body.get("force", False):
        await service.force_close(cid)
    else:
        await service.close(cid)
    return web.json_response(await _detail(request, cid))


async def pay(request: web.Request) -> web.Response:
    body = PAY.check(await read_json(request))
    service = request.app[CHANNELS]
    cid = service.resolve(_channel_ref(request))
    state = service.get(cid)
    terms = state.terms
    quantities = [0] * len(terms.tariff)
    units: dict[str, str] = body.get("units", {})
    by_unit = {line.unit: i for i, line in enumerate(terms.tariff)}
    for unit, text in units.items():
        if unit not in by_unit:
            raise NodeError(f"the tariff has no unit {unit!r} (it has {', '.join(by_unit)})",
                            code="UNKNOWN_UNIT")
        quantities[by_unit[unit]] = parse_quantity(text, terms.tariff[by_unit[unit]])
    direct = 0
    if "amount" in body:
        money = parse_money(body["amount"], terms.scale)
        if money.currency != terms.currency:
            raise NodeError(f"the channel is in {terms.currency}, not {money.currency}",
                            code="WRONG_CURRENCY")
        direct = money.amount
    if not any(quantities) and not direct:
        raise NodeError("give units (km=12.5) or an amount (\"3.20 EUR\")", code="NOTHING_TO_PAY")
    await service.pay(cid, quantities=quantities, direct_amount=direct,
                      reference=unicodedata.normalize("NFC", body.get("reference", "")),
                      repeat=body.get("repeat", 1),
                      wait=body.get("wait", True))
    return web.json_response(await _detail(request, cid))


async def channel_statement(request: web.Request) -> web.Response:
    service = request.app[CHANNELS]
    cid = service.resolve(_channel_ref(request))
    transfers = await request.app[TRANSFERS].for_channel(cid)
    ctx, state = request.app[CONTEXT], service.get(cid)
    settlements = (await service.checkpoints.detail(cid))["settlements"]
    return web.json_response({**await statement(ctx, state, transfers),
                              "settlements": settlements,
                              "returned_payouts": await payout_returns.returns_json(ctx, state)})


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


def routes(role: Role) -> list[web.RouteDef]:
    common = [
        web.get("/openapi.yaml", openapi),
        web.get("/api/status", status),
        web.get("/api/peers", list_peers),
        web.post("/api/peers", add_peer),
        web.get("/api/outbox", list_outbox),
        *reconcile_routes(),
        *consent_routes(),
        *events_routes(),
        *metrics_routes(),
        *dashboard_routes(),
    ]
    common += admin_ops.routes(role)
    if role == Role.ARBITER:
        return [*common, *escrow_routes()]
    return [
        *common,
        web.get("/api/channels", list_channels),
        web.post("/api/channels", open_channel),
        web.get("/api/channels/{channel_id}", show_channel),
        web.post("/api/channels/{channel_id}/accept", accept_channel),
        web.post("/api/channels/{channel_id}/reject", reject_channel),
        web.post("/api/channels/{channel_id}/close", close_channel),
        web.post("/api/channels/{channel_id}/pay", pay),
        web.get("/api/channels/{channel_id}/statement", channel_statement),
        *events_in.routes(),
        *payout_account_routes(),
        *settle_routes(),
    ]


__all__ = ["parse_decimal", "routes"]
