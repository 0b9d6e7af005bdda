"""The sandbox bank's aiohttp application: one ``create_app(config)``, one flat routes table.

See the package docstring (:mod:`rails.sandbox`) for what the bank does and decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from joserfc.jwk import RSAKey
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from rails.money import currency_exponent, format_minor, parse_minor
from rails.ob_jws import (
    SignatureError,
    generate_signing_key,
    import_public_key,
    key_id,
    load_signing_key,
    ob_issuer,
    public_jwk,
    sign_detached,
    verify_detached,
)
from rails.sandbox import auth
from rails.sandbox.auth import AUTHORITY, Authority
from rails.sandbox.db import (
    AccountRow,
    BankDB,
    ClientRow,
    ConsentRow,
    InsufficientFunds,
    Leg,
    PaymentRow,
    TxnRow,
    new_id,
    utcnow,
)
from rails.sandbox.errors import OBError, bad_request, field_invalid, field_missing, not_found

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


@dataclass(slots=True)
class Fault:
    """Injected trouble for the next `remaining` requests matching `method` and `path`."""

    path: str
    method: str | None
    kind: str
    """``delay`` (``timeout`` is a long delay), ``error`` (a 5xx), ``reject`` (the payment is
    created ``Rejected``) or ``garbage`` (a 200 that is not JSON)."""
    remaining: int
    delay_ms: int = 0
    after_processing: bool = False
    status: int = 500
    reason_code: str = "AM04"
    reason: str = "rejected by sandbox fault injection"


@dataclass(slots=True)
class FaultBook:
    faults: list[Fault] = field(default_factory=list)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path == path and fault.method in (None, method) and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None


@dataclass(frozen=True, slots=True)
class Signer:
    key: RSAKey
    kid: str


CONFIG = web.AppKey("config", BankConfig)
DB = web.AppKey("db", BankDB)
FAULTS = web.AppKey("faults", FaultBook)
SIGNER = web.AppKey("signer", Signer)
REJECT = "meterline.reject"
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
        body = json.loads(raw)
    except ValueError as exc:
        raise bad_request("UK.OBIE.Resource.InvalidFormat", "body is not JSON") from exc
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


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    fault = request.app[FAULTS].take(request.method, request.path)
    if fault is None:
        return await handler(request)
    log.warning("fault_injected", kind=fault.kind, remaining=fault.remaining)
    if fault.kind == "error":
        raise OBError(fault.status, "UK.OBIE.UnexpectedError", "injected fault")
    if fault.kind == "garbage":
        return web.Response(text="<html>upstream proxy says hello</html>", status=200,
                            content_type="text/html")
    if fault.kind == "reject":
        request[REJECT] = (fault.reason_code, fault.reason)
        return await handler(request)
    if not fault.after_processing:
        await asyncio.sleep(fault.delay_ms / 1000)
        return await handler(request)
    response = await handler(request)
    await asyncio.sleep(fault.delay_ms / 1000)
    return response


# -- PISP ---------------------------------------------------------------------------------------


def _replay_or_conflict(db: BankDB, client: ClientRow, operation: str, key: str,
                        body_digest: str) -> str | None:
    stored = db.idempotency(client.client_id, operation, key)
    if stored is None:
        return None
    if stored[0] != body_digest:
        raise bad_request("UK.OBIE.Header.Invalid",
                          "x-idempotency-key was already used with a different body",
                          "x-idempotency-key")
    return stored[1]


async def create_consent(request: web.Request) -> web.StreamResponse:
    db = request.app[DB]
    client = authenticate(request)
    body = await signed_json_body(request, client)
    key = idempotency_key(request)
    data = obj(body, "Data", "Data")
    initiation = obj(data, "Initiation", "Data.Initiation")
    risk = obj(body, "Risk", "Risk")
    text(initiation, "InstructionIdentification", "Data.Initiation.InstructionIdentification", 35)
    text(initiation, "EndToEndIdentification", "Data.Initiation.EndToEndIdentification", 35)
    amount = obj(initiation, "InstructedAmount", "Data.Initiation.InstructedAmount")
    amount_text = text(amount, "Amount", "Data.Initiation.InstructedAmount.Amount", 19)
    currency = text(amount, "Currency", "Data.Initiation.InstructedAmount.Currency", 3)
    try:
        currency_exponent(currency)
    except ValueError as exc:
        raise bad_request("UK.OBIE.Unsupported.Currency", str(exc),
                          "Data.Initiation.InstructedAmount.Currency") from exc
    try:
        if not _AMOUNT.match(amount_text):
            raise ValueError(amount_text)
        amount_minor = parse_minor(amount_text, currency)
    except ValueError as exc:
        raise field_invalid("Data.Initiation.InstructedAmount.Amount",
                            f"amount {amount_text!r} is not valid for {currency}") from exc
    if amount_minor <= 0:
        raise field_invalid("Data.Initiation.InstructedAmount.Amount", "amount must be positive")
    creditor_obj = obj(initiation, "CreditorAccount", "Data.Initiation.CreditorAccount")
    text(creditor_obj, "Name", "Data.Initiation.CreditorAccount.Name", 350)
    creditor_ref = parse_account_ref(creditor_obj, "Data.Initiation.CreditorAccount")
    debtor_obj = initiation.get("DebtorAccount")
    debtor_ref = None
    if debtor_obj is not None:
        if not isinstance(debtor_obj, dict):
            raise field_invalid("Data.Initiation.DebtorAccount", "must be an object")
        debtor_ref = parse_account_ref(debtor_obj, "Data.Initiation.DebtorAccount")
    remittance = initiation.get("RemittanceInformation")
    if remittance is not None:
        if not isinstance(remittance, dict):
            raise field_invalid("Data.Initiation.RemittanceInformation", "must be an object")
        opt_text(remittance, "Reference", "Data.Initiation.RemittanceInformation.Reference", 35)
        opt_text(remittance, "Unstructured",
                 "Data.Initiation.RemittanceInformation.Unstructured", 140)
    body_digest = digest(body)

    with db.transaction():
        existing = _replay_or_conflict(db, client, "consent", key, body_digest)
        if existing is not None:
            consent = db.consent(existing)
            assert consent is not None
            log.info("consent_replayed", consent_id=existing)
            return ob_json(render_consent(request, consent), 201)
        if debtor_ref is None:
            if len(client.account_ids) != 1:
                raise field_missing("Data.Initiation.DebtorAccount")
            debtor = db.account(client.account_ids[0])
        else:
            debtor = db.account_by_identification(*debtor_ref)
        if debtor is None:
            raise not_found("the bank holds no such debtor account",
                            "Data.Initiation.DebtorAccount.Identification")
        if debtor.account_id not in client.account_ids:
            raise OBError(403, "UK.OBIE.Resource.ConsentMismatch",
                          "this client may not initiate payments from that account",
                          path="Data.Initiation.DebtorAccount")
        creditor = db.account_by_identification(*creditor_ref)
        if creditor is None:
            raise not_found("the bank holds no such creditor account (this sandbox bank "
                            "makes on-us payments only)",
                            "Data.Initiation.CreditorAccount.Identification")
        if creditor.account_id == debtor.account_id:
            raise field_invalid("Data.Initiation.CreditorAccount",
                                "creditor and debtor are the same account")
        for acct in (debtor, creditor):
            if acct.currency != currency:
                raise bad_request("UK.OBIE.Unsupported.Currency",
                                  f"account {acct.account_id} is held in {acct.currency}",
                                  "Data.Initiation.InstructedAmount.Currency")
        now = utcnow()
        status = "AwaitingAuthorisation" if request.app[CONFIG].manual_approval else "Authorised"
        consent = ConsentRow(new_id("pdc"), client.client_id, status, now, now, initiation, risk,
                             debtor.account_id, creditor.account_id, amount_minor, currency)
        db.create_consent(consent)
        db.remember(client.client_id, "consent", key, body_digest, consent.consent_id)
    log.info("consent_created", consent_id=consent.consent_id, status=status)
    return ob_json(render_consent(request, consent), 201)


def _own_consent(request: web.Request, client: ClientRow, consent_id: str) -> ConsentRow:
    consent = request.app[DB].consent(consent_id)
    if consent is None or consent.client_id != client.client_id:
        raise not_found(f"no consent {consent_id}", "ConsentId")
    return consent


async def get_consent(request: web.Request) -> web.StreamResponse:
    client = authenticate(request)
    consent = _own_consent(request, client, request.match_info["consent_id"])
    return ob_json(render_consent(request, consent))


async def funds_confirmation(request: web.Request) -> web.StreamResponse:
    client = authenticate(request)
    consent = _own_consent(request, client, request.match_info["consent_id"])
    if consent.status != "Authorised":
        raise bad_request("UK.OBIE.Resource.InvalidConsentStatus",
                          f"consent is {consent.status}, not Authorised")
    debtor = request.app[DB].account(consent.debtor_account_id)
    assert debtor is not None
    return ob_json({
        "Data": {"FundsAvailableResult": {
            "FundsAvailableDateTime": utcnow(),
            "FundsAvailable": debtor.balance_minor >= consent.amount_minor,
        }},
        "Links": self_link(request, request.path),
        "Meta": {},
    })


async def create_payment(request: web.Request) -> web.StreamResponse:
    db = request.app[DB]
    client = authenticate(request)
    body = await signed_json_body(request, client)
    key = idempotency_key(request)
    data = obj(body, "Data", "Data")
    consent_id = text(data, "ConsentId", "Data.ConsentId", 128)
    initiation = obj(data, "Initiation", "Data.Initiation")
    risk = obj(body, "Risk", "Risk")
    body_digest = digest(body)

    with db.transaction():
        existing = _replay_or_conflict(db, client, "payment", key, body_digest)
        if existing is not None:
            payment = db.payment(existing)
            assert payment is not None
            consent = _own_consent(request, client, payment.consent_id)
            debtor = db.account(consent.debtor_account_id)
            assert debtor is not None
            log.info("payment_replayed", payment_id=existing)
            return ob_json(render_payment(request, payment, consent, debtor), 201)
        consent = _own_consent(request, client, consent_id)
        if (consent_id in request.app[AUTHORITY].psu_authorised
                and request[TOKEN_CONSENT] != consent_id):
            raise OBError(403, "UK.OBIE.Resource.ConsentMismatch",
                          "the PSU authorised this consent: pay with the token its "
                          "authorisation code gave", path="Authorization")
        if consent.status != "Authorised":
            raise bad_request("UK.OBIE.Resource.InvalidConsentStatus",
                              f"consent is {consent.status}, not Authorised", "Data.ConsentId")
        if initiation != consent.initiation:
            raise bad_request("UK.OBIE.Resource.ConsentMismatch",
                              "Initiation differs from the consent's", "Data.Initiation")
        if risk != consent.risk:
            raise bad_request("UK.OBIE.Resource.ConsentMismatch",
                              "Risk differs from the consent's", "Risk")
        debtor = db.account(consent.debtor_account_id)
        creditor = db.account(consent.creditor_account_id)
        assert debtor is not None
        assert creditor is not None
        now = utcnow()
        payment_id = new_id("dp")
        rejection = request.get(REJECT)
        if rejection is not None:
            payment = PaymentRow(payment_id, consent.consent_id, client.client_id, "Rejected",
                                 now, now, rejection[0], rejection[1])
        else:
            remittance = consent.initiation.get("RemittanceInformation") or {}
            reference = remittance.get("Reference")
            unstructured = remittance.get("Unstructured")
            e2e = consent.initiation["EndToEndIdentification"]
            common = {"amount_minor": consent.amount_minor, "reference": reference,
                      "end_to_end_id": e2e, "payment_id": payment_id}
            try:
                db.book([
                    Leg(debtor.account_id, "Debit",
                        information=unstructured or f"Faster Payment to {creditor.name}",
                        counterparty_scheme=creditor.scheme,
                        counterparty_id=creditor.identification,
                        counterparty_name=creditor.name, **common),
                    Leg(creditor.account_id, "Credit",
                        information=unstructured or f"Faster Payment from {debtor.name}",
                        counterparty_scheme=debtor.scheme,
                        counterparty_id=debtor.identification,
                        counterparty_name=debtor.name, **common),
                ], currency=consent.currency, booked_at=now)
            except InsufficientFunds as exc:
                raise bad_request(
                    "UK.OBIE.Rules.InsufficientFunds",
                    f"the debtor account holds less than {format_minor(consent.amount_minor, consent.currency)} {consent.currency}",  # noqa: E501
                    "Data.Initiation.InstructedAmount.Amount") from exc
            payment = PaymentRow(payment_id, consent.consent_id, client.client_id,
                                 "AcceptedCreditSettlementCompleted", now, now, None, None)
        db.create_payment(payment)
        db.set_consent_status(consent.consent_id, "Consumed")
        db.remember(client.client_id, "payment", key, body_digest, payment_id)
    log.info("payment_created", payment_id=payment_id, status=payment.status,
             amount_minor=consent.amount_minor, currency=consent.currency)
    return ob_json(render_payment(request, payment, consent, debtor), 201)


def _own_payment(request: web.Request, client: ClientRow) -> tuple[PaymentRow, ConsentRow]:
    payment_id = request.match_info["payment_id"]
    payment = request.app[DB].payment(payment_id)
    if payment is None or payment.client_id != client.client_id:
        raise not_found(f"no domestic payment {payment_id}", "DomesticPaymentId")
    return payment, _own_consent(request, client, payment.consent_id)


async def get_payment(request: web.Request) -> web.StreamResponse:
    client = authenticate(request)
    payment, consent = _own_payment(request, client)
    debtor = request.app[DB].account(consent.debtor_account_id)
    assert debtor is not None
    return ob_json(render_payment(request, payment, consent, debtor))


async def get_payment_details(request: web.Request) -> web.StreamResponse:
    client = authenticate(request)
    payment, _ = _own_payment(request, client)
    entry: dict[str, Any] = {
        "PaymentTransactionId": payment.payment_id,
        "Status": payment.status,
        "StatusUpdateDateTime": payment.status_updated_at,
    }
    if payment.reason_code:
        entry["StatusDetail"] = {
            "LocalInstrument": "UK.OBIE.FPS",
            "Status": payment.reason_code,
            "StatusReason": "ProprietaryRejection",
            "StatusReasonDescription": (payment.reason or payment.reason_code)[:256],
        }
    return ob_json({"Data": {"PaymentStatus": [entry]}, "Links": self_link(request, request.path),
                    "Meta": {}})


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


async def admin_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise AdminError(400, "body is not JSON") from exc
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


async def admin_add_fault(request: web.Request) -> web.StreamResponse:
    body = await admin_json(request)
    kind = admin_str(body, "kind")
    if kind not in ("delay", "timeout", "error", "reject", "garbage"):
        raise AdminError(400, "kind is delay, timeout, error, reject or garbage")
    method = body.get("method")
    if method is not None and not isinstance(method, str):
        raise AdminError(400, "method must be a string")
    fault = Fault(
        path=admin_str(body, "path"),
        method=method.upper() if method else None,
        kind="delay" if kind == "timeout" else kind,
        remaining=admin_int(body, "count", 1),
        delay_ms=admin_int(body, "delay_ms", 30_000 if kind == "timeout" else 1_000),
        after_processing=bool(body.get("after_processing", False)),
        status=admin_int(body, "status", 500),
        reason_code=admin_str(body, "reason_code", "AM04"),
        reason=admin_str(body, "reason", "rejected by sandbox fault injection"),
    )
    if fault.remaining <= 0 or not 500 <= fault.status <= 599:
        raise AdminError(400, "count must be positive and status a 5xx")
    request.app[FAULTS].faults.append(fault)
    return web.json_response(_fault_json(fault), status=201)


def _fault_json(f: Fault) -> dict[str, Any]:
    return {"path": f.path, "method": f.method, "kind": f.kind, "count": f.remaining,
            "delay_ms": f.delay_ms, "after_processing": f.after_processing, "status": f.status,
            "reason_code": f.reason_code, "reason": f.reason}


async def admin_list_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response({"faults": [_fault_json(f) for f in request.app[FAULTS].faults]})


async def admin_clear_faults(request: web.Request) -> web.StreamResponse:
    request.app[FAULTS].faults.clear()
    return web.json_response({"faults": []})


async def admin_bank_key(request: web.Request) -> web.StreamResponse:
    signer = request.app[SIGNER]
    return web.json_response({"kid": signer.kid, "issuer": BANK_ISSUER,
                              "jwk": public_jwk(signer.key)})


# -- the app ------------------------------------------------------------------------------------

ROUTES = [
    web.post(f"{PISP}/domestic-payment-consents", create_consent),
    web.get(f"{PISP}/domestic-payment-consents/{{consent_id}}", get_consent),
    web.get(f"{PISP}/domestic-payment-consents/{{consent_id}}/funds-confirmation",
            funds_confirmation),
    web.post(f"{PISP}/domestic-payments", create_payment),
    web.get(f"{PISP}/domestic-payments/{{payment_id}}", get_payment),
    web.get(f"{PISP}/domestic-payments/{{payment_id}}/payment-details", get_payment_details),
    web.get(f"{AISP}/accounts", list_accounts),
    web.get(f"{AISP}/accounts/{{account_id}}", get_account),
    web.get(f"{AISP}/accounts/{{account_id}}/balances", get_balances),
    web.get(f"{AISP}/accounts/{{account_id}}/transactions", get_transactions),
    web.post("/_sandbox/accounts", admin_create_account),
    web.get("/_sandbox/accounts", admin_list_accounts),
    web.get("/_sandbox/accounts/{account_id}", admin_get_account),
    web.post("/_sandbox/accounts/{account_id}/credit", admin_credit),
    web.get("/_sandbox/payments", admin_list_payments),
    web.post("/_sandbox/clients", admin_register_client),
    web.post("/_sandbox/consents/{consent_id}/{decision}", admin_consent_decision),
    web.post("/_sandbox/faults", admin_add_fault),
    web.get("/_sandbox/faults", admin_list_faults),
    web.delete("/_sandbox/faults", admin_clear_faults),
    web.get("/_sandbox/bank-key", admin_bank_key),
]


def _bank_signer(data_dir: Path) -> Signer:
    path = data_dir / "bank-signing-key.pem"
    key = load_signing_key(path) if path.exists() else generate_signing_key(path)
    return Signer(key, key_id(key))


async def _ledger(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app[DB] = BankDB(config.data_dir / "bank.sqlite3")
    app[SIGNER] = _bank_signer(config.data_dir)
    app[AUTHORITY] = Authority(app[DB], config.token_ttl_s)
    log.info("ledger_open", path=str(config.data_dir / "bank.sqlite3"),
             manual_approval=config.manual_approval)
    yield
    app[DB].close()


def create_app(config: BankConfig) -> web.Application:
    app = web.Application(middlewares=[ob_middleware, admin_errors, fault_middleware])
    app[CONFIG] = config
    app[FAULTS] = FaultBook()
    app.cleanup_ctx.append(_ledger)
    app.add_routes(ROUTES)
    app.add_routes(auth.ROUTES)
    return app
