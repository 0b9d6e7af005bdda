"""What the SEPA and NACHA adapters share: one submission kept in the store, handed to the bank
as a file over a :class:`~rails.transport.FileTransport`, and read back from what the bank sends.

:class:`FileBankRail` holds the parts whose logic is the same for every file scheme:

- construction: exactly one of `store` (the caller closes it) and `store_path` (opened here and
  closed in :meth:`~FileBankRail.aclose`), the transport (a folder pair in production,
  :mod:`rails.transport_directory`; mock-bank's HTTP door in tests, given as `base_url`), the
  clock;
- :meth:`~FileBankRail.submit`: reserve the key *with the file's bytes* before the bank hears of
  it, send those bytes, read the answer where the channel has one (a ``DUPL`` answer becomes a
  lookup; a folder channel answers later, so the payment is pending), save the record;
- :meth:`~FileBankRail.status`: fold what the bank sent into one status, never moving backwards
  (:class:`HighestStatus`), and save it once it is no longer pending. A payment is ``booked``
  only when our account's statement entries (camt.054 intraday, camt.053) show it with its
  end-to-end id, amount and currency (:meth:`~FileBankRail._settle`, :mod:`rails.reconcile`);
  a status report saying "booked" (pain.002 ``ACSC``) is an acceptance; a difference, or no
  booking by :attr:`~FileBankRail.booking_deadline`, is ``unreconciled`` with the reason;
- :meth:`~FileBankRail.incoming_credits`: booked credits from camt.054 notifications (and the
  statements of :attr:`~FileBankRail.statement_family`, where the scheme has them), with a
  ``msg:<id>`` cursor;
- :meth:`~FileBankRail.reconcile`: statement entries matched to submissions
  (:func:`rails.reconcile.match`), for one statement or for a period.

A scheme supplies what differs: checking its account, building and checking its file
(:meth:`~FileBankRail._new_meta`), which bank id a record carries, the lookup after a duplicate
answer, the status fold over its own report families, and the statement entries it reads. This
module imports nothing from ``rails.iso20022`` at run time, so importing it never runs that
package's ``__init__`` half-way through.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rails import reconcile as recon
from rails.errors import BankProtocolError, Finding, InvalidInstruction, UnknownPayment
from rails.transport import BankMessage, FileTransport, PostAnswer

if TYPE_CHECKING:
    from rails.iso20022.reports import AccountReport, Entry
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
# Unreconciled sits below booked: a late booking still settles a payment raised as missing.
RANK = {
    PaymentStatus.PENDING: 0, PaymentStatus.ACCEPTED: 1, PaymentStatus.UNRECONCILED: 2,
    PaymentStatus.BOOKED: 3, PaymentStatus.REJECTED: 4, PaymentStatus.RETURNED: 5,
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

    file_suffix: ClassVar[str] = "xml"
    """How the file's name ends (a folder channel's bank reads the name)."""
    booking_deadline: timedelta = recon.DEFAULT_BOOKING_DEADLINE
    """No booked statement entry this long after submission: ``unreconciled``."""

    def __init__(
        self,
        *,
        account: Account,
        store: IdempotencyStore | None,
        store_path: str | Path | None,
        clock: Callable[[], datetime],
        transport: FileTransport | None = None,
        base_url: str | None = None,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
        booking_deadline: timedelta | None = None,
    ) -> None:
        """Give `transport`, or (tests) `base_url`: mock-bank's HTTP door, reached with `auth`,
        `timeout_s`, `attempts` and `backoff_s`."""
        if (store is None) == (store_path is None):
            raise ValueError("give exactly one of store and store_path")
        if (transport is None) == (base_url is None):
            raise ValueError("give exactly one of transport and base_url")
        self._check_account(account)
        self.account = account
        self._owns_store = store is None
        self._store: IdempotencyStore = (
            store if store is not None else SqliteIdempotencyStore(str(store_path)))
        if transport is None:
            from rails.testing.mockbank import MockBankHttpTransport

            transport = MockBankHttpTransport(str(base_url), auth=auth, timeout_s=timeout_s,
                                              attempts=attempts, backoff_s=backoff_s)
        self._bank: FileTransport = transport
        self._clock = clock
        if booking_deadline is not None:
            self.booking_deadline = booking_deadline
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

    async def _statement_entries(self) -> list[StatementEntry]:
        """Every entry our account's statements show: camt.054 notifications (intraday) and,
        where the scheme has them, the :attr:`statement_family` statements. One entry may be
        in both (the same entry id); :func:`rails.reconcile.match` counts it once."""
        entries: list[StatementEntry] = []
        families = ["camt.054"] + ([self.statement_family] if self.statement_family else [])
        for family in families:
            for _, reports in await self._fetch(family):
                for rep in reports:
                    if self._ours(rep):
                        entries.extend(e.to_port() for e in rep.entries)
        return entries

    # -- submit ------------------------------------------------------------------------------

    def _meta(self, data: bytes, **ids: str) -> dict[str, Any]:
        """What is reserved with a key: the rail, the derived ids, the file's exact bytes, and
        when it was made (the booking deadline counts from there)."""
        return {"rail": self.name, **ids, "file_b64": base64.b64encode(data).decode("ascii"),
                "submitted_at": self._clock().isoformat()}

    def file_name(self, stored: StoredSubmission) -> str:
        """The file's name, the same on every retry: the rail and a digest of the key."""
        digest = hashlib.sha256(stored.idempotency_key.encode()).hexdigest()[:20]
        return f"{self.name}-{digest}.{self.file_suffix}"

    async def submit(self, instruction: PaymentInstruction) -> PaymentRecord:
        async with self._reserve_lock:
            stored = self._store.get(instruction.idempotency_key)
            meta = self._new_meta(instruction) if stored is None else stored.meta
            # reserve() is also the conflict check: a different instruction under a used key
            # raises.
            stored = self._store.reserve(instruction, meta)
        if stored.record is not None:
            return stored.record
        answer = await self._bank.send(self.file_name(stored),
                                       base64.b64decode(stored.meta["file_b64"]),
                                       self.content_type)
        if answer is None:  # a folder channel: the bank answers later, in its reports
            record = self._record(stored, PaymentStatus.PENDING)
        else:
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
        accepted = self._record(stored, PaymentStatus.ACCEPTED)
        if p.get("booked") is True:
            # The bank's word; booked only once its statement entries show it.
            return await self._refresh(stored, accepted)
        return accepted

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

    # -- settlement and reconciliation ------------------------------------------------------

    def _settle(self, stored: StoredSubmission, fold: HighestStatus,
                entries: Iterable[StatementEntry]) -> None:
        """Fold in what our account's statement entries say of one payment: booked (settled),
        returned, or unreconciled with the reason (:func:`rails.reconcile.verdict`)."""
        matching = recon.match(entries, [recon.expected_of(stored)], now=self._clock(),
                               deadline=self.booking_deadline)
        said = recon.verdict(matching, stored.idempotency_key)
        if said.status is not None:
            fold.consider(self._record(stored, said.status, code=said.reason_code,
                                       reason=said.reason))

    async def reconcile(self, statement: Statement | None = None, *,
                        since: date | None = None, until: date | None = None
                        ) -> Reconciliation:
        """Match statement entries to our submissions (:func:`rails.reconcile.match`).

        Without a `statement`, every entry the bank has reported for our account is read. With
        `since`/`until` (inclusive), only entries booked and payments submitted in that period
        count. `outstanding` lists submissions neither on the statement nor already known to be
        rejected or returned and still within the booking deadline; `differences` what the
        operator must look at (never settled silently).
        """
        entries = (await self._statement_entries() if statement is None
                   else list(statement.entries))
        subs = {s.idempotency_key: s for s in self._store.all() if s.meta.get("rail") == self.name}
        matching, result = recon.reconcile_period(
            entries, subs.values(), now=self._clock(), deadline=self.booking_deadline,
            since=since, until=until)
        for key in {m.key for m in matching.matches} | {d.key for d in matching.differences
                                                         if d.key is not None}:
            said = recon.verdict(matching, key)
            if said.status is not None:
                self._promote(subs[key], said.status, said.reason_code, said.reason)
        outstanding = []
        for key in result.outstanding:
            fresh = self._store.get(key)
            status = fresh.record.status if fresh and fresh.record else PaymentStatus.PENDING
            if status in (PaymentStatus.PENDING, PaymentStatus.ACCEPTED):
                outstanding.append(key)
        return replace(result, outstanding=tuple(outstanding))

    def _promote(self, sub: StoredSubmission, status: PaymentStatus, code: str | None,
                 reason: str | None = None) -> None:
        """Save `status` from a statement unless the store already knows as much or more."""
        if not self.reconcile_saves:
            return
        current = self._store.get(sub.idempotency_key)
        record = current.record if current else None
        if record is not None and RANK[record.status] >= RANK[status]:
            return
        self._store.save(self._record(sub, status, code=code, reason=reason))
