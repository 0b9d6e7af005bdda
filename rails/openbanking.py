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
   a ``Rejected`` payment's reason code comes from ``…/payment-details``; a refusal of that
   ``GET`` (a 4xx) is :class:`~rails.errors.StatusRefused`, transient: the payment exists and
   only its status is the bank's word on it;
6. ``AcceptedSettlementCompleted`` is the bank's word and kept as ``accepted``: the payment is
   ``booked`` only when our account's transactions (AISP) show the debit with its
   EndToEndIdentification, amount and currency (:mod:`rails.reconcile`); a difference, or no
   such transaction by the booking deadline, is ``unreconciled`` with the reason.

A crash (or :class:`~rails.errors.BankUnavailable`) anywhere in between leaves the reservation and
whatever ids were learnt; the next ``submit``/``status`` with the same key re-sends the *same*
bodies under the *same* ``x-idempotency-key``, which the bank answers with the resource it already
made. So a restart never creates a second consent or payment.

Transport: an :class:`aiohttp.ClientSession` owned by the adapter; OAuth 2.0 bearer tokens
(:mod:`rails.ob_oauth`: client credentials with ``private_key_jwt``, refreshed before they expire
and after a 401; a PSU-authorised consent's own token for its payment); a detached PS256
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
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from joserfc.jwk import RSAKey

from rails import reconcile as recon
from rails.errors import (
    AnswerTooLarge,
    BankProtocolError,
    BankRejected,
    BankUnavailable,
    Finding,
    IdempotencyConflict,
    InvalidInstruction,
    NotConfigured,
    RailError,
    StatusRefused,
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
    ob_issuer,
    public_jwk,
    sign_detached,
    verify_detached,
)
from rails.ob_oauth import TokenClient, authorisation_url, parse_redirect
from rails.port import (
    Account,
    AccountScheme,
    CreditPage,
    EntryDirection,
    IncomingCredit,
    PaymentInstruction,
    PaymentRecord,
    PaymentStatus,
    PendingAuthorisation,
    Reconciliation,
    Statement,
    StatementEntry,
    validate_instruction_basics,
)
from rails.recent_statement import RecentStatement
from rails.store import IdempotencyStore, SqliteIdempotencyStore, StoredSubmission

PISP = "/open-banking/v3.1/pisp"
AISP = "/open-banking/v3.1/aisp"
RAIL_NAME = "openbanking"
BANK_ISSUER = "0015800000SANDBOX1"
"""The sandbox bank's OB Directory org id: the ``iss`` of its signatures (an ASPSP signs as
``{org-id}``)."""

_OB_SCHEME = {
    AccountScheme.SORT_CODE: "UK.OBIE.SortCodeAccountNumber",
    AccountScheme.IBAN: "UK.OBIE.IBAN",
}
_PAYMENT_STATUS = {
    "Pending": PaymentStatus.PENDING,
    "AcceptedSettlementInProcess": PaymentStatus.ACCEPTED,
    "AcceptedWithoutPosting": PaymentStatus.ACCEPTED,
    "AcceptedSettlementCompleted": PaymentStatus.ACCEPTED,
    "AcceptedCreditSettlementCompleted": PaymentStatus.ACCEPTED,
    "Rejected": PaymentStatus.REJECTED,
}
_OB_FINAL = frozenset({"AcceptedSettlementCompleted", "AcceptedCreditSettlementCompleted",
                       "Rejected"})
"""The bank's last word on a payment: polling stops; the statement decides the rest."""
_CONSENT_STATUSES = ("AwaitingAuthorisation", "Authorised", "Consumed", "Rejected")
PSU_WAITING = ("authorised by the account holder at the bank; waiting for the redirect back "
               "(meterline rails authorise --redirect URL)")
"""`reason` of a pending payment whose consent the PSU authorised, before the code is back."""
PSU_TOKEN_MARGIN_S = 5.0
"""A consent's token this close to its expiry is not used (the payment would fail midway)."""
CONSENT_REJECTED = "ConsentRejected"
"""`reason_code` of a payment whose consent the PSU (or the bank) rejected."""


@dataclass(frozen=True, slots=True)
class OpenBankingConfig:
    """Everything the node needs to pay by bank from one account.

    `base_url` is the bank's origin (``http://127.0.0.1:8700``); `client_id`, `org_id` and
    `software_statement_id` come from registering the TPP with the bank (``POST
    /_sandbox/clients`` on the sandbox); tokens are asked for with `key_file`'s key;
    `key_file` is the TPP's private key (see :func:`generate_key_pair`); `account_id` is the
    bank's AccountId of our own account (AISP reads, statements). `store_path` is the adapter's
    own idempotency file, used when no store is handed to the adapter.
    """

    base_url: str
    client_id: str
    key_file: Path
    account_id: str
    org_id: str = ""
    """Our organisation's OB Directory id; with `software_statement_id` the ``iss`` of every
    signature we send (``{org-id}/{software-statement-id}``, :func:`rails.ob_jws.ob_issuer`)."""
    software_statement_id: str = ""
    store_path: Path | None = None
    redirect_uri: str = ""
    """Where the bank sends the PSU back after authorising a consent (registered with the
    bank); empty: this node has no PSU authorisation step (:meth:`OpenBankingRail.
    awaiting_authorisation` refuses)."""
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
    booking_deadline: timedelta = recon.DEFAULT_BOOKING_DEADLINE
    """No matching booked transaction this long after submission: ``unreconciled``."""


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


def _end_to_end_id(txn: dict[str, Any]) -> str | None:
    """Where the bank puts a transaction's EndToEndIdentification: its SupplementaryData."""
    value = (txn.get("SupplementaryData") or {}).get("EndToEndIdentification")
    if value is not None and not isinstance(value, str):
        raise TypeError(f"EndToEndIdentification is not a string: {value!r}")
    return value


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
        self._issuer = ob_issuer(config.org_id, config.software_statement_id)
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
        self._recent = RecentStatement(self._transactions, _parse_time,
                                       reference=_end_to_end_id)
        """Our transactions read incrementally, for settling payments (issue 13)."""
        self._tokens = TokenClient(self._base, config.client_id, self._key, self._kid,
                                   session=self._http, timeout_s=config.request_timeout_s,
                                   attempts=config.max_attempts, backoff_s=config.backoff_s)

    # -- the port --------------------------------------------------------------------------

    async def submit(self, instruction: PaymentInstruction) -> PaymentRecord:
        ids = derive_ids(instruction.idempotency_key)
        build_initiation(instruction, ids)  # validate before anything is stored
        meta = {"rail": RAIL_NAME, "end_to_end_id": ids.end_to_end_id,
                "instruction_id": ids.instruction_id, "consent_key": ids.consent_key,
                "payment_key": ids.payment_key,
                "submitted_at": datetime.now(UTC).isoformat()}
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

    async def reconcile(self, statement: Statement | None = None, *,
                        since: date | None = None, until: date | None = None
                        ) -> Reconciliation:
        """Our transactions (or `statement`) matched to our payments (:func:`rails.reconcile
        .match`); with `since`/`until` (inclusive) only what was booked and submitted then."""
        if statement is None:
            statement = await self.fetch_statement()
        _, result = recon.reconcile_period(
            statement.entries, [s for s in self._store.all() if s.meta.get("rail") == RAIL_NAME],
            now=datetime.now(UTC), deadline=self._config.booking_deadline,
            since=since, until=until)
        return result

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
        except (KeyError, TypeError, ValueError) as exc:
            raise BankProtocolError(f"statement did not parse: {exc!r}") from exc
        entries = self._entries(txns)
        currency = currency or (entries[0].currency if entries else "")
        return Statement(account=self._config.account_id, currency=currency,
                         entries=tuple(entries), closing_balance_minor=closing)

    @staticmethod
    def _entries(txns: list[dict[str, Any]]) -> list[StatementEntry]:
        """OB transactions as neutral statement entries (EndToEndIdentification from the
        SupplementaryData, where the bank puts it)."""
        try:
            return [StatementEntry(
                entry_id=str(t["TransactionId"]),
                direction=EntryDirection.CREDIT if t["CreditDebitIndicator"] == "Credit"
                else EntryDirection.DEBIT,
                amount_minor=parse_minor(t["Amount"]["Amount"], t["Amount"]["Currency"]),
                currency=t["Amount"]["Currency"],
                booked=t["Status"] == "Booked",
                booking_date=_parse_time(t["BookingDateTime"]).date(),
                end_to_end_id=_end_to_end_id(t),
                reference=t.get("TransactionReference"),
            ) for t in txns]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BankProtocolError(f"transactions did not parse: {exc!r}") from exc

    # -- the PSU's authorisation of a consent ----------------------------------------------

    def authorisation_url(self, idempotency_key: str, *, redirect_uri: str, state: str) -> str:
        """Where to send the PSU to authorise this payment's consent (after :meth:`submit`
        answered ``pending`` with the consent awaiting authorisation)."""
        stored = self._store.get(idempotency_key)
        if stored is None or "consent_id" not in stored.meta:
            raise UnknownPayment(f"no consent for {idempotency_key!r} yet")
        return authorisation_url(self._base, client_id=self._config.client_id,
                                 consent_id=stored.meta["consent_id"],
                                 redirect_uri=redirect_uri, state=state)

    async def authorised(self, idempotency_key: str, *, code: str, redirect_uri: str
                         ) -> PaymentRecord:
        """The PSU authorised the consent and the bank redirected back with `code`: trade it
        for the consent's token and carry on with the payment."""
        stored = self._store.get(idempotency_key)
        if stored is None or "consent_id" not in stored.meta:
            raise UnknownPayment(f"no consent for {idempotency_key!r} yet")
        token, expires_at = await self._tokens.exchange_code(code, redirect_uri)
        # Kept with the payment until the payment is made: a crash or an unreachable bank
        # after the code is traded (a code is good once) must not strand the consent.
        self._store.update_meta(idempotency_key, {**stored.meta, "psu_token": token,
                                                  "psu_token_expires_at": expires_at})
        stored = self._store.get(idempotency_key)
        assert stored is not None
        return await self._advance(stored, 0.0)

    @staticmethod
    def _psu_token(meta: Mapping[str, Any]) -> str | None:
        """The consent's own token from the PSU's authorisation, while it is still good."""
        token, expires_at = meta.get("psu_token"), meta.get("psu_token_expires_at")
        if (isinstance(token, str) and isinstance(expires_at, (int, float))
                and time.time() < expires_at - PSU_TOKEN_MARGIN_S):
            return token
        return None

    async def awaiting_authorisation(self) -> list[PendingAuthorisation]:
        """:class:`rails.port.PsuAuthorisation`: every consent of ours the bank says awaits
        the PSU, each with an authorisation URL whose ``state`` (random, kept with the
        payment) is how :meth:`authorised_by_redirect` finds the payment again."""
        if not self._config.redirect_uri:
            raise NotConfigured("no redirect_uri is configured for the Open Banking rail: the "
                                "PSU cannot be sent to authorise a consent")
        pending = []
        for stored in self._store.all():
            meta = stored.meta
            if (meta.get("rail") != RAIL_NAME or "consent_id" not in meta
                    or "payment_id" in meta
                    or (stored.record is not None and stored.record.status.final)):
                continue
            if await self._get_consent_status(meta["consent_id"]) != "AwaitingAuthorisation":
                continue
            if "psu_state" not in meta:
                meta = {**meta, "psu_state": secrets.token_urlsafe(24)}
                self._store.update_meta(stored.idempotency_key, meta)
            pending.append(PendingAuthorisation(
                stored.idempotency_key, meta["consent_id"],
                int(stored.instruction["amount_minor"]), str(stored.instruction["currency"]),
                authorisation_url(self._base, client_id=self._config.client_id,
                                  consent_id=meta["consent_id"],
                                  redirect_uri=self._config.redirect_uri,
                                  state=meta["psu_state"])))
        return pending

    async def authorised_by_redirect(self, redirect: str) -> PaymentRecord:
        """:class:`rails.port.PsuAuthorisation`: `redirect` is where the bank sent the PSU
        back. Its origin and path must be our redirect URI and its ``state`` one we gave out;
        a ``code`` is traded for the consent's token and the payment goes on, an ``error``
        (the PSU declined) leaves what the bank says of the consent (rejected)."""
        if not self._config.redirect_uri:
            raise NotConfigured("no redirect_uri is configured for the Open Banking rail")
        code, state, error = parse_redirect(redirect, self._config.redirect_uri)
        key = next((s.idempotency_key for s in self._store.all()
                    if isinstance(s.meta.get("psu_state"), str)
                    and secrets.compare_digest(s.meta["psu_state"], state)), None)
        if key is None:
            raise UnknownPayment("the redirect's state is not one this node gave out")
        if error is not None:
            return await self.status(key)
        assert code is not None
        return await self.authorised(key, code=code, redirect_uri=self._config.redirect_uri)

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
            if (consent_status == "Authorised" and "psu_state" in meta
                    and self._psu_token(meta) is None):
                # the PSU authorised at the bank, the code is not back (or its token ran
                # out): a payment with our client-credentials token would be refused
                return self._save(replace(base, reason=PSU_WAITING))
            if consent_status == "Rejected":
                return self._save(replace(base, status=PaymentStatus.REJECTED,
                                          reason_code=CONSENT_REJECTED,
                                          reason="the consent was rejected"))
            # Authorised, or Consumed by our own earlier POST: the same key replays it.
            payment = await self._post(
                f"{PISP}/domestic-payments", ids.payment_key,
                {"Data": {"ConsentId": meta["consent_id"], "Initiation": initiation},
                 "Risk": risk}, token=self._psu_token(meta))
            meta["payment_id"] = self._payment_field(payment, "DomesticPaymentId")
            meta.pop("psu_token", None)  # spent: the payment exists
            meta.pop("psu_token_expires_at", None)
            self._store.update_meta(instruction.idempotency_key, meta)
        else:
            payment = await self._payment(meta["payment_id"])
        ob_status = self._payment_field(payment, "Status")
        attempts = 0
        while ob_status not in _OB_FINAL and attempts < self._config.poll_attempts:
            attempts += 1
            await asyncio.sleep(self._config.poll_interval_s)
            payment = await self._payment(meta["payment_id"])
            ob_status = self._payment_field(payment, "Status")
        status = self._map_status(ob_status)
        record = replace(base, status=status, bank_payment_id=meta["payment_id"])
        if status is PaymentStatus.REJECTED:
            code, reason = await self._rejection_reason(meta["payment_id"])
            record = replace(record, reason_code=code, reason=reason)
        elif ob_status in _OB_FINAL:
            record = await self._settle(stored, record)
        return self._save(record)

    async def _settle(self, stored: StoredSubmission, record: PaymentRecord) -> PaymentRecord:
        """What our account's transactions say of a payment the bank calls settled: what is
        held (read for the whole poll), then what may be new, then the whole window (a booking
        shown late under an earlier time: the rare case)."""
        expected = recon.expected_of(stored)
        since = expected.submitted_at - timedelta(days=1) if expected.submitted_at else None
        said = recon.Verdict(None)
        for fresh, whole in ((False, False), (True, False), (False, True)):
            said = recon.verdict(await self._booked(since, expected, fresh=fresh, whole=whole),
                                 stored.idempotency_key)
            if said.status is PaymentStatus.BOOKED:
                break
        if said.status is None:
            return record
        return replace(record, status=said.status, reason_code=said.reason_code,
                       reason=said.reason)

    async def _booked(self, since: datetime | None, expected: recon.Expected, *,
                      fresh: bool = False, whole: bool = False) -> recon.Matching:
        """`expected` matched against our transactions since `since` with its end-to-end id
        (rails.recent_statement: only what may be new is asked for, unless `whole`)."""
        try:
            txns = await self._recent.with_reference(since, expected.end_to_end_id,
                                                     fresh=fresh, whole=whole)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BankProtocolError(f"transactions did not parse: {exc!r}") from exc
        return recon.match(self._entries(txns), [expected], now=datetime.now(UTC),
                           deadline=self._config.booking_deadline)

    def _save(self, record: PaymentRecord) -> PaymentRecord:
        self._store.save(record)
        return record

    async def _payment(self, payment_id: str) -> dict[str, Any]:
        """``GET /domestic-payments/{id}``: the payment as the bank shows it. A refusal of the
        query (a 4xx: the bank's error body or a bare status) is :class:`StatusRefused`: the
        payment exists, and only its status (``Rejected`` in a 200) is the bank's word on it."""
        try:
            return await self._call_json("GET", f"{PISP}/domestic-payments/{payment_id}")
        except (BankRejected, InvalidInstruction, IdempotencyConflict) as exc:
            raise StatusRefused(f"the bank refused the status query of payment {payment_id} "
                                f"({exc}); it is asked again later") from exc

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

    async def _post(self, path: str, idem_key: str, body: dict[str, Any], *,
                    token: str | None = None) -> dict[str, Any]:
        status, data = await self._call("POST", path, body=body, idem_key=idem_key,
                                        token=token)
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
                    limit: int = JSON_ANSWER_LIMIT,
                    token: str | None = None) -> tuple[int, dict[str, Any]]:
        """One logical call: retried on timeouts, 5xx, 429 and answers longer than `limit`;
        2xx JSON returned; the rest raised as typed errors."""
        cfg = self._config
        raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        interaction = str(uuid.uuid4())
        last_problem = "no attempt made"
        refreshed = False
        attempt = 0
        while attempt < cfg.max_attempts:
            if attempt:
                await asyncio.sleep(min(cfg.backoff_s * 2 ** (attempt - 1), 5.0))
            attempt += 1
            bearer = token if token is not None else await self._tokens.token()
            headers = {
                "Authorization": f"Bearer {bearer}",
                "x-fapi-interaction-id": interaction,
                "Accept": "application/json",
            }
            if raw is not None:
                headers["Content-Type"] = "application/json"
                headers["x-jws-signature"] = sign_detached(raw, self._key, kid=self._kid,
                                                           issuer=self._issuer)
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
            if status == 401 and token is None and not refreshed:
                # revoked or expired early: one more try with a new token, not a retry
                self._tokens.invalidate()
                refreshed = True
                attempt -= 1
                continue
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
