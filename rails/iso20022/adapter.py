"""The SEPA credit-transfer rail: pain.001.001.09 out over a bank's file channel.

The order in :meth:`SepaCreditTransferRail.submit` is what makes a retry safe:

1. the instruction is checked, the file built and checked (XSD + SEPA profile); a file with any
   error finding is never sent and never reserved;
2. the key is reserved in the store *with the file's bytes*, before the bank hears of it, so
   every later attempt for that key sends byte-identical content (same MsgId, CreDtTm,
   EndToEndId);
3. the file is sent (:class:`~rails.transport.FileTransport`); over an HTTP door a timeout or
   5xx re-posts the same bytes, and a ``DUPL`` answer means the bank already has this file, so
   the payment is looked up by its EndToEndId instead of being treated as a failure; over a
   folder channel the payment is pending until the bank's pain.002 arrives;
4. the answer is saved.

The payment is ``booked`` only when our account's camt.054 or camt.053 shows the debit with its
EndToEndId, amount and currency (:mod:`rails.reconcile`); a pain.002 ``ACSC`` is the bank's word,
kept as ``accepted`` until then.

A crash anywhere leaves either nothing (before 2) or a reserved key whose next submit re-sends
the identical file, which the bank's duplicate check turns into a lookup, not a second payment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from rails.errors import BankProtocolError, Finding, InvalidInstruction
from rails.filebank import FileBankRail, HighestStatus, utcnow
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
    Return,
    StatusReport,
    parse_camt053,
    parse_camt054,
    parse_pacs004,
    parse_pain002,
)
from rails.port import (
    Account,
    AccountScheme,
    PaymentInstruction,
    PaymentRecord,
    PaymentStatus,
    Statement,
    validate_instruction_basics,
)
from rails.store import IdempotencyStore, StoredSubmission
from rails.transport import FileTransport

CONTENT_TYPE = "application/xml"

# ACSC/ACCC ("settlement completed") is the bank's word; the statement settles the payment.
_ACCEPTED_CODES = frozenset({"ACCP", "ACSP", "ACTC", "ACWC", "ACFC", "PATC", "ACSC", "ACCC"})


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


class SepaCreditTransferRail(FileBankRail):
    """:class:`rails.port.Rail` for SEPA credit transfers through a file-based bank.

    `account` is our own account at that bank (IBAN, BIC optional): every instruction must be
    debited from it, and its camt.054/camt.053 are what :meth:`incoming_credits` and
    :meth:`reconcile` read. Give either a `store` (the caller closes it) or a `store_path`
    (the adapter opens a :class:`~rails.store.SqliteIdempotencyStore` there and closes it in
    :meth:`aclose`). Submitting, status, credits and reconciliation are
    :class:`~rails.filebank.FileBankRail`'s; what is SEPA's is here.
    """

    name = "sepa-ct"
    content_type = CONTENT_TYPE
    parsers: ClassVar[Mapping[str, Callable[[bytes], Any]]] = {
        "pain.002": parse_pain002, "camt.054": parse_camt054,
        "camt.053": parse_camt053, "pacs.004": parse_pacs004,
    }
    statement_family = "camt.053"

    def __init__(
        self,
        *,
        account: Account,
        transport: FileTransport | None = None,
        base_url: str | None = None,
        store: IdempotencyStore | None = None,
        store_path: str | Path | None = None,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
        clock: Callable[[], datetime] = utcnow,
        initiating_party: str | None = None,
        debtor_address: sepa.PostalAddress | None = None,
        booking_deadline: timedelta | None = None,
    ) -> None:
        super().__init__(transport=transport, base_url=base_url, account=account, store=store,
                         store_path=store_path, auth=auth, timeout_s=timeout_s,
                         attempts=attempts, backoff_s=backoff_s, clock=clock,
                         booking_deadline=booking_deadline)
        self._initiating_party = initiating_party
        self._debtor_address = debtor_address

    def _check_account(self, account: Account) -> None:
        if account.scheme is not AccountScheme.IBAN:
            raise ValueError("a SEPA rail's own account is an IBAN")

    def _is_our_account(self, reported: str) -> bool:
        return reported.replace(" ", "") == self.account.identification.replace(" ", "")

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
            initiating_party=self._initiating_party, debtor_address=self._debtor_address)
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

    def _new_meta(self, instruction: PaymentInstruction) -> dict[str, Any]:
        data = self.prepare(instruction)
        key = instruction.idempotency_key
        return self._meta(data, msg_id=sepa.derive_id(key, "M"),
                          pmt_inf_id=sepa.derive_id(key, "P"),
                          end_to_end_id=sepa.derive_id(key, "E"))

    def _bank_payment_id(self, stored: StoredSubmission, status: PaymentStatus) -> str | None:
        """The MsgId, once the bank has taken the payment (not while pending, not rejected)."""
        if status in (PaymentStatus.PENDING, PaymentStatus.REJECTED):
            return None
        return str(stored.meta["msg_id"])

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
            return self._record(stored, PaymentStatus.RETURNED, code=found.get("return_reason"))
        if state == "accepted":
            # booked or not, the statement entries decide
            return await self._refresh(stored, self._record(stored, PaymentStatus.ACCEPTED))
        raise BankProtocolError(f"payment lookup gave unknown status {state!r}")

    # -- reading what the bank sent --------------------------------------------------------

    async def _refresh(self, stored: StoredSubmission, current: PaymentRecord | None
                       ) -> PaymentRecord:
        """Fold every pain.002, camt.054 and pacs.004 about our payment into one status."""
        msg_id = stored.meta["msg_id"]
        e2e = stored.meta["end_to_end_id"]
        fold = HighestStatus(current or self._record(stored, PaymentStatus.PENDING))
        for _, report in await self._fetch("pain.002"):
            assert isinstance(report, StatusReport)
            if report.original_msg_id != msg_id:
                continue
            if report.group_status == "RJCT" and report.group_reason != "DUPL":
                fold.consider(self._record(stored, PaymentStatus.REJECTED,
                                      code=report.group_reason,
                                      reason=report.group_reason_text))
            for tx in report.transactions:
                if tx.end_to_end_id != e2e:
                    continue
                if tx.status == "RJCT":
                    fold.consider(self._record(stored, PaymentStatus.REJECTED,
                                          code=tx.reason_code, reason=tx.reason_text))
                elif tx.status in _ACCEPTED_CODES:
                    fold.consider(self._record(stored, PaymentStatus.ACCEPTED))
        self._settle(stored, fold, await self._statement_entries())
        for _, returns in await self._fetch("pacs.004"):
            for ret in returns:
                assert isinstance(ret, Return)
                if ret.end_to_end_id != e2e or ret.original_msg_id not in (None, msg_id):
                    continue
                amount = int(stored.instruction["amount_minor"])
                currency = str(stored.instruction["currency"])
                if (ret.amount_minor, ret.currency) != (amount, currency):
                    # our ids on another amount: not our payment's return; a broken answer
                    raise BankProtocolError(
                        f"pacs.004 returns {ret.amount_minor} {ret.currency} under {e2e}, "
                        f"whose payment is {amount} {currency}")
                fold.consider(self._record(stored, PaymentStatus.RETURNED,
                                           code=ret.reason_code,
                                           reason="returned by the creditor's bank"))
        return fold.best

    # -- reconciliation --------------------------------------------------------------------

    async def latest_statement(self) -> Statement | None:
        """Our account's newest camt.053 statement, or None when the bank has sent none."""
        newest: AccountReport | None = None
        for _, reports in await self._fetch("camt.053"):
            for rep in reports:
                if self._ours(rep):
                    newest = rep
        return newest.to_statement() if newest is not None else None
