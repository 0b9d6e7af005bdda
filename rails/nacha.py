"""US ACH as NACHA CCD+ files: one credit entry (code 22), one 05 addenda carrying the reference.

Like the SEPA rail, writing and checking are separate: :func:`build_ccd_plus` renders records from
integer cents and never shortens a value to make it fit (a reference that does not fit the addenda
is refused, because a cut reference stops matching); :func:`check_nacha` then reads the bytes the
way an ODFI does and reports each problem as ``line N col M``. The adapter submits only files
with no error finding, and ``meterline rails validate`` runs the same checker.

Identity: a NACHA file has no message id; banks tell files apart by immediate origin, creation
date and time and file ID modifier. Those are fixed at reservation and stored with the file's
bytes, so a retried file is byte-identical and the bank's duplicate check recognises it. The
individual identification number (15 characters, echoed in acknowledgements and return files)
is derived from the idempotency key and is how every answer is matched back.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from rails.bai2 import parse_bai2
from rails.errors import BankProtocolError, Finding, InvalidInstruction
from rails.filebank import RANK, FileBankRail, HighestStatus, utcnow
from rails.iso20022.reports import parse_camt054
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

RECORD_LEN = 94
BLOCKING_FACTOR = 10
MAX_AMOUNT_CENTS = 99_999_999_99
"""The entry amount field is 10 digits of cents."""
MAX_ADDENDA_INFO = 80
CONTENT_TYPE = "text/plain"
CREDIT_CODES = frozenset({"22", "32", "42", "52"})
DEBIT_CODES = frozenset({"27", "37", "47"})
_ID_DOMAIN = b"meterline/rails/nacha/v1\x00"
_MODIFIERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def aba_check_digit(routing8: str) -> int:
    """The ABA check digit: weights 3-7-1 over the first 8 digits, to a multiple of 10."""
    weights = (3, 7, 1, 3, 7, 1, 3, 7)
    total = sum(int(d) * w for d, w in zip(routing8, weights, strict=True))
    return (10 - total % 10) % 10


def aba_valid(routing: str) -> bool:
    return bool(re.fullmatch(r"\d{9}", routing)) and aba_check_digit(routing[:8]) == int(
        routing[8])


def derive_individual_id(idempotency_key: str) -> str:
    """15 characters from the key: ``ML`` + 13 base32 (65 bits), printable and upper case."""
    digest = hashlib.sha256(_ID_DOMAIN + idempotency_key.encode()).digest()
    return "ML" + base64.b32encode(digest).decode()[:13]


def derive_file_reference(idempotency_key: str) -> str:
    """8 characters for the file header's reference code: the file's own deterministic id."""
    digest = hashlib.sha256(_ID_DOMAIN + b"file\x00" + idempotency_key.encode()).digest()
    return base64.b32encode(digest).decode()[:8]


def ach_text(text: str) -> str:
    """Upper-case printable ASCII, accents dropped (``Müller`` → ``MULLER``), for names."""
    import unicodedata

    plain = unicodedata.normalize("NFKD", text)
    out = "".join(c for c in plain if not unicodedata.combining(c))
    return "".join(c if " " <= c <= "~" else " " for c in out).upper()


# -- records -------------------------------------------------------------------------------


def _a(value: str, width: int) -> str:
    if len(value) > width:
        raise ValueError(f"{value!r} does not fit {width} characters")
    return value.ljust(width)


def _n(value: int, width: int) -> str:
    text = str(value)
    if value < 0 or len(text) > width:
        raise ValueError(f"{value} does not fit {width} digits")
    return text.rjust(width, "0")


@dataclass(frozen=True, slots=True)
class AchCredit:
    """One CCD+ credit entry with its 05 addenda."""

    individual_id: str
    amount_cents: int
    receiver_routing: str
    receiver_account: str
    receiver_name: str
    payment_info: str
    transaction_code: str = "22"


@dataclass(frozen=True, slots=True)
class AchFileSpec:
    """One file, one CCD batch (service class 220: credits only)."""

    odfi_routing: str
    company_id: str
    company_name: str
    created_at: datetime
    file_id_modifier: str
    effective_date: date
    entries: tuple[AchCredit, ...]
    reference_code: str = ""
    entry_description: str = "SETTLEMENT"
    destination_name: str = ""


def build_ccd_plus(spec: AchFileSpec) -> bytes:
    """Render a NACHA CCD+ file: header, one batch, controls, padded to blocks of ten.

    Raises ValueError when a value does not fit its field (the caller checks first and turns
    that into findings; this is the last line, never a silent cut).
    """
    odfi8 = spec.odfi_routing[:8]
    records = [
        "1" + "01" + " " + _a(spec.odfi_routing, 9) + _a(spec.company_id, 10)
        + spec.created_at.strftime("%y%m%d") + spec.created_at.strftime("%H%M")
        + _a(spec.file_id_modifier, 1) + "094" + "10" + "1"
        + _a(ach_text(spec.destination_name)[:23], 23) + _a(ach_text(spec.company_name)[:23], 23)
        + _a(spec.reference_code, 8),
        "5" + "220" + _a(ach_text(spec.company_name)[:16], 16) + _a("", 20)
        + _a(spec.company_id, 10) + "CCD" + _a(spec.entry_description, 10) + _a("", 6)
        + spec.effective_date.strftime("%y%m%d") + _a("", 3) + "1" + _n(int(odfi8), 8)
        + _n(1, 7),
    ]
    entry_hash = 0
    credit_total = 0
    for seq, e in enumerate(spec.entries, start=1):
        trace = odfi8 + _n(seq, 7)
        records.append(
            "6" + _a(e.transaction_code, 2) + _a(e.receiver_routing[:8], 8)
            + _a(e.receiver_routing[8:9], 1) + _a(e.receiver_account, 17)
            + _n(e.amount_cents, 10) + _a(e.individual_id, 15)
            + _a(ach_text(e.receiver_name)[:22], 22) + _a("", 2) + "1" + trace)
        records.append("7" + "05" + _a(e.payment_info, MAX_ADDENDA_INFO) + _n(1, 4)
                       + trace[-7:])
        entry_hash += int(e.receiver_routing[:8])
        credit_total += e.amount_cents
    count = 2 * len(spec.entries)
    hash10 = entry_hash % 10**10
    records.append(
        "8" + "220" + _n(count, 6) + _n(hash10, 10) + _n(0, 12) + _n(credit_total, 12)
        + _a(spec.company_id, 10) + _a("", 19) + _a("", 6) + _n(int(odfi8), 8) + _n(1, 7))
    blocks = -(-(len(records) + 1) // BLOCKING_FACTOR)
    records.append(
        "9" + _n(1, 6) + _n(blocks, 6) + _n(count, 8) + _n(hash10, 10) + _n(0, 12)
        + _n(credit_total, 12) + _a("", 39))
    while len(records) % BLOCKING_FACTOR:
        records.append("9" * RECORD_LEN)
    return ("\n".join(records) + "\n").encode("ascii")


# -- checking ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    start: int
    width: int
    numeric: bool


def _layout(*spec: tuple[str, int, bool]) -> tuple[_Field, ...]:
    out, start = [], 1
    for name, width, numeric in spec:
        out.append(_Field(name, start, width, numeric))
        start += width
    assert start == RECORD_LEN + 1
    return tuple(out)


LAYOUTS: dict[str, tuple[str, tuple[_Field, ...]]] = {
    "1": ("file header", _layout(
        ("record type code", 1, True), ("priority code", 2, True),
        ("immediate destination", 10, False), ("immediate origin", 10, False),
        ("file creation date", 6, True), ("file creation time", 4, False),
        ("file ID modifier", 1, False), ("record size", 3, True), ("blocking factor", 2, True),
        ("format code", 1, True), ("immediate destination name", 23, False),
        ("immediate origin name", 23, False), ("reference code", 8, False))),
    "5": ("batch header", _layout(
        ("record type code", 1, True), ("service class code", 3, True),
        ("company name", 16, False), ("company discretionary data", 20, False),
        ("company identification", 10, False), ("standard entry class code", 3, False),
        ("company entry description", 10, False), ("company descriptive date", 6, False),
        ("effective entry date", 6, True), ("settlement date", 3, False),
        ("originator status code", 1, False), ("originating DFI identification", 8, True),
        ("batch number", 7, True))),
    "6": ("entry detail", _layout(
        ("record type code", 1, True), ("transaction code", 2, True),
        ("receiving DFI identification", 8, True), ("check digit", 1, True),
        ("DFI account number", 17, False), ("amount", 10, True),
        ("individual identification number", 15, False), ("individual name", 22, False),
        ("discretionary data", 2, False), ("addenda record indicator", 1, True),
        ("trace number", 15, True))),
    "7": ("addenda", _layout(
        ("record type code", 1, True), ("addenda type code", 2, True),
        ("payment related information", 80, False), ("addenda sequence number", 4, True),
        ("entry detail sequence number", 7, True))),
    "8": ("batch control", _layout(
        ("record type code", 1, True), ("service class code", 3, True),
        ("entry/addenda count", 6, True), ("entry hash", 10, True),
        ("total debit entry dollar amount", 12, True),
        ("total credit entry dollar amount", 12, True),
        ("company identification", 10, False), ("message authentication code", 19, False),
        ("reserved", 6, False), ("originating DFI identification", 8, True),
        ("batch number", 7, True))),
    "9": ("file control", _layout(
        ("record type code", 1, True), ("batch count", 6, True), ("block count", 6, True),
        ("entry/addenda count", 8, True), ("entry hash", 10, True),
        ("total debit entry dollar amount", 12, True),
        ("total credit entry dollar amount", 12, True), ("reserved", 39, False))),
}
RETURN_ADDENDA = _layout(
    ("record type code", 1, True), ("addenda type code", 2, True),
    ("return reason code", 3, False), ("original entry trace number", 15, True),
    ("date of death", 6, False), ("original receiving DFI identification", 8, True),
    ("addenda information", 44, False), ("trace number", 15, True))


class _Rec:
    def __init__(self, number: int, text: str, layout: tuple[_Field, ...]) -> None:
        self.number = number
        self.text = text
        self.fields = {f.name: f for f in layout}

    def get(self, name: str) -> str:
        f = self.fields[name]
        return self.text[f.start - 1:f.start - 1 + f.width]

    def where(self, name: str) -> str:
        return f"line {self.number} col {self.fields[name].start}"

    def num(self, name: str) -> int | None:
        value = self.get(name).strip()
        return int(value) if value.isdigit() else None


class _Checker:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, where: str, code: str, message: str, severity: str = "error") -> None:
        sev: Any = severity
        self.findings.append(Finding(where, code, message, sev))

    def numeric(self, rec: _Rec) -> None:
        for f in rec.fields.values():
            value = rec.get(f.name)
            if f.numeric and not value.isdigit():
                self.add(rec.where(f.name), "FF01", f"{f.name} {value!r} must be digits")

    def equal(self, rec: _Rec, name: str, actual: int, code: str) -> None:
        stated = rec.num(name)
        if stated is not None and stated != actual:
            self.add(rec.where(name), code, f"{name} says {stated} but the entries give "
                                            f"{actual}")


def check_nacha(data: bytes) -> list[Finding]:
    """Every finding about a NACHA file, each at ``line N col M`` with a reason code.

    Record length and characters, record order, field formats, ABA check digits, transaction
    codes, addenda indicators, batch and file counts, entry hashes (sum of RDFI routing
    numbers, rightmost ten digits), totals in cents, block count and the nines that fill the
    last block. Codes follow ISO where one fits (RC01 routing, AM10 totals, AM18 counts), FF01
    for anything structural.
    """
    c = _Checker()
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines: list[tuple[int, str]] = []
    for i, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            continue
        bad = [j for j, b in enumerate(raw, start=1) if not 0x20 <= b <= 0x7E]
        if bad:
            c.add(f"line {i} col {bad[0]}", "FF01",
                  f"byte 0x{raw[bad[0] - 1]:02X} is not a NACHA character (ASCII 0x20-0x7E)")
        text = raw.decode("ascii", errors="replace")
        if len(raw) != RECORD_LEN:
            c.add(f"line {i} col 1", "FF01", f"record is {len(raw)} bytes, not {RECORD_LEN}")
        lines.append((i, text.ljust(RECORD_LEN)[:RECORD_LEN]))
    if not lines:
        return [Finding("line 1 col 1", "FF01", "the file is empty")]

    padding = 0
    while lines and lines[-1][1] == "9" * RECORD_LEN:
        lines.pop()
        padding += 1
    records = [_Rec(n, t, LAYOUTS[t[0]][1]) if t[0] in LAYOUTS else None for n, t in lines]
    for (n, t), rec in zip(lines, records, strict=True):
        if rec is None:
            c.add(f"line {n} col 1", "FF01", f"record type code {t[0]!r} is not 1, 5, 6, 7, 8 "
                                             "or 9")
    if any(r is None for r in records):
        return c.findings
    recs = [r for r in records if r is not None]

    head = recs[0]
    if head.get("record type code") != "1":
        c.add(head.where("record type code"), "FF01", "a file starts with a file header (1)")
        return c.findings
    c.numeric(head)
    for name, want in (("priority code", "01"), ("record size", "094"),
                       ("blocking factor", "10"), ("format code", "1")):
        if head.get(name) != want:
            c.add(head.where(name), "FF01", f"{name} must be {want}, not {head.get(name)!r}")
    dest = head.get("immediate destination").strip()
    if len(dest) == 9 and dest.isdigit() and not aba_valid(dest):
        c.add(head.where("immediate destination"), "RC01",
              f"immediate destination {dest} fails the ABA check digit")
    if not re.fullmatch(r"[A-Z0-9]", head.get("file ID modifier")):
        c.add(head.where("file ID modifier"), "FF01", "file ID modifier must be A-Z or 0-9")

    if recs[-1].get("record type code") != "9":
        c.add(f"line {recs[-1].number} col 1", "FF01", "a file ends with a file control (9)")
        return c.findings
    control = recs[-1]
    c.numeric(control)

    file_hash = file_count = file_credit = file_debit = batches = 0
    i = 1
    body = recs[1:-1]
    while i - 1 < len(body):
        rec = body[i - 1]
        if rec.get("record type code") != "5":
            c.add(rec.where("record type code"), "FF01",
                  f"expected a batch header (5), found record type {rec.get('record type code')}")
            i += 1
            continue
        batches += 1
        header = rec
        c.numeric(header)
        service = header.get("service class code")
        if service not in ("200", "220", "225"):
            c.add(header.where("service class code"), "FF01",
                  f"service class code {service} is not 200, 220 or 225")
        if header.get("standard entry class code") not in ("CCD", "PPD", "CTX", "WEB", "TEL"):
            c.add(header.where("standard entry class code"), "FF01",
                  f"SEC code {header.get('standard entry class code')!r} is not supported")
        odfi = header.get("originating DFI identification")
        i += 1
        b_hash = b_count = b_credit = b_debit = 0
        entry: _Rec | None = None
        addenda_seen = 0
        while i - 1 < len(body) and body[i - 1].get("record type code") in ("6", "7"):
            rec = body[i - 1]
            i += 1
            if rec.get("record type code") == "6":
                if entry is not None:
                    _close_entry(c, entry, addenda_seen)
                entry, addenda_seen = rec, 0
                c.numeric(rec)
                b_count += 1
                code = rec.get("transaction code")
                routing = rec.get("receiving DFI identification") + rec.get("check digit")
                if routing.isdigit() and not aba_valid(routing):
                    c.add(rec.where("check digit"), "RC01",
                          f"routing number {routing} fails the ABA 3-7-1 check digit")
                if routing[:8].isdigit():
                    b_hash += int(routing[:8])
                amount = rec.num("amount")
                if code in CREDIT_CODES:
                    b_credit += amount or 0
                    if service == "225":
                        c.add(rec.where("transaction code"), "FF01",
                              "a credit entry in a debits-only batch (225)")
                elif code in DEBIT_CODES:
                    b_debit += amount or 0
                    if service == "220":
                        c.add(rec.where("transaction code"), "FF01",
                              "a debit entry in a credits-only batch (220)")
                else:
                    c.add(rec.where("transaction code"), "FF01",
                          f"transaction code {code} moves no money or is not supported")
                if amount == 0:
                    c.add(rec.where("amount"), "AM12", "a zero amount moves no money")
                if not rec.get("DFI account number").strip():
                    c.add(rec.where("DFI account number"), "AC01", "DFI account number is blank")
                if not rec.get("individual identification number").strip():
                    c.add(rec.where("individual identification number"), "FF01",
                          "individual identification number is blank: answers cannot be "
                          "matched", "warning")
                if rec.get("trace number")[:8] != odfi:
                    c.add(rec.where("trace number"), "FF01",
                          "trace number must start with the originating DFI identification")
            else:
                layout = LAYOUTS["7"][1]
                add = _Rec(rec.number, rec.text, layout)
                b_count += 1
                addenda_seen += 1
                c.numeric(add)
                if entry is None:
                    c.add(add.where("record type code"), "FF01", "addenda before any entry")
                    continue
                if add.get("addenda type code") != "05":
                    c.add(add.where("addenda type code"), "FF01",
                          f"addenda type {add.get('addenda type code')} in an originated file; "
                          "CCD+ uses 05")
                if add.num("addenda sequence number") != addenda_seen:
                    c.add(add.where("addenda sequence number"), "FF01",
                          f"addenda sequence number should be {addenda_seen}")
                if add.get("entry detail sequence number") != entry.get("trace number")[-7:]:
                    c.add(add.where("entry detail sequence number"), "FF01",
                          "entry detail sequence number must be the entry's trace sequence")
        if entry is not None:
            _close_entry(c, entry, addenda_seen)
        if i - 1 >= len(body) or body[i - 1].get("record type code") != "8":
            where = body[i - 1].number if i - 1 < len(body) else control.number
            c.add(f"line {where} col 1", "FF01", "batch has no batch control (8)")
            continue
        bc = body[i - 1]
        i += 1
        c.numeric(bc)
        if bc.get("service class code") != service:
            c.add(bc.where("service class code"), "FF01",
                  "service class code differs from the batch header's")
        if bc.get("company identification") != header.get("company identification"):
            c.add(bc.where("company identification"), "FF01",
                  "company identification differs from the batch header's")
        if bc.get("batch number") != header.get("batch number"):
            c.add(bc.where("batch number"), "FF01", "batch number differs from the header's")
        c.equal(bc, "entry/addenda count", b_count, "AM18")
        c.equal(bc, "entry hash", b_hash % 10**10, "FF01")
        c.equal(bc, "total credit entry dollar amount", b_credit, "AM10")
        c.equal(bc, "total debit entry dollar amount", b_debit, "AM10")
        file_hash += b_hash
        file_count += b_count
        file_credit += b_credit
        file_debit += b_debit

    c.equal(control, "batch count", batches, "AM18")
    c.equal(control, "entry/addenda count", file_count, "AM18")
    c.equal(control, "entry hash", file_hash % 10**10, "FF01")
    c.equal(control, "total credit entry dollar amount", file_credit, "AM10")
    c.equal(control, "total debit entry dollar amount", file_debit, "AM10")
    total = len(lines) + padding
    blocks = -(-total // BLOCKING_FACTOR)
    c.equal(control, "block count", blocks, "FF01")
    needed = (-len(lines)) % BLOCKING_FACTOR
    if padding != needed:
        c.add(f"line {control.number + 1} col 1", "FF01",
              f"{len(lines)} records need {needed} lines of nines to fill the last block, "
              f"found {padding}")
    return c.findings


def _close_entry(c: _Checker, entry: _Rec, addenda: int) -> None:
    indicator = entry.get("addenda record indicator")
    if indicator == "1" and addenda == 0:
        c.add(entry.where("addenda record indicator"), "FF01",
              "addenda record indicator is 1 but no addenda follows")
    elif indicator == "0" and addenda:
        c.add(entry.where("addenda record indicator"), "FF01",
              "addenda record indicator is 0 but an addenda follows")
    if addenda > 1:
        c.add(entry.where("addenda record indicator"), "FF01",
              f"CCD+ carries one addenda, this entry has {addenda}")


# -- answers -------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class AchReturn:
    individual_id: str
    amount_cents: int
    reason_code: str
    original_trace: str
    transaction_code: str


def parse_return_file(data: bytes) -> list[AchReturn]:
    """A NACHA return file: each return entry (21, 26, 31, ...) with its 99 addenda's R code."""
    out: list[AchReturn] = []
    pending: _Rec | None = None
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
            pending = _Rec(n, line, LAYOUTS["6"][1])
        elif line[0] == "7" and line[1:3] == "99":
            if pending is None:
                raise BankProtocolError(f"return file line {n}: addenda 99 without an entry")
            add = _Rec(n, line, RETURN_ADDENDA)
            amount = pending.num("amount")
            if amount is None:
                raise BankProtocolError(f"return file line {pending.number}: amount unreadable")
            out.append(AchReturn(
                individual_id=pending.get("individual identification number").strip(),
                amount_cents=amount, reason_code=add.get("return reason code").strip(),
                original_trace=add.get("original entry trace number"),
                transaction_code=pending.get("transaction code")))
            pending = None
    return out


# -- the adapter ---------------------------------------------------------------------------


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
    identification=<account number, used as company identification, ≤10>,
    agent=<ODFI routing number>)``. Store as for the SEPA rail: `store` or `store_path`.
    Submitting, status, credits and reconciliation are
    :class:`~rails.iso20022.filebank.FileBankRail`'s; what is NACHA's is here.

    Credits and the default statement come from camt.054 (mock-bank notifies NACHA accounts in
    ISO 20022; the BAI2 statement is not read). :meth:`reconcile` only reports: it does not
    save the statuses it matches (:meth:`status` does).
    """

    name = "ach-ccd"
    content_type = CONTENT_TYPE
    parsers: ClassVar[Mapping[str, Callable[[bytes], Any]]] = {
        "nacha.ack": parse_acknowledgement, "camt.054": parse_camt054,
        "nacha.return": parse_return_file, "bai2.statement": parse_bai2,
    }
    reconcile_saves = False

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
        clock: Callable[[], datetime] = utcnow,
        bank_name: str = "",
        report_account: str | None = None,
    ) -> None:
        super().__init__(base_url=base_url, account=account, store=store, store_path=store_path,
                         auth=auth, timeout_s=timeout_s, attempts=attempts, backoff_s=backoff_s,
                         clock=clock)
        self._bank_name = bank_name
        self._report_account = report_account

    def _check_account(self, account: Account) -> None:
        if account.scheme is not AccountScheme.US_ABA or not account.agent:
            raise ValueError("an ACH rail's own account is US.ABA with the ODFI routing number")
        if not aba_valid(account.agent):
            raise ValueError(f"ODFI routing number {account.agent} fails the check digit")
        if len(account.identification) > 10:
            raise ValueError("the company identification (our account number) is ≤10")

    def _is_our_account(self, reported: str) -> bool:
        """Is a camt.054's Acct/Id ours? The bank names a NACHA account there by its IBAN
        (`report_account`); without one configured, an identifier ending in our account
        number is taken as ours."""
        if self._report_account is not None:
            return reported == self._report_account
        return reported.endswith(self.account.identification)

    def _spec(self, instruction: PaymentInstruction, created_at: datetime, modifier: str
              ) -> AchFileSpec:
        key = instruction.idempotency_key
        return AchFileSpec(
            odfi_routing=str(self.account.agent), company_id=self.account.identification,
            company_name=self.account.name, created_at=created_at, file_id_modifier=modifier,
            effective_date=instruction.execution_date or created_at.date(),
            reference_code=derive_file_reference(key), destination_name=self._bank_name,
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
        for _, returns in await self._fetch("nacha.return"):
            for ret in returns:
                if ret.individual_id == iid:
                    fold.consider(self._record(stored, PaymentStatus.RETURNED,
                                               code=ret.reason_code,
                                               reason="returned by the RDFI"))
        # after the return file: its R code, not the statement's, says why money came back
        self._settle(stored, fold, await self._statement_entries())
        return fold.best

    async def _statement_entries(self) -> list[StatementEntry]:
        """camt.054 notifications and BAI2 statements, each booking once (rails.reconcile)."""
        stated = [e.to_port() for _, reports in await self._fetch("bai2.statement")
                  for rep in reports if rep.account == self.account.identification
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
