"""The sandbox's own admin API (``/_sandbox/...``): accounts, credits, clients, consent
decisions by the bank, the bank's key."""

from __future__ import annotations

import secrets
from typing import Any

import structlog
from aiohttp import web

from rails import jsonsafe
from rails.money import currency_exponent
from rails.ob_jws import (
    import_public_key,
    key_id,
    ob_issuer,
    public_jwk,
)
from rails.sandbox.common import (
    _ACCOUNT_ID,
    BANK_ISSUER,
    DB,
    SIGNER,
    Handler,
    normalise_identification,
    token_digest,
)
from rails.sandbox.db import (
    AccountRow,
    ClientRow,
    Leg,
    TxnRow,
    new_id,
    utcnow,
)
from rails.sandbox.errors import OBError

log = structlog.get_logger("meterline.bank")


# -- sandbox admin ------------------------------------------------------------------------------


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@web.middleware
async def admin_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AdminError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)


MAX_JSON_DEPTH = 32
"""How deep a JSON body may nest (the OB bodies nest 4 levels; a hostile one 100,000 would
overflow the parser's stack: refused first, as 400)."""
MAX_NUMBER_CHARS = 40


async def admin_json(request: web.Request) -> dict[str, Any]:
    try:
        body = jsonsafe.load(await request.read(), max_depth=MAX_JSON_DEPTH,
                             max_number_chars=MAX_NUMBER_CHARS, reject_duplicates=False)
    except (jsonsafe.UnsafeJson, ValueError) as exc:  # nested past the parser's stack too
        raise AdminError(400, f"body is not JSON ({exc})"[:200]) from exc
    if not isinstance(body, dict):
        raise AdminError(400, "body must be a JSON object")
    return body


def admin_int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AdminError(400, f"{name} must be an integer (minor units)")
    return value


def admin_str(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise AdminError(400, f"{name} must be a non-empty string")
    return value


def account_json(acct: AccountRow) -> dict[str, Any]:
    return {"account_id": acct.account_id, "name": acct.name, "currency": acct.currency,
            "scheme": acct.scheme, "identification": acct.identification,
            "balance_minor": acct.balance_minor, "opened_at": acct.opened_at}


def txn_json(t: TxnRow) -> dict[str, Any]:
    return {"transaction_id": t.transaction_id, "indicator": t.indicator,
            "amount_minor": t.amount_minor, "currency": t.currency, "booked_at": t.booked_at,
            "reference": t.reference, "information": t.information,
            "counterparty_name": t.counterparty_name, "counterparty_id": t.counterparty_id,
            "end_to_end_id": t.end_to_end_id, "payment_id": t.payment_id,
            "balance_after_minor": t.balance_after_minor}


async def admin_create_account(request: web.Request) -> web.StreamResponse:
    body = await admin_json(request)
    db = request.app[DB]
    account_id = admin_str(body, "account_id")
    if not _ACCOUNT_ID.match(account_id):
        raise AdminError(400, "account_id must be 1 to 40 of [A-Za-z0-9._-]")
    currency = admin_str(body, "currency")
    try:
        currency_exponent(currency)
    except ValueError as exc:
        raise AdminError(400, str(exc)) from exc
    scheme = admin_str(body, "scheme", "UK.OBIE.SortCodeAccountNumber")
    try:
        ident = normalise_identification(scheme, admin_str(body, "identification"),
                                         "identification")
    except OBError as exc:
        raise AdminError(400, exc.items[0].message) from exc
    opening = admin_int(body, "opening_balance_minor", 0)
    if opening < 0:
        raise AdminError(400, "opening_balance_minor must not be negative")
    row = AccountRow(account_id, admin_str(body, "name"), currency, scheme, ident, opening,
                     utcnow())
    with db.transaction():
        if db.account(account_id) is not None or db.account_by_identification(scheme, ident):
            raise AdminError(409, "an account with that id or identification exists")
        db.create_account(row)
    log.info("account_created", account_id=account_id, currency=currency)
    return web.json_response(account_json(row), status=201)


async def admin_credit(request: web.Request) -> web.StreamResponse:
    body = await admin_json(request)
    db = request.app[DB]
    amount = admin_int(body, "amount_minor")
    if amount <= 0:
        raise AdminError(400, "amount_minor must be positive")
    account_id = request.match_info["account_id"]
    with db.transaction():
        acct = db.account(account_id)
        if acct is None:
            raise AdminError(404, f"no account {account_id}")
        debtor_name = body.get("debtor_name") or "Sandbox funding"
        (row,) = db.book([Leg(
            account_id, "Credit", amount,
            reference=body.get("reference") or None,
            information=body.get("information") or f"Credit from {debtor_name}",
            counterparty_scheme=body.get("debtor_scheme") or None,
            counterparty_id=body.get("debtor_identification") or None,
            counterparty_name=str(debtor_name),
            end_to_end_id=body.get("end_to_end_id") or None,
        )], currency=acct.currency, booked_at=utcnow())
    log.info("account_credited", account_id=account_id, amount_minor=amount)
    return web.json_response(txn_json(row), status=201)


async def admin_list_accounts(request: web.Request) -> web.StreamResponse:
    return web.json_response({"accounts": [account_json(a) for a in request.app[DB].accounts()]})


async def admin_get_account(request: web.Request) -> web.StreamResponse:
    db = request.app[DB]
    acct = db.account(request.match_info["account_id"])
    if acct is None:
        raise AdminError(404, "no such account")
    return web.json_response({**account_json(acct), "transactions": [
        txn_json(t) for t in db.transactions(acct.account_id)]})


async def admin_list_payments(request: web.Request) -> web.StreamResponse:
    db = request.app[DB]
    out = []
    for p in db.payments():
        c = db.consent(p.consent_id)
        assert c is not None
        out.append({"payment_id": p.payment_id, "consent_id": p.consent_id,
                    "client_id": p.client_id, "status": p.status,
                    "amount_minor": c.amount_minor, "currency": c.currency,
                    "debtor_account_id": c.debtor_account_id,
                    "creditor_account_id": c.creditor_account_id,
                    "end_to_end_id": c.initiation.get("EndToEndIdentification"),
                    "reason_code": p.reason_code, "created_at": p.created_at})
    return web.json_response({"payments": out})


async def admin_register_client(request: web.Request) -> web.StreamResponse:
    body = await admin_json(request)
    db = request.app[DB]
    raw_key = body.get("jwk") or body.get("public_key_pem")
    if not isinstance(raw_key, dict | str) or not raw_key:
        raise AdminError(400, "give the client's public key as jwk (object) or public_key_pem")
    try:
        key = import_public_key(raw_key)
    except Exception as exc:
        raise AdminError(400, f"cannot read the public key: {exc}") from exc
    account_ids = body.get("account_ids")
    if not isinstance(account_ids, list) or not all(isinstance(a, str) for a in account_ids):
        raise AdminError(400, "account_ids must be a list of account ids")
    client_id = admin_str(body, "client_id", new_id("tpp"))
    kid = admin_str(body, "kid", key_id(key))
    org_id = admin_str(body, "org_id", "0015800001" + secrets.token_hex(4).upper())
    ssid = admin_str(body, "software_statement_id", secrets.token_hex(11))
    try:
        ob_issuer(org_id, ssid)
    except ValueError as exc:
        raise AdminError(400, str(exc)) from exc
    unused = secrets.token_urlsafe(32)  # the ledger's token column; access is by OAuth now
    with db.transaction():
        for a in account_ids:
            if db.account(a) is None:
                raise AdminError(404, f"no account {a}")
        if db.client_exists(client_id):
            raise AdminError(409, f"client {client_id} exists")
        db.create_client(ClientRow(client_id, admin_str(body, "name", client_id), kid,
                                   public_jwk(key), tuple(account_ids), org_id, ssid),
                         token_digest(unused))
    log.info("client_registered", registered_client=client_id, kid=kid)
    return web.json_response({"client_id": client_id, "kid": kid,
                              "account_ids": account_ids, "org_id": org_id,
                              "software_statement_id": ssid}, status=201)


async def admin_consent_decision(request: web.Request) -> web.StreamResponse:
    db = request.app[DB]
    consent_id = request.match_info["consent_id"]
    decision = request.match_info["decision"]
    new_status = {"authorise": "Authorised", "reject": "Rejected"}.get(decision)
    if new_status is None:
        raise AdminError(404, "decision is authorise or reject")
    with db.transaction():
        consent = db.consent(consent_id)
        if consent is None:
            raise AdminError(404, f"no consent {consent_id}")
        if consent.status != "AwaitingAuthorisation":
            raise AdminError(409, f"consent is {consent.status}")
        db.set_consent_status(consent_id, new_status)
    log.info("consent_decided", consent_id=consent_id, status=new_status)
    return web.json_response({"consent_id": consent_id, "status": new_status})


async def admin_bank_key(request: web.Request) -> web.StreamResponse:
    signer = request.app[SIGNER]
    return web.json_response({"kid": signer.kid, "issuer": BANK_ISSUER,
                              "jwk": public_jwk(signer.key)})


ROUTES = [
    web.post("/_sandbox/accounts", admin_create_account),
    web.get("/_sandbox/accounts", admin_list_accounts),
    web.get("/_sandbox/accounts/{account_id}", admin_get_account),
    web.post("/_sandbox/accounts/{account_id}/credit", admin_credit),
    web.get("/_sandbox/payments", admin_list_payments),
    web.post("/_sandbox/clients", admin_register_client),
    web.post("/_sandbox/consents/{consent_id}/{decision}", admin_consent_decision),
    web.get("/_sandbox/bank-key", admin_bank_key),
]
