"""What every API of the sandbox bank shares: its settings, app keys, the request helpers
(authentication, the signed body, the idempotency key, field readers), the OB renderings and
the OB middleware (interaction id, error shape, response signature, access log)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from joserfc.jwk import RSAKey
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from rails import jsonsafe
from rails.money import format_minor
from rails.ob_jws import (
    SignatureError,
    import_public_key,
    sign_detached,
    verify_detached,
)
from rails.sandbox.auth import AUTHORITY
from rails.sandbox.db import (
    AccountRow,
    BankDB,
    ClientRow,
    ConsentRow,
    PaymentRow,
    TxnRow,
    new_id,
)
from rails.sandbox.errors import OBError, bad_request, field_invalid, field_missing

log = structlog.get_logger("meterline.bank")


PISP = "/open-banking/v3.1/pisp"
AISP = "/open-banking/v3.1/aisp"
BANK_ISSUER = "0015800000SANDBOX1"
"""The bank's OB Directory org id: its signatures' ``iss`` (an ASPSP signs as ``{org-id}``)."""
SUPPORTED_SCHEMES = ("UK.OBIE.SortCodeAccountNumber", "UK.OBIE.IBAN")
_AMOUNT = re.compile(r"^\d{1,13}$|^\d{1,13}\.\d{1,5}$")
_IDEM_KEY = re.compile(r"^(?!\s)(.*)(\S)$")
_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


@dataclass(frozen=True, slots=True)
class BankConfig:
    data_dir: Path
    manual_approval: bool = False
    token_ttl_s: int = 3600
    """How long an access token from ``POST /as/token`` is good for."""



@dataclass(frozen=True, slots=True)
class Signer:
    key: RSAKey
    kid: str


CONFIG = web.AppKey("config", BankConfig)
DB = web.AppKey("db", BankDB)
SIGNER = web.AppKey("signer", Signer)
REJECT = "meterline.reject"
LATE_BOOKING = "meterline.late_booking"
"""Set by the ``late`` fault: the payment is accepted now and booked this many ms later."""
CLIENT = "meterline.client"
TOKEN_CONSENT = "meterline.token_consent"
"""The consent the request's token is bound to (an authorisation-code token), or None."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- helpers ------------------------------------------------------------------------------------


def ob_json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        content_type="application/json", charset="utf-8")


def digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def self_link(request: web.Request, path: str) -> dict[str, str]:
    return {"Self": str(request.url.with_path(path).with_query(None))}


def authenticate(request: web.Request) -> ClientRow:
    """The client an OAuth access token (rails.sandbox.auth) was issued to; 401 without one,
    with an unknown one, or with an expired one."""
    issued = request.app[AUTHORITY].bearer(request.headers.get("Authorization", ""))
    client = request.app[DB].client(issued.client_id) if issued is not None else None
    if client is None or issued is None:
        raise OBError(401, "UK.OBIE.Header.Invalid", "missing, unknown or expired bearer token",
                      path="Authorization")
    request[CLIENT] = client.client_id
    request[TOKEN_CONSENT] = issued.consent_id
    structlog.contextvars.bind_contextvars(client_id=client.client_id)
    return client


async def signed_json_body(request: web.Request, client: ClientRow) -> dict[str, Any]:
    raw = await request.read()
    try:
        verify_detached(request.headers.get("x-jws-signature"), raw,
                        import_public_key(client.jwk), kid=client.kid, issuer=client.issuer)
    except SignatureError as exc:
        raise bad_request(exc.code, str(exc), "x-jws-signature") from exc
    try:
        body = jsonsafe.load(raw, max_depth=32, max_number_chars=40, reject_duplicates=False)
    except (jsonsafe.UnsafeJson, ValueError) as exc:  # too deep, too long a number, not JSON
        raise bad_request("UK.OBIE.Resource.InvalidFormat", f"body is not JSON ({exc})"[:200]
                          ) from exc
    if not isinstance(body, dict):
        raise bad_request("UK.OBIE.Resource.InvalidFormat", "body is not a JSON object")
    return body


def idempotency_key(request: web.Request) -> str:
    key = request.headers.get("x-idempotency-key")
    if key is None:
        raise bad_request("UK.OBIE.Header.Missing", "x-idempotency-key is required",
                          "x-idempotency-key")
    if len(key) > 40 or not _IDEM_KEY.match(key):
        raise bad_request("UK.OBIE.Header.Invalid",
                          "x-idempotency-key must be 1 to 40 characters without edge spaces",
                          "x-idempotency-key")
    return key


def obj(parent: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    value = parent.get(name)
    if value is None:
        raise field_missing(path)
    if not isinstance(value, dict):
        raise field_invalid(path, f"{path} must be an object")
    return value


def opt_text(parent: dict[str, Any], name: str, path: str, max_len: int) -> str | None:
    value = parent.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise field_invalid(path, f"{path} must be a string of 1 to {max_len} characters")
    return value


def text(parent: dict[str, Any], name: str, path: str, max_len: int) -> str:
    value = opt_text(parent, name, path, max_len)
    if value is None:
        raise field_missing(path)
    return value


def normalise_identification(scheme: str, identification: str, path: str) -> str:
    if scheme == "UK.OBIE.SortCodeAccountNumber":
        if not re.fullmatch(r"\d{14}", identification):
            raise field_invalid(path, "a sort code and account number is 14 digits")
        return identification
    if scheme == "UK.OBIE.IBAN":
        try:
            return str(IBAN(identification).compact)
        except SchwiftyException as exc:
            raise field_invalid(path, f"invalid IBAN: {exc}") from exc
    raise bad_request("UK.OBIE.Unsupported.AccountIdentifier",
                      f"scheme {scheme!r} is not supported; use one of {SUPPORTED_SCHEMES}",
                      path)


def parse_account_ref(parent: dict[str, Any], path: str) -> tuple[str, str]:
    scheme = text(parent, "SchemeName", f"{path}.SchemeName", 40)
    ident = text(parent, "Identification", f"{path}.Identification", 256)
    return scheme, normalise_identification(scheme, ident, f"{path}.Identification")


def parse_ob_datetime(value: str, name: str) -> str:
    """An OB filter date-time in our stored form; its timezone is ignored, as the spec says."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise bad_request("UK.OBIE.Field.InvalidDate", f"{name} is not an ISO 8601 date-time",
                          name) from exc
    return parsed.replace(tzinfo=UTC).isoformat(timespec="microseconds")


def account_ref(acct: AccountRow) -> dict[str, str]:
    return {"SchemeName": acct.scheme, "Identification": acct.identification, "Name": acct.name}


def money(amount_minor: int, currency: str) -> dict[str, str]:
    return {"Amount": format_minor(amount_minor, currency), "Currency": currency}


# -- rendering ----------------------------------------------------------------------------------


def render_consent(request: web.Request, c: ConsentRow) -> dict[str, Any]:
    return {
        "Data": {
            "ConsentId": c.consent_id,
            "CreationDateTime": c.created_at,
            "Status": c.status,
            "StatusUpdateDateTime": c.status_updated_at,
            "Initiation": c.initiation,
        },
        "Risk": c.risk,
        "Links": self_link(request, f"{PISP}/domestic-payment-consents/{c.consent_id}"),
        "Meta": {},
    }


def render_payment(request: web.Request, p: PaymentRow, c: ConsentRow,
                   debtor: AccountRow) -> dict[str, Any]:
    return {
        "Data": {
            "DomesticPaymentId": p.payment_id,
            "ConsentId": p.consent_id,
            "CreationDateTime": p.created_at,
            "Status": p.status,
            "StatusUpdateDateTime": p.status_updated_at,
            "Initiation": c.initiation,
            "Debtor": account_ref(debtor),
        },
        "Links": self_link(request, f"{PISP}/domestic-payments/{p.payment_id}"),
        "Meta": {},
    }


def render_txn(t: TxnRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AccountId": t.account_id,
        "TransactionId": t.transaction_id,
        "CreditDebitIndicator": t.indicator,
        "Status": "Booked",
        "TransactionMutability": "Immutable",
        "BookingDateTime": t.booked_at,
        "ValueDateTime": t.booked_at,
        "Amount": money(t.amount_minor, t.currency),
        "Balance": {
            "CreditDebitIndicator": "Credit" if t.balance_after_minor >= 0 else "Debit",
            "Type": "InterimBooked",
            "Amount": money(abs(t.balance_after_minor), t.currency),
        },
    }
    if t.reference:
        out["TransactionReference"] = t.reference
    if t.information:
        out["TransactionInformation"] = t.information
    party = {k: v for k, v in (("SchemeName", t.counterparty_scheme),
                               ("Identification", t.counterparty_id),
                               ("Name", t.counterparty_name)) if v}
    if party:
        out["DebtorAccount" if t.indicator == "Credit" else "CreditorAccount"] = party
    supplementary = {}
    if t.end_to_end_id:
        supplementary["EndToEndIdentification"] = t.end_to_end_id
    if t.payment_id:
        supplementary["DomesticPaymentId"] = t.payment_id
    if supplementary:
        out["SupplementaryData"] = supplementary
    return out


# -- middlewares --------------------------------------------------------------------------------


@web.middleware
async def ob_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Interaction id in and out, OB error shape, response signature, one access-log line."""
    started = time.perf_counter()
    interaction = request.headers.get("x-fapi-interaction-id") or new_id("ix")[3:]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(interaction_id=interaction)
    is_ob = request.path.startswith("/open-banking/")
    response: web.StreamResponse
    try:
        response = await handler(request)
    except OBError as exc:
        if exc.status == 401:
            response = web.Response(status=401)
        else:
            response = ob_json(exc.body(interaction), exc.status)
        log.info("ob_error", status=exc.status, codes=[i.code for i in exc.items],
                 message=str(exc))
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("unhandled", error=repr(exc))
        if not is_ob:
            raise
        response = ob_json(OBError(500, "UK.OBIE.UnexpectedError", "internal error")
                           .body(interaction), 500)
    response.headers["x-fapi-interaction-id"] = interaction
    if is_ob and isinstance(response, web.Response) and isinstance(response.body, bytes) \
            and response.body:
        signer = request.app[SIGNER]
        response.headers["x-jws-signature"] = sign_detached(
            response.body, signer.key, kid=signer.kid, issuer=BANK_ISSUER)
    log.info("request", method=request.method, path=request.path, status=response.status,
             duration_ms=round((time.perf_counter() - started) * 1000, 1))
    return response
