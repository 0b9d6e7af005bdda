"""Arbiter operations over the admin API: escrows, their payouts, unapplied credits, refunds.

``GET /api/escrows``, ``GET /api/escrows/{channel_id}``, ``GET /api/credits/{credit_id}`` and
``POST /api/credits/{credit_id}/refund`` (specs/admin-api.yaml). Nothing is decided here: the
refund is protocol.refunds' decision, carried out by node.credits.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from node.api.validate import ACCOUNT, channel_ref, read_json
from node.credits import CreditView, account_of, checked_account
from node.errors import NodeError
from node.keys import ESCROW, TRANSFERS
from node.storage.models import Transfer
from node.storage.models import UnappliedCredit as CreditRow
from node.views import minor
from protocol import arbiter as arb
from protocol.messages import BankAccount
from protocol.references import refund_idempotency_key, refund_reference

CREDIT_ID = re.compile(r"[\x21-\x7e]{1,100}")
"""The document's ``CreditId`` path parameter: a bank entry id as the statement gave it."""
PARTIES = ("opener", "peer")


def _account(account: BankAccount | None) -> dict[str, str] | None:
    if account is None:
        return None
    return {"scheme": account.scheme, "identification": account.identification,
            "name": account.name}


def _bank(row: Transfer | None) -> dict[str, Any] | None:
    """What the bank said of one of our transfers (null before it was handed to the rail)."""
    if row is None:
        return None
    return {"status": row.status, "reason": row.reason, "end_to_end_id": row.end_to_end_id,
            "updated_ms": row.updated_ms}


def credit_json(row: CreditRow, transfer: Transfer | None = None) -> dict[str, Any]:
    refund = None
    if row.status != "held":
        refund = {"account": _account(account_of(row.refund_account)),
                  "reference": refund_reference(row.entry_id, row.refund_attempt),
                  "idempotency_key": refund_idempotency_key(row.entry_id, row.refund_attempt),
                  "attempt": row.refund_attempt, "bank": _bank(transfer)}
    return {"entry_id": row.entry_id, "reference": row.reference,
            "amount": minor(row.amount_minor, row.currency), "debtor": row.debtor,
            "booked_ms": row.booked_ms, "reason": row.reason, "kind": row.kind,
            "status": row.status, "channel": row.channel_id or None,
            "sender": _account(account_of(row.sender)), "refund": refund}


def escrow_json(state: arb.ArbiterState) -> dict[str, Any]:
    cur = state.terms.currency
    return {"id": state.channel_id.hex(), "phase": state.phase.value, "currency": cur,
            "deposited": {"opener": minor(state.deposited[0], cur),
                          "peer": minor(state.deposited[1], cur)},
            "payouts": None if state.payouts is None else
            {"opener": minor(state.payouts.opener, cur), "peer": minor(state.payouts.peer, cur)},
            "deadline_ms": state.deadline_ms}


async def list_escrows(request: web.Request) -> web.Response:
    escrow = request.app[ESCROW]
    return web.json_response({
        "escrows": [escrow_json(state) for state in escrow.states.values()],
        "unapplied_credits": [_view(c) for c in await escrow.credits.all()]})


async def show_escrow(request: web.Request) -> web.Response:
    """One escrow with every payout attempt (the bank's status and reason: a rejected or
    returned payout shows why) and the credits held for it."""
    escrow = request.app[ESCROW]
    state = escrow.find(channel_ref(request.match_info["channel_id"]))
    cid = state.channel_id.hex()
    banked = {t.idempotency_key: t for t in await request.app[TRANSFERS].for_channel(cid)}
    cur = state.terms.currency
    payouts = [{"checkpoint": t.checkpoint, "party": PARTIES[t.party], "attempt": t.attempt,
                "amount": minor(t.amount, cur), "account": _account(t.account),
                "reference": t.reference, "status": t.status.value, "reason": t.reason or None,
                "bank": _bank(banked.get(t.idempotency_key))}
               for t in state.transfers]
    credits = [_view(c) for c in await escrow.credits.all() if c.row.channel_id == cid]
    return web.json_response({**escrow_json(state), "payout_attempts": payouts,
                              "credits": credits})


def _credit_id(request: web.Request) -> str:
    text = request.match_info["credit_id"]
    if not CREDIT_ID.fullmatch(text):
        raise NodeError(f"{text[:40]!r} is not a credit id (1 to 100 printable characters)",
                        code="BAD_CREDIT_ID")
    return text


def _view(view: CreditView) -> dict[str, Any]:
    return credit_json(view.row, view.transfer)


async def show_credit(request: web.Request) -> web.Response:
    return web.json_response(_view(await request.app[ESCROW].credits.show(_credit_id(request))))


async def refund_credit(request: web.Request) -> web.Response:
    """Refund a held credit: to the account in the body, or else to the account it came from."""
    credit_id = _credit_id(request)
    body = ACCOUNT.check(await read_json(request, optional=True))
    account = None
    if body:
        if set(body) != {"scheme", "identification", "name"}:
            raise NodeError("give scheme, identification and name together (or none: the "
                            "refund goes back to the sender)", code="MISSING_FIELD")
        account = checked_account(body["scheme"], body["identification"], body["name"])
    return web.json_response(_view(await request.app[ESCROW].credits.refund(credit_id, account)))


def routes() -> list[web.RouteDef]:
    return [web.get("/api/escrows", list_escrows),
            web.get("/api/escrows/{channel_id}", show_escrow),
            web.get("/api/credits/{credit_id}", show_credit),
            web.post("/api/credits/{credit_id}/refund", refund_credit)]
