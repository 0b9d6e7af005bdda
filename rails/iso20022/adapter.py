"""The SEPA credit-transfer rail: pain.001.001.09 out over a file-based bank's HTTP door.

The order in :meth:`SepaCreditTransferRail.submit` is what makes a retry safe:

1. the instruction is checked, the file built and checked (XSD + SEPA profile); a file with any
   error finding is never sent and never reserved;
2. the key is reserved in the store *with the file's bytes*, before the bank hears of it, so
   every later attempt for that key sends byte-identical content (same MsgId, CreDtTm,
   EndToEndId);
3. the file is posted; a timeout or 5xx re-posts the same bytes; a ``DUPL`` answer means the
   bank already has this file, and the payment is looked up by its EndToEndId instead of being
   treated as a failure;
4. the answer is saved.

A crash anywhere leaves either nothing (before 2) or a reserved key whose next submit re-sends
the identical file, which the bank's duplicate check turns into a lookup, not a second payment.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rails.errors import (
    BankProtocolError,
    Finding,
    InvalidInstruction,
    UnknownPayment,
)
from rails.iso20022 import sepa
from rails.iso20022.pain001 import (
    CreditTransfer,
    CreditTransferFile,
    build_pain001,
    check_pain001,
    errors,
)
from rails.iso20022.reports import (
    AccountReport,
    Entry,
    Return,
    StatusReport,
    parse_camt053,
    parse_camt054,
    parse_pacs004,
    parse_pain002,
)
from rails.iso20022.transport import BankFileClient, BankMessage, PostAnswer
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

CONTENT_TYPE = "application/xml"

# Status ranks: a refresh never moves a payment backwards (a late ACCP after a booking).
_RANK = {
    PaymentStatus.PENDING: 0, PaymentStatus.ACCEPTED: 1, PaymentStatus.BOOKED: 2,
    PaymentStatus.REJECTED: 3, PaymentStatus.RETURNED: 4,
}
_ACCEPTED_CODES = frozenset({"ACCP", "ACSP", "ACTC", "ACWC", "ACFC", "PATC"})
_BOOKED_CODES = frozenset({"ACSC", "ACCC"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_instruction(instruction: PaymentInstruction) -> list[Finding]:
    """Instruction-level rules the file cannot show (types, currency, debtor scheme)."""
    findings: list[Finding] = []
    try:
        validate_instruction_basics(instruction)
    except InvalidInstruction as exc:
        findings.extend(exc.findings)
    if type(instruction.amount_minor) is not int:
        findings.append(Finding("amount_minor", "AM12",
                                f"amount must be an int of minor units, not "
                                f"{type(instruction.amount_minor).__name__}"))
    if instruction.currency != "EUR" and not any(f.code == "AM03" for f in findings):
        findings.append(Finding("currency", "AM03",
                                f"SEPA credit transfers are in EUR, not {instruction.currency}"))
    for side in ("debtor", "creditor"):
        account: Account = getattr(instruction, side)
        if account.scheme is not AccountScheme.IBAN:
            findings.append(Finding(f"{side}.scheme", "AC01",
                                    f"SEPA needs an IBAN, not {account.scheme.value}"))
    if not instruction.reference.strip():
        findings.append(Finding("reference", "FF01", "a remittance reference is required"))
    return findings


class SepaCreditTransferRail:
    """:class:`rails.port.Rail` for SEPA credit transfers through a file-based bank.

    `account` is our own account at that bank (IBAN, BIC optional): every instruction must be
    debited from it, and its camt.054/camt.053 are what :meth:`incoming_credits` and
    :meth:`reconcile` read. Give either a `store` (the caller closes it) or a `store_path`
    (the adapter opens a :class:`~rails.store.SqliteIdempotencyStore` there and closes it in
    :meth:`aclose`).
    """

    name = "sepa-ct"

    def __init__(
        self,
        *,
        base_url: str,
        account: Account,
        store: IdempotencyStore | None = None,
        store_path: str | Path | None = None,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
        clock: Callable[[], datetime] = _utcnow,
        initiating_party: str | None = None,
    ) -> None:
        if (store is None) == (store_path is None):
            raise ValueError("give exactly one of store and store_path")
        if account.scheme is not AccountScheme.IBAN:
            raise ValueError("a SEPA rail's own account is an IBAN")
        self.account = account
        self._owns_store = store is None
        self._store: IdempotencyStore = (
            store if store is not None else SqliteIdempotencyStore(str(store_path)))
        self._bank = BankFileClient(base_url, auth=auth, timeout_s=timeout_s,
                                    attempts=attempts, backoff_s=backoff_s)
        self._clock = clock
        self._initiating_party = initiating_party
        self._parsed: dict[int, Any] = {}

    async def aclose(self) -> None:
        await self._bank.aclose()
        if self._owns_store:
            self._store.close()

    # -- building --------------------------------------------------------------------------

    def build_file(self, instruction: PaymentInstruction, created_at: datetime) -> bytes:
        """The pain.001 for one instruction, ids derived from its idempotency key."""
        key = instruction.idempotency_key
        doc = CreditTransferFile(
            msg_id=sepa.derive_id(key, "M"),
            pmt_inf_id=sepa.derive_id(key, "P"),
            created_at=created_at,
            execution_date=instruction.execution_date or created_at.date(),
            debtor=instruction.debtor,
            transfers=(CreditTransfer(
                end_to_end_id=sepa.derive_id(key, "E"), amount_minor=instruction.amount_minor,
                currency=instruction.currency, creditor=instruction.creditor,
                reference=instruction.reference),),
            initiating_party=self._initiating_party)
        return build_pain001(doc)

    def prepare(self, instruction: PaymentInstruction) -> bytes:
        """Check and build; raise InvalidInstruction with every finding, or return the bytes."""
        findings = check_instruction(instruction)
        if instruction.debtor.identification != self.account.identification:
            findings.append(Finding("debtor.identification", "AC02",
                                    "this rail pays only from its own account "
                                    f"{self.account.identification}"))
        if findings:
            # Structural problems (wrong type, wrong currency) would make the file meaningless;
            # still report what the file checker says when it can be built at all.
            try:
                data = self.build_file(instruction, self._clock())
                findings.extend(errors(check_pain001(data)))
            except (ValueError, TypeError):
                pass
            raise InvalidInstruction("payment instruction refused", findings)
        data = self.build_file(instruction, self._clock())
        bad = errors(check_pain001(data))
        if bad:
            raise InvalidInstruction("pain.001 failed validation; nothing was sent", bad)
        return data

    # -- submit ----------------------------------------------------------------------------

    async def submit(self, instruction: PaymentInstruction) -> PaymentRecord:
        stored = self._store.get(instruction.idempotency_key)
        if stored is None:
            data = self.prepare(instruction)
            key = instruction.idempotency_key
            meta = {
                "rail": self.name, "msg_id": sepa.derive_id(key, "M"),
                "pmt_inf_id": sepa.derive_id(key, "P"),
                "end_to_end_id": sepa.derive_id(key, "E"),
                "file_b64": base64.b64encode(data).decode("ascii"),
            }
        else:
            meta = stored.meta
        # reserve() is also the conflict check: a different instruction under a used key raises.
        stored = self._store.reserve(instruction, meta)
        if stored.record is not None:
            return stored.record
        return await self._send(stored)

    async def _send(self, stored: StoredSubmission) -> PaymentRecord:
        data = base64.b64decode(stored.meta["file_b64"])
        answer = await self._bank.post_file(data, CONTENT_TYPE)
        record = await self._record_from_answer(stored, answer)
        self._store.save(record)
        return record

    def _record(self, stored: StoredSubmission, status: PaymentStatus, *,
                bank_id: str | None = None, code: str | None = None,
                reason: str | None = None) -> PaymentRecord:
        return PaymentRecord(
            idempotency_key=stored.idempotency_key,
            end_to_end_id=stored.meta["end_to_end_id"], status=status,
            amount_minor=int(stored.instruction["amount_minor"]),
            currency=str(stored.instruction["currency"]), bank_payment_id=bank_id,
            reason_code=code, reason=reason)

    async def _record_from_answer(self, stored: StoredSubmission, answer: PostAnswer
                                  ) -> PaymentRecord:
        body = answer.body
        e2e = stored.meta["end_to_end_id"]
        if body.get("reason") == "DUPL":
            # The bank has this MsgId already: an earlier attempt got through and its answer
            # was lost. Find what became of that payment rather than report a failure.
            return await self._lookup(stored)
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
            return self._record(stored, PaymentStatus.REJECTED, code=p.get("reason"),
                                reason=p.get("reason_text"))
        if p.get("outcome") != "accepted":
            raise BankProtocolError(f"unknown outcome {p.get('outcome')!r} for {e2e}")
        status = PaymentStatus.BOOKED if p.get("booked") is True else PaymentStatus.ACCEPTED
        return self._record(stored, status, bank_id=stored.meta["msg_id"])

    async def _lookup(self, stored: StoredSubmission) -> PaymentRecord:
        """What the bank holds for our EndToEndId (after a duplicate answer)."""
        found = await self._bank.payment(stored.meta["end_to_end_id"])
        if found is None or found.get("msg_id") != stored.meta["msg_id"]:
            # Known MsgId but no payment: the original file was refused as a whole; its
            # pain.002 says why.
            refreshed = await self._refresh(stored, None)
            if refreshed.status is PaymentStatus.PENDING:
                raise BankProtocolError(
                    "the bank calls the file a duplicate but has no payment "
                    f"{stored.meta['end_to_end_id']} and no status report for it")
            return refreshed
        state = found.get("status")
        if state == "rejected":
            return self._record(stored, PaymentStatus.REJECTED, code=found.get("reason"),
                                reason=found.get("reason_text"))
        if state == "returned":
            return self._record(stored, PaymentStatus.RETURNED,
                                code=found.get("return_reason"), bank_id=stored.meta["msg_id"])
        if state == "accepted":
            booked = found.get("booked_at") is not None
            return self._record(stored, PaymentStatus.BOOKED if booked
                                else PaymentStatus.ACCEPTED, bank_id=stored.meta["msg_id"])
        raise BankProtocolError(f"payment lookup gave unknown status {state!r}")

    # -- reading what the bank sent --------------------------------------------------------

    async def _fetch(self, family: str, after_id: int = 0) -> list[tuple[BankMessage, Any]]:
        """Released messages of one family, parsed once per message id."""
        parser: Callable[[bytes], Any] = {
            "pain.002": parse_pain002, "camt.054": parse_camt054,
            "camt.053": parse_camt053, "pacs.004": parse_pacs004,
        }[family]
        out = []
        for msg in await self._bank.messages(family, after_id):
            if msg.id not in self._parsed:
                self._parsed[msg.id] = parser(msg.body)
            out.append((msg, self._parsed[msg.id]))
        return out

    async def _refresh(self, stored: StoredSubmission, current: PaymentRecord | None
                       ) -> PaymentRecord:
        """Fold every pain.002, camt.054 and pacs.004 about our payment into one status."""
        msg_id = stored.meta["msg_id"]
        e2e = stored.meta["end_to_end_id"]
        best = current or self._record(stored, PaymentStatus.PENDING)

        def consider(candidate: PaymentRecord) -> None:
            nonlocal best
            if _RANK[candidate.status] > _RANK[best.status]:
                best = candidate

        for _, report in await self._fetch("pain.002"):
            assert isinstance(report, StatusReport)
            if report.original_msg_id != msg_id:
                continue
            if report.group_status == "RJCT" and report.group_reason != "DUPL":
                consider(self._record(stored, PaymentStatus.REJECTED,
                                      code=report.group_reason,
                                      reason=report.group_reason_text))
            for tx in report.transactions:
                if tx.end_to_end_id != e2e:
                    continue
                if tx.status == "RJCT":
                    consider(self._record(stored, PaymentStatus.REJECTED,
                                          code=tx.reason_code, reason=tx.reason_text))
                elif tx.status in _BOOKED_CODES:
                    consider(self._record(stored, PaymentStatus.BOOKED, bank_id=msg_id))
                elif tx.status in _ACCEPTED_CODES:
                    consider(self._record(stored, PaymentStatus.ACCEPTED, bank_id=msg_id))
        for _, reports in await self._fetch("camt.054"):
            for rep in reports:
                for entry in rep.entries:
                    if entry.end_to_end_id != e2e or not entry.booked:
                        continue
                    if entry.direction is EntryDirection.DEBIT and entry.return_reason is None:
                        consider(self._record(stored, PaymentStatus.BOOKED, bank_id=msg_id))
                    elif entry.direction is EntryDirection.CREDIT and entry.return_reason:
                        consider(self._record(stored, PaymentStatus.RETURNED, bank_id=msg_id,
                                              code=entry.return_reason))
        for _, returns in await self._fetch("pacs.004"):
            for ret in returns:
                assert isinstance(ret, Return)
                if ret.end_to_end_id == e2e and ret.original_msg_id in (None, msg_id):
                    consider(self._record(stored, PaymentStatus.RETURNED, bank_id=msg_id,
                                          code=ret.reason_code,
                                          reason="returned by the creditor's bank"))
        return best

    async def status(self, idempotency_key: str) -> PaymentRecord:
        stored = self._store.get(idempotency_key)
        if stored is None:
            raise UnknownPayment(f"no payment under key {idempotency_key!r}")
        record = await self._refresh(stored, stored.record)
        if record != stored.record and record.status is not PaymentStatus.PENDING:
            self._store.save(record)
        return record

    # -- incoming credits ------------------------------------------------------------------

    def _ours(self, report: AccountReport) -> bool:
        return report.account.replace(" ", "") == self.account.identification.replace(" ", "")

    @staticmethod
    def _credit(entry: Entry) -> IncomingCredit | None:
        if (entry.direction is not EntryDirection.CREDIT or not entry.booked
                or entry.return_reason is not None or entry.booking_date is None):
            return None
        return IncomingCredit(
            entry_id=entry.entry_id, amount_minor=entry.amount_minor, currency=entry.currency,
            debtor_name=entry.counterparty_name, debtor_account=entry.counterparty_account,
            reference=entry.reference, booking_date=entry.booking_date,
            end_to_end_id=entry.end_to_end_id)

    async def incoming_credits(self, cursor: str | None = None) -> CreditPage:
        """Booked credits to our account (returns of our own payments excluded: those are a
        payment's status, not money a peer sent), from camt.054 notifications and from
        camt.053 statements for any credit no notification carried. The cursor is the id of
        the last bank message read."""
        after = _parse_cursor(cursor)
        notified: set[str] = set()
        last = after
        credits: list[IncomingCredit] = []
        for msg, reports in await self._fetch("camt.054"):
            for rep in reports:
                if not self._ours(rep):
                    continue
                for entry in rep.entries:
                    notified.add(entry.entry_id)
                    credit = self._credit(entry)
                    if credit is not None and msg.id > after:
                        credits.append(credit)
            last = max(last, msg.id)
        for msg, reports in await self._fetch("camt.053", after):
            for rep in reports:
                if not self._ours(rep):
                    continue
                for entry in rep.entries:
                    credit = self._credit(entry)
                    if credit is not None and entry.entry_id not in notified:
                        notified.add(entry.entry_id)
                        credits.append(credit)
            last = max(last, msg.id)
        return CreditPage(tuple(credits), f"msg:{last}")

    # -- reconciliation --------------------------------------------------------------------

    async def latest_statement(self) -> Statement | None:
        """Our account's newest camt.053 statement, or None when the bank has sent none."""
        newest: AccountReport | None = None
        for _, reports in await self._fetch("camt.053"):
            for rep in reports:
                if self._ours(rep):
                    newest = rep
        return newest.to_statement() if newest is not None else None

    async def reconcile(self, statement: Statement | None = None) -> Reconciliation:
        """Match a statement's entries to our submissions by EndToEndId.

        `outstanding` lists submissions that are neither on this statement nor already known
        to be booked, returned or rejected: the ones still to look for.
        """
        if statement is None:
            statement = await self.latest_statement()
            if statement is None:
                raise BankProtocolError("the bank has sent no camt.053 for "
                                        f"{self.account.identification} yet")
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
        current = self._store.get(sub.idempotency_key)
        record = current.record if current else None
        if record is not None and _RANK[record.status] >= _RANK[status]:
            return
        self._store.save(self._record(sub, status, bank_id=sub.meta["msg_id"], code=code))


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    prefix, _, number = cursor.partition(":")
    if prefix != "msg" or not number.isdigit():
        raise InvalidInstruction("cursor was not issued by this rail",
                                 [Finding("cursor", "FF01", f"unknown cursor {cursor!r}")])
    return int(number)

