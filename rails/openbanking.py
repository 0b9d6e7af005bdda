"""UK Open Banking pay-by-bank (Read/Write v3.1.11) as a :class:`rails.port.Rail`: a TPP client.

One payment is a small resumable flow, and every step is written to the
:class:`~rails.store.IdempotencyStore` before the next one starts:

1. **reserve** the caller's key, with the ids derived from it (``meta``): the EndToEndIdentification
   (≤ 31, what UK Faster Payments carries), the InstructionIdentification (≤ 35), and one
   ``x-idempotency-key`` (≤ 40) per POST — all pure functions of the caller's key;
2. ``POST /domestic-payment-consents`` → ``meta.consent_id``;
3. wait for the consent to be ``Authorised`` (immediate when the bank approves on its own; with a
   PSU in the loop :meth:`OpenBankingRail.submit` returns ``PENDING`` and a later
   :meth:`~OpenBankingRail.status` carries on);
4. ``POST /domestic-payments`` → ``meta.payment_id``;
5. poll ``GET /domestic-payments/{id}`` until the status is final (or the poll budget runs out);
   a ``Rejected`` payment's reason code comes from ``…/payment-details``.

A crash (or :class:`~rails.errors.BankUnavailable`) anywhere in between leaves the reservation and
whatever ids were learnt; the next ``submit``/``status`` with the same key re-sends the *same*
bodies under the *same* ``x-idempotency-key``, which the bank answers with the resource it already
made. So a restart never creates a second consent or payment.

Transport: an :class:`aiohttp.ClientSession` owned by the adapter; a bearer token; a detached PS256
``x-jws-signature`` over every request body (:mod:`rails.ob_jws`); a fresh
``x-fapi-interaction-id`` per call, which the bank must echo. Timeouts, connection errors, 5xx,
429 and answers longer than the read limit (:mod:`rails.http`: 1 MiB, 16 MiB for an account's
transactions) are retried with the same key and exponential backoff, then
:class:`BankUnavailable`; an answer that does not parse (JSON nested too deep or with an
oversized number included) is :class:`BankProtocolError`; OB error bodies become
:class:`InvalidInstruction` (``UK.OBIE.Field.*``, ``Unsupported.*``, ``Resource.InvalidFormat``),
:class:`IdempotencyConflict` (``Header.Invalid`` on ``x-idempotency-key``) or
:class:`BankRejected` with the OB error code as ``reason_code`` (everything else, e.g.
``UK.OBIE.Resource.NotFound`` for an unknown account, ``UK.OBIE.Rules.InsufficientFunds``).
A refused POST creates nothing at the bank, so no record is stored: the same key may be submitted
again once the cause is fixed.

Amounts are rendered with :func:`rails.money.format_minor`; nothing here touches float.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
from joserfc.jwk import RSAKey

from rails.errors import (
    AnswerTooLarge,
    BankProtocolError,
    BankRejected,
    BankUnavailable,
    Finding,
    IdempotencyConflict,
    InvalidInstruction,
    RailError,
    UnknownPayment,
)
from rails.http import JSON_ANSWER_LIMIT, STATEMENT_ANSWER_LIMIT, parse_json, read_bounded
from rails.money import format_minor, parse_minor
from rails.ob_jws import (
    SignatureError,
    generate_signing_key,
    import_public_key,
    key_id,
    load_signing_key,
    public_jwk,
    sign_detached,
    verify_detached,
)
from rails.port import (
    Account,
    AccountScheme,
    CreditPage,
    EntryDirection,
    IncomingCredit,
    PaymentInstruction,
    PaymentRecord,
    PaymentStatus,
    Reconciliation,
    Statement,
    StatementEntry,
    validate_instruction_basics,
)
from rails.store import IdempotencyStore, SqliteIdempotencyStore, StoredSubmission

PISP = "/open-banking/v3.1/pisp"
AISP = "/open-banking/v3.1/aisp"
RAIL_NAME = "openbanking"
BANK_ISSUER = "meterline-sandbox-bank"

_OB_SCHEME = {
    AccountScheme.SORT_CODE: "UK.OBIE.SortCodeAccountNumber",
    AccountScheme.IBAN: "UK.OBIE.IBAN",
}
_PAYMENT_STATUS = {
    "Pending": PaymentStatus.PENDING,
    "AcceptedSettlementInProcess": PaymentStatus.ACCEPTED,
    "AcceptedWithoutPosting": PaymentStatus.ACCEPTED,
    "AcceptedSettlementCompleted": PaymentStatus.BOOKED,
    "AcceptedCreditSettlementCompleted": PaymentStatus.BOOKED,
    "Rejected": PaymentStatus.REJECTED,
}
_CONSENT_STATUSES = ("AwaitingAuthorisation", "Authorised", "Consumed", "Rejected")
CONSENT_REJECTED = "ConsentRejected"
"""`reason_code` of a payment whose consent the PSU (or the bank) rejected."""


@dataclass(frozen=True, slots=True)
class OpenBankingConfig:
    """Everything the node needs to pay by bank from one account.

    `base_url` is the bank's origin (``http://127.0.0.1:8700``); `client_id` and `access_token`
    come from registering the TPP with the bank (``POST /_sandbox/clients`` on the sandbox);
    `key_file` is the TPP's private key (see :func:`generate_key_pair`); `account_id` is the
    bank's AccountId of our own account (AISP reads, statements). `store_path` is the adapter's
    own idempotency file, used when no store is handed to the adapter.
    """

    base_url: str
    client_id: str
    access_token: str = field(repr=False)
    key_file: Path
    account_id: str
    store_path: Path | None = None
    kid: str | None = None
    """Defaults to the key's RFC 7638 thumbprint (what the sandbox registers it under)."""
    bank_jwk: Mapping[str, Any] | None = None
    """When set, every answer's ``x-jws-signature`` is verified against this key."""
    bank_issuer: str = BANK_ISSUER
    request_timeout_s: float = 10.0
    max_attempts: int = 4
    backoff_s: float = 0.25
    authorisation_wait_s: float = 0.0
    """How long :meth:`OpenBankingRail.submit` waits for a consent awaiting the PSU."""
    poll_interval_s: float = 0.25
    poll_attempts: int = 8
    payment_context: str = "PartyToParty"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP request and its answer, handed to the observer (tests validate these)."""

    method: str
    path: str
    query: dict[str, str]
    request_headers: dict[str, str]
    request_body: bytes | None
    status: int
    """0 when no answer came (timeout, connection error)."""
    response_headers: dict[str, str]
    response_body: bytes


@dataclass(frozen=True, slots=True)
class TppKey:
    kid: str
    public_jwk: dict[str, Any]
    path: Path


def generate_key_pair(path: str | Path) -> TppKey:
    """Create the TPP's RSA 2048 signing key (PS256) at `path`, mode 0600, never overwriting.

    Register ``public_jwk`` with the bank; ``kid`` is the RFC 7638 thumbprint.
    """
    key = generate_signing_key(path)
    return TppKey(key_id(key), public_jwk(key), Path(path))


@dataclass(frozen=True, slots=True)
class DerivedIds:
    end_to_end_id: str
    instruction_id: str
    consent_key: str
    payment_key: str


def derive_ids(idempotency_key: str) -> DerivedIds:
    """The bank-facing ids of one payment: pure functions of the caller's key."""
    h = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return DerivedIds(
        end_to_end_id=f"ML{h[:29].upper()}",
        instruction_id=f"MLI{h[:32].upper()}",
        consent_key=f"mlc-{h[:36]}",
        payment_key=f"mlp-{h[:36]}",
    )


def _finding_path(path: str | None) -> str:
    return path or "/"


def build_initiation(instruction: PaymentInstruction, ids: DerivedIds) -> dict[str, Any]:
    """The consent's ``Data.Initiation``; raises InvalidInstruction on OB/FPS limits."""
    validate_instruction_basics(instruction)
    findings: list[Finding] = []
    if instruction.execution_date is not None and \
            instruction.execution_date > datetime.now(UTC).date():
        findings.append(Finding("execution_date", "FF01",
                                "future-dated (scheduled) payments are not supported"))
    if not 1 <= len(instruction.reference) <= 35:
        findings.append(Finding("reference", "FF01", "Reference is 1 to 35 characters"))
    for role, acct in (("debtor", instruction.debtor), ("creditor", instruction.creditor)):
        if acct.scheme not in _OB_SCHEME:
            findings.append(Finding(f"{role}.scheme", "UK.OBIE.Unsupported.AccountIdentifier",
                                    f"{acct.scheme} is not a UK OB account scheme"))
        elif acct.scheme is AccountScheme.SORT_CODE and \
                not re.fullmatch(r"\d{14}", acct.identification):
            findings.append(Finding(f"{role}.identification", "AC01",
                                    "sort code + account number is 14 digits"))
        if not 1 <= len(acct.name) <= 350:
            findings.append(Finding(f"{role}.name", "FF01", "Name is 1 to 350 characters"))
    if findings:
        raise InvalidInstruction("instruction breaks the OB domestic payment rules", findings)

    def account(acct: Account) -> dict[str, str]:
        return {"SchemeName": _OB_SCHEME[acct.scheme],
                "Identification": acct.identification.replace(" ", ""), "Name": acct.name}

    return {
        "InstructionIdentification": ids.instruction_id,
        "EndToEndIdentification": ids.end_to_end_id,
        "LocalInstrument": "UK.OBIE.FPS",
        "InstructedAmount": {
            "Amount": format_minor(instruction.amount_minor, instruction.currency),
            "Currency": instruction.currency,
        },
        "DebtorAccount": account(instruction.debtor),
        "CreditorAccount": account(instruction.creditor),
        "RemittanceInformation": {"Reference": instruction.reference},
    }


def instruction_from_dict(data: Mapping[str, Any]) -> PaymentInstruction:
    """Inverse of ``dataclasses.asdict`` as the store keeps it."""

    def account(d: Mapping[str, Any]) -> Account:
        return Account(d["name"], AccountScheme(d["scheme"]), d["identification"], d.get("agent"))

    execution = data.get("execution_date")
    return PaymentInstruction(
        idempotency_key=data["idempotency_key"],
        debtor=account(data["debtor"]),
        creditor=account(data["creditor"]),
        amount_minor=int(data["amount_minor"]),
        currency=data["currency"],
        reference=data["reference"],
        execution_date=date.fromisoformat(execution) if execution else None,
    )


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a date-time: {value!r}")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class OpenBankingRail:
    """The pay-by-bank adapter. Construct, use from one event loop, then :meth:`aclose`."""

    name = RAIL_NAME

    def __init__(self, config: OpenBankingConfig, *, store: IdempotencyStore | None = None,
                 signing_key: RSAKey | None = None,
                 observer: Callable[[Exchange], None] | None = None) -> None:
        if store is None and config.store_path is None:
            raise ValueError("give the adapter a store or a store_path")
        self._config = config
        self._own_store = store is None
        self._store: IdempotencyStore = store if store is not None else \
            SqliteIdempotencyStore(config.store_path or ":memory:")
        self._key = signing_key if signing_key is not None else load_signing_key(config.key_file)
        self._kid = config.kid or key_id(self._key)
        self._bank_key = import_public_key(config.bank_jwk) if config.bank_jwk else None
        self._observer = observer
        self._session: aiohttp.ClientSession | None = None
        self._base = config.base_url.rstrip("/")

    # -- the port --------------------------------------------------------------------------

    async def submit(self, instruction: PaymentInstruction) -> PaymentRecord:
        ids = derive_ids(instruction.idempotency_key)
        build_initiation(instruction, ids)  # validate before anything is stored
        meta = {"rail": RAIL_NAME, "end_to_end_id": ids.end_to_end_id,
                "instruction_id": ids.instruction_id, "consent_key": ids.consent_key,
                "payment_key": ids.payment_key}
        stored = self._store.reserve(instruction, meta)
        if stored.record is not None and stored.record.status.final:
            return stored.record
        return await self._advance(stored, self._config.authorisation_wait_s)

    async def status(self, idempotency_key: str) -> PaymentRecord:
        stored = self._store.get(idempotency_key)
        if stored is None or stored.meta.get("rail") != RAIL_NAME:
            raise UnknownPayment(f"no pay-by-bank payment under {idempotency_key!r}")
        if stored.record is not None and stored.record.status.final:
            return stored.record
        return await self._advance(stored, 0.0)

    async def incoming_credits(self, cursor: str | None = None) -> CreditPage:
        since, seen = self._parse_cursor(cursor)
        txns = await self._transactions(since)
        credits: list[IncomingCredit] = []
        last, last_ids = since, set(seen)
        try:
            for t in txns:
                booked_at = _parse_time(t["BookingDateTime"])
                tid = str(t["TransactionId"])
                if since is not None and (booked_at < since or
                                          (booked_at == since and tid in seen)):
                    continue
                if last is None or booked_at > last:
                    last, last_ids = booked_at, {tid}
                elif booked_at == last:
                    last_ids.add(tid)
                if t["CreditDebitIndicator"] != "Credit" or t["Status"] != "Booked":
                    continue
                amount = t["Amount"]
                debtor = t.get("DebtorAccount") or {}
                credits.append(IncomingCredit(
                    entry_id=tid,
                    amount_minor=parse_minor(amount["Amount"], amount["Currency"]),
                    currency=amount["Currency"],
                    debtor_name=debtor.get("Name"),
                    debtor_account=debtor.get("Identification"),
                    reference=t.get("TransactionReference") or t.get("TransactionInformation"),
                    booking_date=booked_at.date(),
                    end_to_end_id=(t.get("SupplementaryData") or {}).get(
                        "EndToEndIdentification"),
                    booked_at=booked_at,
                ))
        except (KeyError, TypeError, ValueError) as exc:
            raise BankProtocolError(f"transactions did not parse: {exc!r}") from exc
        new_cursor = cursor or ""
        if last is not None:
            new_cursor = f"{last.isoformat(timespec='microseconds')}|{','.join(sorted(last_ids))}"
        return CreditPage(tuple(credits), new_cursor)

    async def reconcile(self, statement: Statement | None = None) -> Reconciliation:
        if statement is None:
            statement = await self.fetch_statement()
        submissions = [s for s in self._store.all() if s.meta.get("rail") == RAIL_NAME]
        by_e2e = {s.meta["end_to_end_id"]: s for s in submissions}
        booked: dict[str, StatementEntry] = {}
        unmatched: list[StatementEntry] = []
        for entry in statement.entries:
            sub = by_e2e.get(entry.end_to_end_id or "")
            if sub is not None and entry.direction is EntryDirection.DEBIT and entry.booked:
                booked[sub.idempotency_key] = entry
            else:
                unmatched.append(entry)
        outstanding = tuple(
            s.idempotency_key for s in submissions
            if s.idempotency_key not in booked
            and not (s.record is not None and s.record.status is PaymentStatus.REJECTED)
        )
        return Reconciliation(booked=booked, outstanding=outstanding, unmatched=tuple(unmatched))

    async def fetch_statement(self) -> Statement:
        """Our account's transactions (AISP) and booked balance as a neutral Statement."""
        txns = await self._transactions(None)
        _, balances = await self._call(
            "GET", f"{AISP}/accounts/{self._config.account_id}/balances")
        try:
            closing = None
            currency = ""
            for b in balances["Data"]["Balance"]:
                if b["Type"] == "InterimBooked":
                    currency = b["Amount"]["Currency"]
                    closing = parse_minor(b["Amount"]["Amount"], currency)
                    if b["CreditDebitIndicator"] == "Debit":
                        closing = -closing
            entries = []
            for t in txns:
                amount = t["Amount"]
                currency = currency or amount["Currency"]
                entries.append(StatementEntry(
                    entry_id=str(t["TransactionId"]),
                    direction=EntryDirection.CREDIT if t["CreditDebitIndicator"] == "Credit"
                    else EntryDirection.DEBIT,
                    amount_minor=parse_minor(amount["Amount"], amount["Currency"]),
                    currency=amount["Currency"],
                    booked=t["Status"] == "Booked",
                    booking_date=_parse_time(t["BookingDateTime"]).date(),
                    end_to_end_id=(t.get("SupplementaryData") or {}).get(
                        "EndToEndIdentification"),
                    reference=t.get("TransactionReference"),
                ))
        except (KeyError, TypeError, ValueError) as exc:
            raise BankProtocolError(f"statement did not parse: {exc!r}") from exc
        return Statement(account=self._config.account_id, currency=currency,
                         entries=tuple(entries), closing_balance_minor=closing)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_store:
            self._store.close()

    # -- the flow --------------------------------------------------------------------------

    async def _advance(self, stored: StoredSubmission, wait_s: float) -> PaymentRecord:
        instruction = instruction_from_dict(stored.instruction)
        meta = dict(stored.meta)
        ids = DerivedIds(meta["end_to_end_id"], meta["instruction_id"], meta["consent_key"],
                         meta["payment_key"])
        initiation = build_initiation(instruction, ids)
        risk = {"PaymentContextCode": self._config.payment_context}
        base = PaymentRecord(instruction.idempotency_key, ids.end_to_end_id,
                             PaymentStatus.PENDING, instruction.amount_minor,
                             instruction.currency)

        if "payment_id" not in meta:
            if "consent_id" not in meta:
                consent = await self._post(f"{PISP}/domestic-payment-consents", ids.consent_key,
                                           {"Data": {"Initiation": initiation}, "Risk": risk})
                meta["consent_id"] = self._consent_id(consent)
                self._store.update_meta(instruction.idempotency_key, meta)
                consent_status = self._consent_status(consent)
            else:
                consent_status = await self._get_consent_status(meta["consent_id"])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while consent_status == "AwaitingAuthorisation" and loop.time() < deadline:
                await asyncio.sleep(min(self._config.poll_interval_s,
                                        max(0.0, deadline - loop.time())))
                consent_status = await self._get_consent_status(meta["consent_id"])
            if consent_status == "AwaitingAuthorisation":
                return self._save(base)
            if consent_status == "Rejected":
                return self._save(replace(base, status=PaymentStatus.REJECTED,
                                          reason_code=CONSENT_REJECTED,
                                          reason="the consent was rejected"))
            # Authorised, or Consumed by our own earlier POST: the same key replays it.
            payment = await self._post(
                f"{PISP}/domestic-payments", ids.payment_key,
                {"Data": {"ConsentId": meta["consent_id"], "Initiation": initiation},
                 "Risk": risk})
            meta["payment_id"] = self._payment_field(payment, "DomesticPaymentId")
            self._store.update_meta(instruction.idempotency_key, meta)
        else:
            payment = await self._call_json("GET", f"{PISP}/domestic-payments/"
                                            f"{meta['payment_id']}")
        ob_status = self._payment_field(payment, "Status")
        attempts = 0
        while not self._map_status(ob_status).final and attempts < self._config.poll_attempts:
            attempts += 1
            await asyncio.sleep(self._config.poll_interval_s)
            payment = await self._call_json("GET", f"{PISP}/domestic-payments/"
                                            f"{meta['payment_id']}")
            ob_status = self._payment_field(payment, "Status")
        status = self._map_status(ob_status)
        record = replace(base, status=status, bank_payment_id=meta["payment_id"])
        if status is PaymentStatus.REJECTED:
            code, reason = await self._rejection_reason(meta["payment_id"])
            record = replace(record, reason_code=code, reason=reason)
        return self._save(record)

    def _save(self, record: PaymentRecord) -> PaymentRecord:
        self._store.save(record)
        return record

    async def _rejection_reason(self, payment_id: str) -> tuple[str | None, str | None]:
        details = await self._call_json("GET",
                                        f"{PISP}/domestic-payments/{payment_id}/payment-details")
        try:
            for entry in details["Data"].get("PaymentStatus", []):
                detail = entry.get("StatusDetail")
                if detail:
                    return str(detail["Status"]), detail.get("StatusReasonDescription")
        except (KeyError, TypeError, AttributeError) as exc:
            raise BankProtocolError(f"payment-details did not parse: {exc!r}") from exc
        return None, None

    async def _get_consent_status(self, consent_id: str) -> str:
        consent = await self._call_json("GET", f"{PISP}/domestic-payment-consents/{consent_id}")
        return self._consent_status(consent)

    @staticmethod
    def _consent_id(consent: Mapping[str, Any]) -> str:
        try:
            value = consent["Data"]["ConsentId"]
        except (KeyError, TypeError) as exc:
            raise BankProtocolError("consent answer has no Data.ConsentId") from exc
        if not isinstance(value, str) or not value:
            raise BankProtocolError("Data.ConsentId is not a string")
        return value

    @staticmethod
    def _consent_status(consent: Mapping[str, Any]) -> str:
        try:
            value = consent["Data"]["Status"]
        except (KeyError, TypeError) as exc:
            raise BankProtocolError("consent answer has no Data.Status") from exc
        if value not in _CONSENT_STATUSES:
            raise BankProtocolError(f"unknown consent status {value!r}")
        return str(value)

    @staticmethod
    def _payment_field(payment: Mapping[str, Any], name: str) -> str:
        try:
            value = payment["Data"][name]
        except (KeyError, TypeError) as exc:
            raise BankProtocolError(f"payment answer has no Data.{name}") from exc
        if not isinstance(value, str) or not value:
            raise BankProtocolError(f"Data.{name} is not a string")
        return value

    @staticmethod
    def _map_status(ob_status: str) -> PaymentStatus:
        try:
            return _PAYMENT_STATUS[ob_status]
        except KeyError:
            raise BankProtocolError(f"unknown payment status {ob_status!r}") from None

    async def _transactions(self, since: datetime | None) -> list[dict[str, Any]]:
        query = {"fromBookingDateTime": since.isoformat(timespec="microseconds")} \
            if since is not None else None
        body = await self._call_json(
            "GET", f"{AISP}/accounts/{self._config.account_id}/transactions", query=query,
            limit=STATEMENT_ANSWER_LIMIT)
        try:
            txns = body["Data"].get("Transaction", [])
            if not isinstance(txns, list):
                raise TypeError("Data.Transaction is not a list")
            return [dict(t) for t in txns]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise BankProtocolError(f"transactions did not parse: {exc!r}") from exc

    @staticmethod
    def _parse_cursor(cursor: str | None) -> tuple[datetime | None, frozenset[str]]:
        if not cursor:
            return None, frozenset()
        when, _, ids = cursor.partition("|")
        try:
            return _parse_time(when), frozenset(i for i in ids.split(",") if i)
        except ValueError as exc:
            raise InvalidInstruction(f"bad cursor {cursor!r}") from exc

    # -- HTTP ------------------------------------------------------------------------------

    async def _post(self, path: str, idem_key: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data = await self._call("POST", path, body=body, idem_key=idem_key)
        if status != 201:
            raise BankProtocolError(f"POST {path} answered {status}, expected 201")
        return data

    async def _call_json(self, method: str, path: str,
                         query: dict[str, str] | None = None, *,
                         limit: int = JSON_ANSWER_LIMIT) -> dict[str, Any]:
        _, data = await self._call(method, path, query=query, limit=limit)
        return data

    async def _call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                    idem_key: str | None = None,
                    query: dict[str, str] | None = None,
                    limit: int = JSON_ANSWER_LIMIT) -> tuple[int, dict[str, Any]]:
        """One logical call: retried on timeouts, 5xx, 429 and answers longer than `limit`;
        2xx JSON returned; the rest raised as typed errors."""
        cfg = self._config
        raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        interaction = str(uuid.uuid4())
        last_problem = "no attempt made"
        for attempt in range(cfg.max_attempts):
            if attempt:
                await asyncio.sleep(min(cfg.backoff_s * 2 ** (attempt - 1), 5.0))
            headers = {
                "Authorization": f"Bearer {cfg.access_token}",
                "x-fapi-interaction-id": interaction,
                "Accept": "application/json",
            }
            if raw is not None:
                headers["Content-Type"] = "application/json"
                headers["x-jws-signature"] = sign_detached(raw, self._key, kid=self._kid,
                                                           issuer=cfg.client_id)
                if idem_key is not None:
                    headers["x-idempotency-key"] = idem_key
            try:
                async with self._http().request(
                    method, self._base + path, params=query, data=raw, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s),
                ) as resp:
                    status = resp.status
                    resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                    payload = await read_bounded(resp, limit)
            except (TimeoutError, aiohttp.ClientError, AnswerTooLarge) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
                self._observe(method, path, query, headers, raw, 0, {}, b"")
                continue
            self._observe(method, path, query, headers, raw, status, resp_headers, payload)
            if status >= 500 or status == 429:
                last_problem = f"HTTP {status}"
                continue
            return status, self._interpret(method, path, status, payload, resp_headers,
                                           interaction)
        raise BankUnavailable(f"{method} {path} failed after {cfg.max_attempts} attempts "
                              f"({last_problem})")

    def _observe(self, method: str, path: str, query: dict[str, str] | None,
                 headers: Mapping[str, str], raw: bytes | None, status: int,
                 resp_headers: dict[str, str], payload: bytes) -> None:
        if self._observer is None:
            return
        sent = {k.lower(): ("Bearer <redacted>" if k == "Authorization" else v)
                for k, v in headers.items()}
        self._observer(Exchange(method, path, dict(query or {}), sent, raw, status,
                                resp_headers, payload))

    def _interpret(self, method: str, path: str, status: int, payload: bytes,
                   headers: Mapping[str, str], interaction: str) -> dict[str, Any]:
        if headers.get("x-fapi-interaction-id") != interaction:
            raise BankProtocolError(f"{method} {path}: x-fapi-interaction-id was not echoed")
        if status == 401:
            raise BankRejected(f"{method} {path}: the bank refused our credentials", "HTTP401")
        if self._bank_key is not None and payload:
            try:
                verify_detached(headers.get("x-jws-signature"), payload, self._bank_key,
                                kid=key_id(self._bank_key), issuer=self._config.bank_issuer)
            except SignatureError as exc:
                raise BankProtocolError(f"{method} {path}: answer signature: {exc}") from exc
        data = parse_json(payload, f"{method} {path}") if payload else None
        if 200 <= status < 300:
            if not isinstance(data, dict):
                raise BankProtocolError(f"{method} {path}: answer is not a JSON object")
            return data
        raise self._ob_error(method, path, status, data)

    @staticmethod
    def _ob_error(method: str, path: str, status: int, data: Any) -> RailError:
        if data is None:
            return BankRejected(f"{method} {path}: HTTP {status}", f"HTTP{status}")
        try:
            errors = [(str(e["ErrorCode"]), str(e["Message"]), e.get("Path"))
                      for e in data["Errors"]]
            message = str(data["Message"])
        except (KeyError, TypeError) as exc:
            raise BankProtocolError(
                f"{method} {path}: HTTP {status} without an OBErrorResponse1 body") from exc
        if not errors:
            return BankProtocolError(f"{method} {path}: OB error with no Errors")
        code, _, where = errors[0]
        if code == "UK.OBIE.Header.Invalid" and where == "x-idempotency-key":
            return IdempotencyConflict(f"the bank refused the idempotency key: {message}")
        if all(c.startswith(("UK.OBIE.Field.", "UK.OBIE.Unsupported.",
                             "UK.OBIE.Resource.InvalidFormat")) for c, _, _ in errors):
            return InvalidInstruction(
                f"the bank refused the instruction (HTTP {status})",
                [Finding(_finding_path(p), c, m) for c, m, p in errors])
        return BankRejected(f"{method} {path}: {message}", code)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session
