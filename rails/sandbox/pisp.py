"""The payment-initiation API (OB PISP v3.1.11): domestic payment consents, funds
confirmation, domestic payments and their details."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from rails.money import currency_exponent, format_minor, parse_minor
from rails.sandbox.auth import AUTHORITY
from rails.sandbox.common import (
    _AMOUNT,
    CONFIG,
    DB,
    LATE_BOOKING,
    PISP,
    REJECT,
    TOKEN_CONSENT,
    authenticate,
    digest,
    idempotency_key,
    ob_json,
    obj,
    opt_text,
    parse_account_ref,
    render_consent,
    render_payment,
    self_link,
    signed_json_body,
    text,
)
from rails.sandbox.db import (
    BankDB,
    ClientRow,
    ConsentRow,
    InsufficientFunds,
    Leg,
    PaymentRow,
    new_id,
    utcnow,
)
from rails.sandbox.errors import OBError, bad_request, field_invalid, field_missing, not_found

log = structlog.get_logger("meterline.bank")


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
        assert debtor is not None
        now = utcnow()
        payment_id = new_id("dp")
        rejection = request.get(REJECT)
        late_ms = request.get(LATE_BOOKING)
        if rejection is not None:
            payment = PaymentRow(payment_id, consent.consent_id, client.client_id, "Rejected",
                                 now, now, rejection[0], rejection[1])
        elif late_ms is not None:  # accepted now, booked (or refused) after late_ms
            payment = PaymentRow(payment_id, consent.consent_id, client.client_id,
                                 "AcceptedSettlementInProcess", now, now, None, None)
            asyncio.get_running_loop().call_later(late_ms / 1000, _book_late, db, payment_id)
        else:
            try:
                _book(db, consent, payment_id, now)
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


def _book(db: BankDB, consent: ConsentRow, payment_id: str, now: str) -> None:
    """Book the consent's debit and credit legs (raises InsufficientFunds)."""
    debtor = db.account(consent.debtor_account_id)
    creditor = db.account(consent.creditor_account_id)
    assert debtor is not None
    assert creditor is not None
    remittance = consent.initiation.get("RemittanceInformation") or {}
    reference = remittance.get("Reference")
    unstructured = remittance.get("Unstructured")
    e2e = consent.initiation["EndToEndIdentification"]
    common = {"amount_minor": consent.amount_minor, "reference": reference,
              "end_to_end_id": e2e, "payment_id": payment_id}
    db.book([
        Leg(debtor.account_id, "Debit",
            information=unstructured or f"Faster Payment to {creditor.name}",
            counterparty_scheme=creditor.scheme, counterparty_id=creditor.identification,
            counterparty_name=creditor.name, **common),
        Leg(creditor.account_id, "Credit",
            information=unstructured or f"Faster Payment from {debtor.name}",
            counterparty_scheme=debtor.scheme, counterparty_id=debtor.identification,
            counterparty_name=debtor.name, **common),
    ], currency=consent.currency, booked_at=now)


def _book_late(db: BankDB, payment_id: str) -> None:
    """The late booking of an accepted payment (the ``late`` fault): booked, or rejected AM04
    when the debtor no longer holds the amount. Lost if the bank stops first (a sandbox)."""
    payment = db.payment(payment_id)
    if payment is None or payment.status != "AcceptedSettlementInProcess":
        return
    consent = db.consent(payment.consent_id)
    assert consent is not None
    with db.transaction():
        try:
            _book(db, consent, payment_id, utcnow())
        except InsufficientFunds:
            db.set_payment_status(payment_id, "Rejected", "AM04", "insufficient funds at booking")
            log.info("payment_rejected_late", payment_id=payment_id)
            return
        db.set_payment_status(payment_id, "AcceptedCreditSettlementCompleted")
    log.info("payment_booked_late", payment_id=payment_id)


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


ROUTES = [
    web.post(f"{PISP}/domestic-payment-consents", create_consent),
    web.get(f"{PISP}/domestic-payment-consents/{{consent_id}}", get_consent),
    web.get(f"{PISP}/domestic-payment-consents/{{consent_id}}/funds-confirmation",
            funds_confirmation),
    web.post(f"{PISP}/domestic-payments", create_payment),
    web.get(f"{PISP}/domestic-payments/{{payment_id}}", get_payment),
    web.get(f"{PISP}/domestic-payments/{{payment_id}}/payment-details", get_payment_details),
]
