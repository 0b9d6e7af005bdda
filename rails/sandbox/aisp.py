"""The account-information API (OB AISP v3.1.11): accounts, one account, balances,
transactions. Another client's account is 403; an account the bank does not hold is 400."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from rails.sandbox.common import (
    AISP,
    DB,
    account_ref,
    authenticate,
    money,
    ob_json,
    parse_ob_datetime,
    render_txn,
    self_link,
)
from rails.sandbox.db import (
    AccountRow,
    ClientRow,
    utcnow,
)
from rails.sandbox.errors import OBError, not_found

log = structlog.get_logger("meterline.bank")


# -- AISP ---------------------------------------------------------------------------------------


def _own_account(request: web.Request, client: ClientRow) -> AccountRow:
    """The client's own account; another client's is 403 (the bank holds it, this client's
    access does not cover it), an account the bank does not hold 404."""
    account_id = request.match_info["account_id"]
    acct = request.app[DB].account(account_id)
    if acct is None:
        raise not_found(f"no account {account_id}", "AccountId")
    if account_id not in client.account_ids:
        raise OBError(403, "UK.OBIE.Resource.ConsentMismatch",
                      f"account {account_id} is not covered by this client's access",
                      path="AccountId")
    return acct


def render_account(acct: AccountRow) -> dict[str, Any]:
    return {
        "AccountId": acct.account_id,
        "Status": "Enabled",
        "StatusUpdateDateTime": acct.opened_at,
        "Currency": acct.currency,
        "AccountType": "Business",
        "AccountSubType": "CurrentAccount",
        "OpeningDate": acct.opened_at,
        "Account": [account_ref(acct)],
    }


async def list_accounts(request: web.Request) -> web.StreamResponse:
    client = authenticate(request)
    db = request.app[DB]
    accounts = [a for a in (db.account(i) for i in client.account_ids) if a is not None]
    return ob_json({"Data": {"Account": [render_account(a) for a in accounts]},
                    "Links": self_link(request, request.path), "Meta": {"TotalPages": 1}})


async def get_account(request: web.Request) -> web.StreamResponse:
    client = authenticate(request)
    acct = _own_account(request, client)
    return ob_json({"Data": {"Account": [render_account(acct)]},
                    "Links": self_link(request, request.path), "Meta": {"TotalPages": 1}})


async def get_balances(request: web.Request) -> web.StreamResponse:
    client = authenticate(request)
    acct = _own_account(request, client)
    now = utcnow()
    balances = [{
        "AccountId": acct.account_id,
        "CreditDebitIndicator": "Credit" if acct.balance_minor >= 0 else "Debit",
        "Type": kind,
        "DateTime": now,
        "Amount": money(abs(acct.balance_minor), acct.currency),
    } for kind in ("InterimAvailable", "InterimBooked")]
    return ob_json({"Data": {"Balance": balances}, "Links": self_link(request, request.path),
                    "Meta": {"TotalPages": 1}})


async def get_transactions(request: web.Request) -> web.StreamResponse:
    client = authenticate(request)
    acct = _own_account(request, client)
    q = request.query
    frm = q.get("fromBookingDateTime")
    to = q.get("toBookingDateTime")
    rows = request.app[DB].transactions(
        acct.account_id,
        from_booked=parse_ob_datetime(frm, "fromBookingDateTime") if frm else None,
        to_booked=parse_ob_datetime(to, "toBookingDateTime") if to else None,
    )
    return ob_json({"Data": {"Transaction": [render_txn(t) for t in rows]},
                    "Links": {"Self": str(request.url)}, "Meta": {"TotalPages": 1}})


ROUTES = [
    web.get(f"{AISP}/accounts", list_accounts),
    web.get(f"{AISP}/accounts/{{account_id}}", get_account),
    web.get(f"{AISP}/accounts/{{account_id}}/balances", get_balances),
    web.get(f"{AISP}/accounts/{{account_id}}/transactions", get_transactions),
]
