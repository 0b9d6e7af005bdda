"""Admin routes for the operator's daily commands: node info, a held proposal's full terms, and
the payment history of a channel (specs/admin-api.yaml).

Everything here reads; nothing changes the node. Query parameters are checked before use
(`BAD_QUERY`), as request bodies are in node.api.validate.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from importlib import metadata
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from node.api.validate import channel_ref
from node.errors import NodeError
from node.ingest.mqtt import INGEST
from node.keys import CHANNELS, CONFIG, CONTEXT, ESCROW, SIGNER
from node.roles import Role
from node.storage.db import health, unavailable
from node.storage.models import Transfer, Usage
from node.storage.repository import BUCKET_MS
from node.views import minor, money, tariff_json
from protocol.messages import BankAccount, ChannelProposal
from protocol.money import currency_exponent, format_decimal

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_OFFSET = 10**9


def _version() -> str:
    try:
        return metadata.version("meterline")
    except metadata.PackageNotFoundError:
        return "unknown"


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 10 or not low <= int(text) <= high:
        raise NodeError(f"{name} must be an integer from {low} to {high}, not {text[:20]!r}",
                        code="BAD_QUERY")
    return int(text)


def _totals(states: Any) -> list[dict[str, str]]:
    """Sent and received per currency over every channel, exact (each channel has its own
    scale), and at the currency's exponent rounded towards zero."""
    sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for state in states:
        terms = state.terms
        pair = sums[terms.currency]
        pair[0] += Decimal(state.sent.amount).scaleb(-terms.scale)
        pair[1] += Decimal(state.received.amount).scaleb(-terms.scale)
    out = []
    for currency, (sent, received) in sorted(sums.items()):
        exponent = currency_exponent(currency)
        quantum = Decimal(1).scaleb(-exponent)
        out.append({"currency": currency,
                    "sent": f"{sent.quantize(quantum, rounding='ROUND_DOWN')} {currency}",
                    "received": f"{received.quantize(quantum, rounding='ROUND_DOWN')} "
                                f"{currency}",
                    "sent_precise": f"{sent.normalize():f}",
                    "received_precise": f"{received.normalize():f}"})
    return out


FAILED_TRANSFERS = ("rejected", "returned", "unreconciled")
"""Transfer states the operator must see, with the bank's reason."""


async def _failed_transfers(db: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The newest transfers the bank refused or returned (or whose booking disagrees with the
    statement), with the bank's reason."""
    async with db() as session:
        rows = (await session.scalars(
            select(Transfer).where(Transfer.status.in_(FAILED_TRANSFERS))
            .order_by(Transfer.updated_ms.desc()).limit(limit))).all()
    return [{"channel": r.channel_id, "purpose": r.purpose,
             "party": "opener" if r.party == 0 else "peer",
             "amount": minor(r.amount_minor, r.currency), "reference": r.reference,
             "status": r.status, "reason": r.reason} for r in rows]


def _info_handler(started: float) -> Any:
    async def info(request: web.Request) -> web.Response:
        """getinfo: who the node is, how long it has run, whom it knows, what it holds."""
        config = request.app[CONFIG]
        ctx = request.app[CONTEXT]
        try:  # the storage line must show when the storage is away (ADR 0250)
            peers, failed = await ctx.all_peers(), await _failed_transfers(ctx.db)
        except (DBAPIError, ConnectionError) as exc:
            if unavailable(ctx.engine, exc) is None:
                raise
            peers, failed = [], []
        body: dict[str, Any] = {
            "node_id": request.app[SIGNER].node_id.hex(),
            "name": config.name,
            "role": config.role,
            "version": _version(),
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - started, 3),
            "public_url": config.public_url,
            "listen": f"{config.listen[0]}:{config.listen[1]}",
            "admin_url": config.admin_url,
            "peers": [{"node_id": p.node_id, "name": p.name, "role": p.role, "url": p.url}
                      for p in peers],
            "storage": health(ctx.engine).json(),
            "transfers_failed": failed,
        }
        if INGEST in request.app:
            body["ingest"] = {"mqtt": request.app[INGEST].status()}
        if config.role == Role.ARBITER:
            states = list(request.app[ESCROW].states.values())
            body["channels"] = dict(Counter(s.phase.value for s in states))
            body["totals"] = []
        else:
            channels = list(request.app[CHANNELS].states.values())
            body["channels"] = dict(Counter(s.phase.value for s in channels))
            body["totals"] = _totals(channels)
        return web.json_response(body)

    return info


def _account(account: BankAccount) -> dict[str, str]:
    return {"scheme": account.scheme, "identification": account.identification,
            "name": account.name}


async def show_proposal(request: web.Request) -> web.Response:
    """A proposal held for the operator with its full terms: what accepting would sign."""
    service = request.app[CHANNELS]
    held = await service.proposals.find_held(channel_ref(request.match_info["channel_id"]))
    terms = ChannelProposal.decode(held.proposal).terms
    cur = terms.currency
    return web.json_response({
        "id": held.id, "phase": "awaiting-acceptance", "peer": held.opener_id,
        "arbiter": terms.arbiter.hex(), "reason": service.proposals.held_reason(held),
        "received_ms": held.received_ms, "currency": cur, "scale": terms.scale,
        "deposit": {"ours": minor(terms.peer_deposit, cur),
                    "peer": minor(terms.opener_deposit, cur)},
        "tariff": tariff_json(terms),
        "dispute_window_ms": terms.dispute_window_ms,
        "accounts": {"ours": _account(terms.peer_account),
                     "peer": _account(terms.opener_account),
                     "escrow": _account(terms.escrow_account)},
    })


async def channel_payments(request: web.Request) -> web.Response:
    """What was paid when: the usage aggregates (per direction, unit, reference and hour), the
    newest hour first, paged by `limit` and `offset`; `reference` keeps one usage reference."""
    service = request.app[CHANNELS]
    cid = service.resolve(channel_ref(request.match_info["channel_id"]))
    state = service.get(cid)
    limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = _query_int(request, "offset", 0, 0, MAX_OFFSET)
    reference = request.query.get("reference")
    if reference is not None and len(reference) > 64:
        raise NodeError("reference is at most 64 characters", code="BAD_QUERY")
    where = [Usage.channel_id == cid]
    if reference is not None:
        where.append(Usage.reference == reference)
    async with request.app[CONTEXT].db() as session:
        total = int(await session.scalar(select(func.count()).select_from(Usage).where(*where))
                    or 0)
        rows = (await session.scalars(
            select(Usage).where(*where)
            .order_by(Usage.bucket_ms.desc(), Usage.sender, Usage.unit, Usage.reference)
            .limit(limit).offset(offset))).all()
    scales = {line.unit: line.quantity_scale for line in state.terms.tariff}
    items = [{
        "bucket": datetime.fromtimestamp(r.bucket_ms / 1000, tz=UTC).isoformat(
            timespec="seconds"),
        "bucket_ms": r.bucket_ms,
        "direction": "sent" if r.sender == state.us else "received",
        "unit": r.unit,
        "reference": r.reference,
        "quantity": format_decimal(r.quantity, scales[r.unit]) if r.unit in scales else None,
        "amount": money(r.amount, state),
        "updates": r.updates,
    } for r in rows]
    after = offset + len(items)
    return web.json_response({"channel": cid, "currency": state.terms.currency,
                              "bucket_ms": BUCKET_MS, "total": total, "offset": offset,
                              "next_offset": after if after < total else None,
                              "items": items})


def routes(role: Role) -> list[web.RouteDef]:
    """Registered by node.api.admin.routes; the node's start time is taken here."""
    common = [web.get("/api/info", _info_handler(time.monotonic()))]
    if role == Role.ARBITER:
        return common
    return [*common,
            web.get("/api/proposals/{channel_id}", show_proposal),
            web.get("/api/channels/{channel_id}/payments", channel_payments)]
