"""What an ODFI sends back about our files: acknowledgements, returns and notifications of change.

Each reader takes the bank's bytes and gives typed values, or raises
:class:`~rails.errors.BankProtocolError`: an answer that cannot be read is never taken as no
answer. The adapter folds them into a payment's record (:mod:`rails.nacha.adapter`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rails.errors import BankProtocolError
from rails.nacha.records import LAYOUTS, NOC_ADDENDA, RECORD_LEN, RETURN_ADDENDA, Rec


@dataclass(frozen=True, slots=True)
class AckEntry:
    trace: str
    individual_id: str
    accepted: bool
    reason_code: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    ack_id: str
    file_id: str
    status: str
    status_reason: str | None
    entries: tuple[AckEntry, ...]


def parse_acknowledgement(data: bytes) -> Acknowledgement:
    """mock-bank's plain-text file acknowledgement: one fact to a line (NACHA defines none)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BankProtocolError("acknowledgement is not ASCII") from exc
    ack_id = file_id = status = ""
    status_reason: str | None = None
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "ACKNOWLEDGEMENT" and len(parts) >= 2:
            ack_id = parts[1]
        elif parts[0] == "FILE" and len(parts) >= 2:
            file_id = parts[1]
        elif parts[0] == "STATUS" and len(parts) >= 2:
            status = parts[1]
            status_reason = parts[2] if len(parts) > 2 else None
        elif parts[0] == "ENTRY":
            if len(parts) < 5 or parts[4] not in ("ACCEPTED", "REJECTED"):
                raise BankProtocolError(f"acknowledgement entry line unreadable: {line!r}")
            accepted = parts[4] == "ACCEPTED"
            entries.append(AckEntry(
                trace=parts[1], individual_id=parts[2], accepted=accepted,
                reason_code=None if accepted else (parts[5] if len(parts) > 5 else None),
                reason=None if accepted else (" ".join(parts[6:]) or None)))
    if not ack_id or not status:
        raise BankProtocolError("acknowledgement has no ACKNOWLEDGEMENT or STATUS line")
    return Acknowledgement(ack_id, file_id, status, status_reason, tuple(entries))


RETURN_REASONS: dict[str, str] = {
    "R01": "insufficient funds", "R02": "account closed",
    "R03": "no account or unable to locate account", "R04": "invalid account number structure",
    "R05": "unauthorized debit to consumer account using corporate SEC code",
    "R06": "returned per ODFI's request", "R07": "authorization revoked by customer",
    "R08": "payment stopped", "R09": "uncollected funds",
    "R10": "customer advises originator is not known or not authorized",
    "R11": "customer advises entry not in accordance with the terms of the authorization",
    "R12": "account sold to another DFI", "R13": "invalid ACH routing number",
    "R14": "representative payee deceased or unable to continue in that capacity",
    "R15": "beneficiary or account holder deceased",
    "R16": "account frozen or entry returned per OFAC instruction",
    "R17": "file record edit criteria, or entry initiated under questionable circumstances",
    "R18": "improper effective entry date", "R19": "amount field error",
    "R20": "non-transaction account", "R21": "invalid company identification",
    "R22": "invalid individual ID number", "R23": "credit entry refused by receiver",
    "R24": "duplicate entry", "R25": "addenda error", "R26": "mandatory field error",
    "R27": "trace number error", "R28": "routing number check digit error",
    "R29": "corporate customer advises not authorized",
    "R30": "RDFI not participant in check truncation program",
    "R31": "permissible return entry (CCD and CTX only)", "R32": "RDFI non-settlement",
    "R33": "return of XCK entry", "R34": "limited participation DFI",
    "R35": "return of improper debit entry", "R36": "return of improper credit entry",
    "R37": "source document presented for payment",
    "R38": "stop payment on source document",
    "R39": "improper source document, or source document presented for payment",
    "R40": "return of ENR entry by federal government agency",
    "R41": "invalid transaction code (ENR)", "R42": "routing number or check digit error (ENR)",
    "R43": "invalid DFI account number (ENR)",
    "R44": "invalid individual ID number or identification number (ENR)",
    "R45": "invalid individual name or company name (ENR)",
    "R46": "invalid representative payee indicator (ENR)", "R47": "duplicate enrollment (ENR)",
    "R50": "state law affecting RCK acceptance",
    "R51": "item related to RCK entry is ineligible or RCK entry is improper",
    "R52": "stop payment on item related to RCK entry",
    "R53": "item and RCK entry presented for payment", "R61": "misrouted return",
    "R62": "return of erroneous or reversing debit", "R67": "duplicate return",
    "R68": "untimely return", "R69": "field error(s)",
    "R70": "permissible return entry not accepted or return not requested by ODFI",
    "R71": "misrouted dishonored return", "R72": "untimely dishonored return",
    "R73": "timely original return", "R74": "corrected return",
    "R75": "return not a duplicate", "R76": "no errors found",
    "R77": "non-acceptance of R62 dishonored return", "R80": "IAT entry coding error",
    "R81": "non-participant in IAT program",
    "R82": "invalid foreign receiving DFI identification",
    "R83": "foreign receiving DFI unable to settle", "R84": "entry not processed by gateway",
    "R85": "incorrectly coded outbound international payment",
}
"""Return reason codes R01-R85 (addenda type 99), as the Nacha Operating Rules' Appendix Four
names them; numbers the rules leave unassigned (R48, R49, R54-R60, R63-R66, R78, R79) are
absent, and a return carrying one is read with "unknown return reason"."""

CHANGE_REASONS: dict[str, str] = {
    "C01": "incorrect DFI account number", "C02": "incorrect routing number",
    "C03": "incorrect routing number and incorrect DFI account number",
    "C04": "incorrect individual name or receiving company name",
    "C05": "incorrect transaction code",
    "C06": "incorrect DFI account number and incorrect transaction code",
    "C07": "incorrect routing number, DFI account number and transaction code",
    "C08": "incorrect receiving DFI identification (IAT only)",
    "C09": "incorrect individual identification number", "C10": "incorrect company name",
    "C11": "incorrect company identification",
    "C12": "incorrect company name and company identification", "C13": "addenda format error",
}
"""Notification of change codes C01-C13 (COR entries, addenda type 98)."""


@dataclass(frozen=True, slots=True)
class AchReturn:
    """A return entry: our payment came back (the money did not stay with the receiver)."""

    individual_id: str
    amount_cents: int
    reason_code: str
    original_trace: str
    transaction_code: str

    @property
    def reason(self) -> str:
        return RETURN_REASONS.get(self.reason_code, "unknown return reason")


@dataclass(frozen=True, slots=True)
class AchCorrection:
    """A notification of change: the payment was posted, and the RDFI asks that later entries
    use `corrected_data` (a corrected account, routing number, transaction code, name…)."""

    individual_id: str
    change_code: str
    corrected_data: str
    original_trace: str

    @property
    def reason(self) -> str:
        text = CHANGE_REASONS.get(self.change_code, "unknown change code")
        return f"notification of change: {text}; corrected data {self.corrected_data!r}"


@dataclass(frozen=True, slots=True)
class AnswerFile:
    """What one return file from the ODFI says: returns (99) and notifications of change (98)."""

    returns: tuple[AchReturn, ...]
    corrections: tuple[AchCorrection, ...]


def parse_answer_file(data: bytes) -> AnswerFile:
    """A NACHA return file: each return entry (21, 26, 31, …) with its 99 addenda's R code, and
    each COR entry with its 98 addenda's C code and corrected data. Anything unreadable is a
    :class:`BankProtocolError` (an answer we cannot read is never taken as "no answer")."""
    returns: list[AchReturn] = []
    corrections: list[AchCorrection] = []
    pending: Rec | None = None
    for n, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("ascii").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise BankProtocolError(f"return file line {n} is not ASCII") from exc
        if not line.strip() or line == "9" * RECORD_LEN:
            continue
        if len(line) != RECORD_LEN:
            raise BankProtocolError(f"return file line {n} is {len(line)} characters, not 94")
        if line[0] == "6":
            pending = Rec(n, line, LAYOUTS["6"][1])
            continue
        if line[0] != "7" or line[1:3] not in ("98", "99"):
            continue
        if pending is None:
            raise BankProtocolError(f"return file line {n}: addenda {line[1:3]} without an "
                                    "entry")
        iid = pending.get("individual identification number").strip()
        if line[1:3] == "99":
            add = Rec(n, line, RETURN_ADDENDA)
            amount = pending.num("amount")
            if amount is None:
                raise BankProtocolError(f"return file line {pending.number}: amount unreadable")
            returns.append(AchReturn(
                individual_id=iid, amount_cents=amount,
                reason_code=add.get("return reason code").strip(),
                original_trace=add.get("original entry trace number"),
                transaction_code=pending.get("transaction code")))
        else:
            add = Rec(n, line, NOC_ADDENDA)
            corrections.append(AchCorrection(
                individual_id=iid, change_code=add.get("change code").strip(),
                corrected_data=add.get("corrected data").strip(),
                original_trace=add.get("original entry trace number")))
        pending = None
    return AnswerFile(tuple(returns), tuple(corrections))


def parse_return_file(data: bytes) -> list[AchReturn]:
    """The return entries of a return file (see :func:`parse_answer_file`)."""
    return list(parse_answer_file(data).returns)
