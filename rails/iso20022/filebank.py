"""What the SEPA and NACHA adapters share: one submission kept in the store, sent as a file to a
file-based bank's HTTP door (:class:`~rails.iso20022.transport.BankFileClient`), and read back
from what that bank releases.

:class:`FileBankRail` holds the parts whose logic is the same for every file scheme:

- construction: exactly one of `store` (the caller closes it) and `store_path` (opened here and
  closed in :meth:`~FileBankRail.aclose`), the bank client, the clock;
- :meth:`~FileBankRail.submit`: reserve the key *with the file's bytes* before the bank hears of
  it, post those bytes, read the answer (a ``DUPL`` answer becomes a lookup), save the record;
- :meth:`~FileBankRail.status`: fold what the bank sent into one status, never moving backwards
  (:class:`HighestStatus`), and save it once it is no longer pending;
- :meth:`~FileBankRail.incoming_credits`: booked credits from camt.054 notifications (and the
  statements of :attr:`~FileBankRail.statement_family`, where the scheme has them), with a
  ``msg:<id>`` cursor;
- :meth:`~FileBankRail.reconcile`: a statement's entries matched to submissions by end-to-end id.

A scheme supplies what differs: checking its account, building and checking its file
(:meth:`~FileBankRail._new_meta`), which bank id a record carries, the lookup after a duplicate
answer, the status fold over its own report families, and the statement reconcile reads by
default. This module sits beside the transport (not in ``rails/``) so that importing it never
runs ``rails.iso20022``'s ``__init__`` half-way through.
"""

from __future__ import annotations

import asyncio
import base64
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from rails.errors import BankProtocolError, Finding, InvalidInstruction, UnknownPayment
from rails.iso20022.reports import AccountReport, Entry
from rails.iso20022.transport import BankFileClient, BankMessage, PostAnswer
from rails.port import (
    Account,
    CreditPage,
    EntryDirection,
    IncomingCredit,
    PaymentInstruction,
    PaymentRecord,
    PaymentStatus,
    Reconciliation,
    Statement,
    StatementEntry,
)
from rails.store import IdempotencyStore, SqliteIdempotencyStore, StoredSubmission

# Status ranks: a refresh never moves a payment backwards (a late acceptance after a booking).
RANK = {
    PaymentStatus.PENDING: 0, PaymentStatus.ACCEPTED: 1, PaymentStatus.BOOKED: 2,
    PaymentStatus.REJECTED: 3, PaymentStatus.RETURNED: 4,
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class HighestStatus:
    """Fold candidate records into the one of highest rank (the first of equal rank stays)."""

    def __init__(self, start: PaymentRecord) -> None:
        self.best = start

    def consider(self, candidate: PaymentRecord) -> None:
        if RANK[candidate.status] > RANK[self.best.status]:
            self.best = candidate


def parse_cursor(cursor: str | None) -> int:
    """The bank message id in a ``msg:<id>`` cursor; 0 for none."""
    if cursor is None or cursor == "":
        return 0
    prefix, _, number = cursor.partition(":")
    if prefix != "msg" or not number.isdigit():
        raise InvalidInstruction("cursor was not issued by this rail",
                                 [Finding("cursor", "FF01", f"unknown cursor {cursor!r}")])
    return int(number)


def credit_from_entry(entry: Entry) -> IncomingCredit | None:
    """A booked credit that is money a peer sent (not a return of our own payment), or None."""
    if (entry.direction is not EntryDirection.CREDIT or not entry.booked
            or entry.return_reason is not None or entry.booking_date is None):
        return None
    return IncomingCredit(
        entry_id=entry.entry_id, amount_minor=entry.amount_minor, currency=entry.currency,
        debtor_name=entry.counterparty_name, debtor_account=entry.counterparty_account,
        reference=entry.reference, booking_date=entry.booking_date,
        end_to_end_id=entry.end_to_end_id)


class FileBankRail(ABC):
    """The shared half of a :class:`rails.port.Rail` over a file-based bank (see the module)."""

    name: str
    content_type: ClassVar[str]
    """The Content-Type the file is posted with."""
    parsers: ClassVar[Mapping[str, Callable[[bytes], Any]]]
    """Message family → parser, for every family :meth:`_fetch` reads."""
    statement_family: ClassVar[str | None] = None
    """Statements read for credits no notification carried (camt.053), or None."""
    reconcile_saves: ClassVar[bool] = True
    """Whether :meth:`reconcile` saves the booked/returned status it matches."""

    def __init__(
        self,
        *,
        base_url: str,
        account: Account,
        store: IdempotencyStore | None,
        store_path: str | Path | None,
        auth: tuple[str, str] | None,
        timeout_s: float,
        attempts: int,
        backoff_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        if (store is None) == (store_path is None):
            raise ValueError("give exactly one of store and store_path")
        self._check_account(account)
        self.account = account
        self._owns_store = store is None
        self._store: IdempotencyStore = (
            store if store is not None else SqliteIdempotencyStore(str(store_path)))
        self._bank = BankFileClient(base_url, auth=auth, timeout_s=timeout_s,
                                    attempts=attempts, backoff_s=backoff_s)
        self._clock = clock
        self._reserve_lock = asyncio.Lock()
        self._parsed: dict[int, Any] = {}

    async def aclose(self) -> None:
        await self._bank.aclose()
        if self._owns_store:
            self._store.close()

    # -- what a scheme supplies --------------------------------------------------------------

    @abstractmethod
    def _check_account(self, account: Account) -> None:
        """Raise ValueError when `account` cannot be this rail's own account."""

    @abstractmethod
    def _is_our_account(self, reported: str) -> bool:
        """Is an account id the bank reports under (camt Acct/Id) ours?"""

    @abstractmethod
    def _new_meta(self, instruction: PaymentInstruction) -> dict[str, Any]:
        """Check and build the file for a new key: its ids, as :meth:`_meta` gives them, or
        InvalidInstruction (nothing reserved, nothing sent)."""

    @abstractmethod
    def _bank_payment_id(self, stored: StoredSubmission, status: PaymentStatus) -> str | None:
        """The bank's id for the payment as a record with `status` carries it."""

    @abstractmethod
    async def _lookup(self, stored: StoredSubmission) -> PaymentRecord:
        """What became of a file the bank calls a duplicate."""

    @abstractmethod
    async def _refresh(self, stored: StoredSubmission, current: PaymentRecord | None
                       ) -> PaymentRecord:
        """Fold every report about the payment into one status (from `current` up)."""

    @abstractmethod
    async def _default_statement(self) -> Statement:
        """The statement :meth:`reconcile` reads when it is given none."""

    # -- submit ------------------------------------------------------------------------------

    def _meta(self, data: bytes, **ids: str) -> dict[str, Any]:
        """What is reserved with a key: the rail, the derived ids, the file's exact bytes."""
        return {"rail": self.name, **ids, "file_b64": base64.b64encode(data).decode("ascii")}

    async def submit(self, instruction: PaymentInstruction) -> PaymentRecord:
        async with self._reserve_lock:
            stored = self._store.get(instruction.idempotency_key)
            meta = self._new_meta(instruction) if stored is None else stored.meta
            # reserve() is also the conflict check: a different instruction under a used key
            # raises.
            stored = self._store.reserve(instruction, meta)
        if stored.record is not None:
            return stored.record
        answer = await self._bank.post_file(base64.b64decode(stored.meta["file_b64"]),
                                            self.content_type)
        record = await self._from_answer(stored, answer)
        self._store.save(record)
        return record

    def _record(self, stored: StoredSubmission, status: PaymentStatus, *,
                code: str | None = None, reason: str | None = None) -> PaymentRecord:
        return PaymentRecord(
            idempotency_key=stored.idempotency_key, end_to_end_id=stored.meta["end_to_end_id"],
            status=status, amount_minor=int(stored.instruction["amount_minor"]),
            currency=str(stored.instruction["currency"]),
            bank_payment_id=self._bank_payment_id(stored, status),
            reason_code=code, reason=reason)

    def _answered(self, stored: StoredSubmission, body: dict[str, Any]) -> StoredSubmission:
        """Keep what a (non-duplicate) answer says about the file; the submission as now kept."""
        return stored

    async def _rejected(self, stored: StoredSubmission, payment: dict[str, Any]
                        ) -> PaymentRecord:
        """The record for a payment the bank's answer lists as rejected."""
        return self._record(stored, PaymentStatus.REJECTED, code=payment.get("reason"),
                            reason=payment.get("reason_text"))

    async def _from_answer(self, stored: StoredSubmission, answer: PostAnswer
                           ) -> PaymentRecord:
        body = answer.body
        e2e = stored.meta["end_to_end_id"]
        if body.get("reason") == "DUPL":
            # The bank has this file already: an earlier attempt got through and its answer
            # was lost. Find what became of that payment rather than report a failure.
            return await self._lookup(stored)
        stored = self._answered(stored, body)
        payments = body.get("payments")
        if not isinstance(payments, list):
            raise BankProtocolError("POST /payments answer has no payments list")
        mine = [p for p in payments if isinstance(p, dict) and p.get("end_to_end_id") == e2e]
        if not mine:
            if answer.status == 422 or body.get("status") == "RJCT":
                return self._record(stored, PaymentStatus.REJECTED,
                                    code=str(body.get("reason") or "FF01"),
                                    reason=body.get("reason_text"))
            raise BankProtocolError(f"POST /payments answer does not mention {e2e}")
        p = mine[0]
        if p.get("outcome") == "rejected":
            return await self._rejected(stored, p)
        if p.get("outcome") != "accepted":
            raise BankProtocolError(f"unknown outcome {p.get('outcome')!r} for {e2e}")
        return self._record(stored, PaymentStatus.BOOKED if p.get("booked") is True
                            else PaymentStatus.ACCEPTED)

    # -- reading what the bank sent ----------------------------------------------------------

    async def _fetch(self, family: str, after_id: int = 0) -> list[tuple[BankMessage, Any]]:
        """Released messages of one family, parsed once per message id."""
        parser = self.parsers[family]
        out = []
        for msg in await self._bank.messages(family, after_id):
            if msg.id not in self._parsed:
                self._parsed[msg.id] = parser(msg.body)
            out.append((msg, self._parsed[msg.id]))
        return out

    def _ours(self, report: AccountReport) -> bool:
        return self._is_our_account(report.account)

    async def status(self, idempotency_key: str) -> PaymentRecord:
        stored = self._store.get(idempotency_key)
        if stored is None:
            raise UnknownPayment(f"no payment under key {idempotency_key!r}")
        record = await self._refresh(stored, stored.record)
        if record != stored.record and record.status is not PaymentStatus.PENDING:
            self._store.save(record)
        return record

    # -- incoming credits --------------------------------------------------------------------

    async def incoming_credits(self, cursor: str | None = None) -> CreditPage:
        """Booked credits to our account (returns of our own payments excluded: those are a
        payment's status, not money a peer sent), from camt.054 notifications and, where the
        scheme has them, from statements for any credit no notification carried. The cursor is
        the id of the last bank message read."""
        after = parse_cursor(cursor)
        notified: set[str] = set()
        last = after
        credits: list[IncomingCredit] = []
        for msg, reports in await self._fetch("camt.054"):
            for rep in reports:
                if not self._ours(rep):
                    continue
                for entry in rep.entries:
                    notified.add(entry.entry_id)
                    credit = credit_from_entry(entry)
                    if credit is not None and msg.id > after:
                        credits.append(credit)
            last = max(last, msg.id)
        if self.statement_family is not None:
            for msg, reports in await self._fetch(self.statement_family, after):
                for rep in reports:
                    if not self._ours(rep):
                        continue
                    for entry in rep.entries:
                        credit = credit_from_entry(entry)
                        if credit is not None and entry.entry_id not in notified:
                            notified.add(entry.entry_id)
                            credits.append(credit)
                last = max(last, msg.id)
        return CreditPage(tuple(credits), f"msg:{last}")

    # -- reconciliation ----------------------------------------------------------------------

    async def reconcile(self, statement: Statement | None = None) -> Reconciliation:
        """Match a statement's entries to our submissions by end-to-end id.

        `outstanding` lists submissions that are neither on this statement nor already known
        to be booked, returned or rejected: the ones still to look for.
        """
        if statement is None:
            statement = await self._default_statement()
        by_e2e = {s.meta.get("end_to_end_id"): s for s in self._store.all()
                  if s.meta.get("rail") == self.name}
        booked: dict[str, StatementEntry] = {}
        returned: dict[str, StatementEntry] = {}
        unmatched: list[StatementEntry] = []
        for entry in statement.entries:
            sub = by_e2e.get(entry.end_to_end_id) if entry.end_to_end_id else None
            if sub is None or not entry.booked:
                unmatched.append(entry)
                continue
            if entry.direction is EntryDirection.DEBIT and entry.return_reason is None:
                booked[sub.idempotency_key] = entry
                self._promote(sub, PaymentStatus.BOOKED, None)
            elif entry.direction is EntryDirection.CREDIT and entry.return_reason is not None:
                returned[sub.idempotency_key] = entry
                self._promote(sub, PaymentStatus.RETURNED, entry.return_reason)
            else:
                unmatched.append(entry)
        outstanding = []
        for sub in by_e2e.values():
            fresh = self._store.get(sub.idempotency_key)
            status = fresh.record.status if fresh and fresh.record else PaymentStatus.PENDING
            if (sub.idempotency_key not in booked and sub.idempotency_key not in returned
                    and status in (PaymentStatus.PENDING, PaymentStatus.ACCEPTED)):
                outstanding.append(sub.idempotency_key)
        return Reconciliation(booked=booked, returned=returned, outstanding=tuple(outstanding),
                              unmatched=tuple(unmatched))

    def _promote(self, sub: StoredSubmission, status: PaymentStatus, code: str | None) -> None:
        """Save `status` from a statement unless the store already knows as much or more."""
        if not self.reconcile_saves:
            return
        current = self._store.get(sub.idempotency_key)
        record = current.record if current else None
        if record is not None and RANK[record.status] >= RANK[status]:
            return
        self._store.save(self._record(sub, status, code=code))
