"""The ACH rail: NACHA CCD+ files to an ODFI, read back from its acknowledgements, camt.054
bookings and return files.

Identity: a NACHA file has no message id; banks tell files apart by immediate origin, creation
date and time and file ID modifier. Those are fixed at reservation and stored with the file's
bytes, so a retried file is byte-identical and the bank's duplicate check recognises it. The
individual identification number (15 characters, echoed in acknowledgements and return files)
is derived from the idempotency key and is how every answer is matched back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from rails.bai2 import parse_bai2
from rails.errors import BankProtocolError, Finding, InvalidInstruction
from rails.filebank import RANK, FileBankRail, HighestStatus, utcnow
from rails.iso20022.reports import parse_camt054
from rails.nacha.answers import (
    Acknowledgement,
    AnswerFile,
    parse_acknowledgement,
    parse_answer_file,
)
from rails.nacha.checks import SAME_DAY_LIMIT_CENTS, check_nacha, originator_findings
from rails.nacha.holidays import banking_day_on_or_after, next_banking_day
from rails.nacha.records import (
    MAX_ADDENDA_INFO,
    MAX_AMOUNT_CENTS,
    AchCredit,
    AchFileSpec,
    Originator,
    aba_valid,
    build_ccd_plus,
    derive_file_reference,
    derive_individual_id,
)
from rails.port import (
    Account,
    AccountScheme,
    PaymentInstruction,
    PaymentRecord,
    PaymentStatus,
    Statement,
    StatementEntry,
    validate_instruction_basics,
)
from rails.reconcile import one_view
from rails.store import IdempotencyStore, StoredSubmission
from rails.transport import FileTransport

CONTENT_TYPE = "text/plain"
_MODIFIERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def effective_date(instruction: PaymentInstruction, created_at: datetime) -> date:
    """The effective entry date: a Federal Reserve banking day (:mod:`rails.nacha.holidays`).

    The requested date, or the creation date, moved to the next banking day when it is a
    weekend or a Fed holiday (no entry settles then). An amount over the Same Day ACH limit
    cannot settle on the day the file is made, so a date on or before the creation date becomes
    the next banking day after it.
    """
    created = created_at.date()
    requested = banking_day_on_or_after(instruction.execution_date or created)
    if instruction.amount_minor > SAME_DAY_LIMIT_CENTS and requested <= created:
        return next_banking_day(created)
    return requested


def check_ach_instruction(instruction: PaymentInstruction) -> list[Finding]:
    """Instruction rules for a US ACH credit: USD, ABA routing, account ≤17, reference ≤80."""
    findings: list[Finding] = []
    try:
        validate_instruction_basics(instruction)
    except InvalidInstruction as exc:
        findings.extend(exc.findings)
    if type(instruction.amount_minor) is not int:
        findings.append(Finding("amount_minor", "AM12", "amount must be an int of cents"))
    elif instruction.amount_minor > MAX_AMOUNT_CENTS:
        findings.append(Finding("amount_minor", "AM02", "amount exceeds the 10-digit field"))
    if instruction.currency != "USD" and not any(f.code == "AM03" for f in findings):
        findings.append(Finding("currency", "AM03", f"ACH is in USD, not {instruction.currency}"))
    cred = instruction.creditor
    if cred.scheme is not AccountScheme.US_ABA:
        findings.append(Finding("creditor.scheme", "AC01", "ACH needs a US.ABA account"))
    if not (cred.agent and aba_valid(cred.agent)):
        findings.append(Finding("creditor.agent", "RC01",
                                f"routing number {cred.agent!r} fails the ABA check digit"))
    if not re.fullmatch(r"[0-9A-Za-z\-]{1,17}", cred.identification):
        findings.append(Finding("creditor.identification", "AC01",
                                "account number must be 1 to 17 letters or digits"))
    ref = instruction.reference
    if not ref.strip():
        findings.append(Finding("reference", "FF01", "a reference is required for the addenda"))
    if len(ref) > MAX_ADDENDA_INFO:
        findings.append(Finding("reference", "FF01",
                                f"reference is {len(ref)} characters; the 05 addenda holds "
                                f"{MAX_ADDENDA_INFO}"))
    if any(not " " <= ch <= "~" for ch in ref):
        findings.append(Finding("reference", "FF01", "reference must be printable ASCII"))
    return findings


class AchCreditRail(FileBankRail):
    """:class:`rails.port.Rail` for US ACH credits (NACHA CCD+) through a file-based bank.

    `account` is our account at the ODFI: ``Account(name, AccountScheme.US_ABA,
    identification=<account number>, agent=<ODFI routing number>)``; `originator` is how the
    ODFI knows us in a file (Immediate Origin, Company Identification, names: ``[rails.nacha]``),
    checked by :func:`~rails.nacha.checks.originator_findings`. Store as for the SEPA rail:
    `store` or `store_path`; the channel as for it too: `transport` (the directory drop,
    :class:`~rails.transport_directory.DirectoryTransport`, in production) or `base_url`
    (mock-bank's HTTP door; tests). Files are named ``ach-ccd-<digest>.ach``.
    Submitting, status, credits and reconciliation are
    :class:`~rails.filebank.FileBankRail`'s; what is NACHA's is here.

    A payment is booked only by a statement entry: a camt.054 notification (intraday; mock-bank
    notifies NACHA accounts in ISO 20022) or the BAI2 end-of-day statement, each booking
    counted once. Credits come from camt.054. :meth:`reconcile` only reports: it does not
    save the statuses it matches (:meth:`status` does).
    """

    name = "ach-ccd"
    content_type = CONTENT_TYPE
    file_suffix = "ach"
    parsers: ClassVar[Mapping[str, Callable[[bytes], Any]]] = {
        "nacha.ack": parse_acknowledgement, "camt.054": parse_camt054,
        "nacha.return": parse_answer_file, "bai2.statement": parse_bai2,
    }
    reconcile_saves = False

    def __init__(
        self,
        *,
        account: Account,
        originator: Originator,
        transport: FileTransport | None = None,
        base_url: str | None = None,
        store: IdempotencyStore | None = None,
        store_path: str | Path | None = None,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
        clock: Callable[[], datetime] = utcnow,
        report_account: str | None = None,
        booking_deadline: timedelta | None = None,
    ) -> None:
        findings = originator_findings(originator)
        if findings:
            raise ValueError("the ACH originator settings are not what an ODFI takes: "
                             + "; ".join(f"{f.path}: {f.message}" for f in findings))
        self.originator = originator
        super().__init__(transport=transport, base_url=base_url, account=account, store=store,
                         store_path=store_path, auth=auth, timeout_s=timeout_s,
                         attempts=attempts, backoff_s=backoff_s, clock=clock,
                         booking_deadline=booking_deadline)
        self._report_account = report_account

    def _check_account(self, account: Account) -> None:
        if account.scheme is not AccountScheme.US_ABA or not account.agent:
            raise ValueError("an ACH rail's own account is US.ABA with the ODFI routing number")
        if not aba_valid(account.agent):
            raise ValueError(f"ODFI routing number {account.agent} fails the check digit")

    def _is_our_account(self, reported: str) -> bool:
        """Is a camt.054's Acct/Id ours? The bank names a NACHA account there by its IBAN
        (`report_account`); without one configured, our account number, or an identifier
        ending in it after a letter (an IBAN's bank code: ``NL41MOCK0000000001``), is taken as
        ours — never one with more digits before it (``70000000001`` is another account)."""
        if self._report_account is not None:
            return reported == self._report_account
        ours = self.account.identification
        head = reported[:-len(ours)]
        return reported.endswith(ours) and (not head or not head[-1].isdigit())

    def _spec(self, instruction: PaymentInstruction, created_at: datetime, modifier: str
              ) -> AchFileSpec:
        key = instruction.idempotency_key
        return AchFileSpec(
            odfi_routing=str(self.account.agent), originator=self.originator,
            created_at=created_at, file_id_modifier=modifier,
            effective_date=effective_date(instruction, created_at),
            reference_code=derive_file_reference(key),
            entries=(AchCredit(
                individual_id=derive_individual_id(key), amount_cents=instruction.amount_minor,
                receiver_routing=str(instruction.creditor.agent),
                receiver_account=instruction.creditor.identification,
                receiver_name=instruction.creditor.name, payment_info=instruction.reference),))

    def _file_identity(self) -> tuple[datetime, str]:
        """A (creation minute, modifier) no stored file of ours uses: banks de-duplicate on
        origin + date + time + modifier, so two payments must never share it."""
        used = {
            (s.meta.get("created"), s.meta.get("modifier")) for s in self._store.all()
            if s.meta.get("rail") == self.name
        }
        minute = self._clock().replace(second=0, microsecond=0)
        while True:
            for mod in _MODIFIERS:
                if (minute.isoformat(), mod) not in used:
                    return minute, mod
            minute += timedelta(minutes=1)

    def prepare(self, instruction: PaymentInstruction, created_at: datetime, modifier: str
                ) -> bytes:
        """Check the instruction and the file; InvalidInstruction with every finding."""
        findings = check_ach_instruction(instruction)
        if instruction.debtor.identification != self.account.identification:
            findings.append(Finding("debtor.identification", "AC02",
                                    "this rail pays only from its own account"))
        if findings:
            raise InvalidInstruction("ACH instruction refused", findings)
        try:
            data = build_ccd_plus(self._spec(instruction, created_at, modifier))
        except ValueError as exc:
            raise InvalidInstruction("ACH file could not be built",
                                     [Finding("file", "FF01", str(exc))]) from exc
        bad = [f for f in check_nacha(data) if f.severity == "error"]
        if bad:
            raise InvalidInstruction("NACHA file failed validation; nothing was sent", bad)
        return data

    def _new_meta(self, instruction: PaymentInstruction) -> dict[str, Any]:
        created, modifier = self._file_identity()
        data = self.prepare(instruction, created, modifier)
        return self._meta(data, created=created.isoformat(), modifier=modifier,
                          end_to_end_id=derive_individual_id(instruction.idempotency_key))

    def _bank_payment_id(self, stored: StoredSubmission, status: PaymentStatus) -> str | None:
        """The bank's file id from its answer, on every record but a rejection."""
        if status is PaymentStatus.REJECTED:
            return None
        bank_file_id: str | None = stored.meta.get("bank_file_id")
        return bank_file_id

    def _answered(self, stored: StoredSubmission, body: dict[str, Any]) -> StoredSubmission:
        """Keep the bank's id for the file (its ``msg_id``) the first time an answer gives it."""
        if isinstance(body.get("msg_id"), str) and "bank_file_id" not in stored.meta:
            meta = {**stored.meta, "bank_file_id": body["msg_id"]}
            self._store.update_meta(stored.idempotency_key, meta)
            stored = StoredSubmission(stored.idempotency_key, stored.digest,
                                      stored.instruction, meta, stored.record)
        return stored

    async def _rejected(self, stored: StoredSubmission, payment: dict[str, Any]
                        ) -> PaymentRecord:
        # The acknowledgement carries the R code; fetch it so the record says R01/R02/R03.
        refreshed = await self._refresh(stored, None)
        if refreshed.status is PaymentStatus.REJECTED:
            return refreshed
        return await super()._rejected(stored, payment)

    async def _lookup(self, stored: StoredSubmission) -> PaymentRecord:
        refreshed = await self._refresh(stored, None)
        if refreshed.status is not PaymentStatus.PENDING:
            return refreshed
        found = await self._bank.payment(stored.meta["end_to_end_id"])
        if found is None:
            raise BankProtocolError("the bank calls the file a duplicate but has no payment "
                                    f"{stored.meta['end_to_end_id']}")
        state = found.get("status")
        if state == "rejected":
            return self._record(stored, PaymentStatus.REJECTED, code=found.get("reason"))
        if state == "returned":
            return self._record(stored, PaymentStatus.RETURNED, code=found.get("return_reason"))
        if state == "accepted":
            return self._record(stored, PaymentStatus.BOOKED if found.get("booked_at")
                                else PaymentStatus.ACCEPTED)
        raise BankProtocolError(f"payment lookup gave unknown status {state!r}")

    async def _refresh(self, stored: StoredSubmission, current: PaymentRecord | None
                       ) -> PaymentRecord:
        """Fold acknowledgements, camt.054 bookings and return files into one status."""
        iid = stored.meta["end_to_end_id"]
        fold = HighestStatus(current or self._record(stored, PaymentStatus.PENDING))
        rejected: PaymentRecord | None = None
        for _, ack in await self._fetch("nacha.ack"):
            assert isinstance(ack, Acknowledgement)
            for e in ack.entries:
                if e.individual_id != iid:
                    continue
                if e.accepted:
                    fold.consider(self._record(stored, PaymentStatus.ACCEPTED))
                else:
                    rejected = self._record(stored, PaymentStatus.REJECTED,
                                            code=e.reason_code, reason=e.reason)
        if rejected is not None:
            # Rejected on receipt: the return entry that follows confirms it, moves no money.
            if RANK[fold.best.status] < RANK[PaymentStatus.REJECTED]:
                return rejected
            return fold.best
        corrected: PaymentRecord | None = None
        for _, answers in await self._fetch("nacha.return"):
            assert isinstance(answers, AnswerFile)
            for ret in answers.returns:
                if ret.individual_id != iid:
                    continue
                if ret.amount_cents != int(stored.instruction["amount_minor"]):
                    # our id on another amount: not our payment's return (a return is of the
                    # whole entry); a broken answer, never a status
                    raise BankProtocolError(
                        f"return file: a return of {ret.amount_cents} cents under {iid}, "
                        f"whose payment is {stored.instruction['amount_minor']} cents")
                fold.consider(self._record(stored, PaymentStatus.RETURNED,
                                           code=ret.reason_code,
                                           reason=f"returned by the RDFI: {ret.reason}"))
            for noc in answers.corrections:
                if noc.individual_id == iid:
                    corrected = self._record(stored, PaymentStatus.BOOKED,
                                             code=noc.change_code, reason=noc.reason)
        # after the return file: its R code, not the statement's, says why money came back
        self._settle(stored, fold, await self._statement_entries())
        if corrected is not None and fold.best.status is PaymentStatus.BOOKED:
            # Posted, with a correction for later entries: still booked, carrying the C code.
            return corrected
        return fold.best

    async def _statement_entries(self) -> list[StatementEntry]:
        """camt.054 notifications and BAI2 statements, each booking once (rails.reconcile)."""
        stated = [e.to_port() for _, reports in await self._fetch("bai2.statement")
                  for rep in reports if rep.account in (self.account.identification,
                                                        self._report_account)
                  or self._ours(rep) for e in rep.entries]
        return one_view(await super()._statement_entries(), stated)

    async def _default_statement(self) -> Statement:
        """The camt.054 bookings for our account, standing in for a statement (mock-bank sends
        NACHA accounts BAI2 statements, which this rail does not read)."""
        entries: list[StatementEntry] = []
        for _, reports in await self._fetch("camt.054"):
            for rep in reports:
                if self._ours(rep):
                    entries.extend(e.to_port() for e in rep.entries)
        return Statement(account=self.account.identification, currency="USD",
                         entries=tuple(entries))
