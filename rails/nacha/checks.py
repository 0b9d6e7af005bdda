"""The NACHA gate: read a file the way an ODFI does and name every problem ``line N col M``.

:func:`check_nacha` backs the adapter (a file with an error finding never leaves) and
``meterline rails validate``. Beyond structure, counts, hashes and totals it holds the file to
the rules an ODFI applies that no validator checks: the Immediate Origin and Company
Identification it assigned (not an account number), names left-justified and present, and
entries over the Same Day ACH limit not dated for the same day, effective dates on Federal
Reserve banking days (:mod:`rails.nacha.holidays`; a weekend or holiday is a warning).
:func:`originator_findings` runs the same field rules over the ``[rails.nacha]`` settings, so a
config that passes writes files that pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rails.errors import Finding
from rails.nacha.holidays import is_banking_day, next_banking_day
from rails.nacha.records import (
    BLOCKING_FACTOR,
    CREDIT_CODES,
    DEBIT_CODES,
    LAYOUTS,
    RECORD_LEN,
    Originator,
    Rec,
    aba_valid,
    ach_text,
)

SAME_DAY_LIMIT_CENTS = 1_000_000_00
"""$1,000,000 per payment: the Same Day ACH limit in force since 18 March 2022 (Nacha Operating
Rules, "Increasing the Same Day ACH Dollar Limit", announced on frbservices.org). An entry above
it must carry a later effective entry date than the file's creation date."""


def effective_day_problem(yymmdd: str) -> tuple[str, str] | None:
    """(severity, why) when an effective entry date (YYMMDD) will not settle on that day, or
    None. Not a date is an error; a weekend or a Federal Reserve holiday a warning: NACHA allows
    it and the operator settles the entry on the next banking day."""
    try:
        day = datetime.strptime(yymmdd, "%y%m%d").date()
    except ValueError:
        return "error", f"effective entry date {yymmdd!r} is not a YYMMDD date"
    if is_banking_day(day):
        return None
    why = "a Saturday or Sunday" if day.weekday() >= 5 else "a Federal Reserve holiday"
    return "warning", (f"effective entry date {day.isoformat()} is {why}: it settles on "
                       f"{next_banking_day(day).isoformat()}")


def routing_field_problem(value: str) -> str | None:
    """A 10-character routing field (``␣TTTTAAAAC``): why it is not one, or None."""
    if not re.fullmatch(r" \d{9}", value):
        return f"{value!r} must be a space and a 9-digit routing number (␣TTTTAAAAC)"
    if not aba_valid(value[1:]):
        return f"routing number {value[1:]} fails the ABA check digit"
    return None


def origin_problem(value: str) -> str | None:
    """Immediate Origin: ``␣TTTTAAAAC`` or 10 alphanumerics as the ODFI assigned."""
    if value.startswith(" "):
        return routing_field_problem(value)
    if not re.fullmatch(r"[0-9A-Z]{10}", value):
        return (f"immediate origin {value!r} must be ␣ + a routing number or the 10 "
                "characters the ODFI assigned (such as 1 + EIN)")
    return None


def company_id_problem(value: str) -> str | None:
    """Company Identification: 10 alphanumerics; ``1`` + a 9-digit EIN when it starts with 1."""
    if not re.fullmatch(r"[0-9A-Z]{10}", value):
        return (f"company identification {value!r} must be the 10 characters the ODFI "
                "assigned (1 + EIN, 3 + DUNS, 9 + a number)")
    if value[0] == "1" and not value[1:].isdigit():
        return f"company identification {value!r} starting with 1 must be 1 + a 9-digit EIN"
    return None


def name_problem(value: str) -> str | None:
    """A name field: present, left-justified, in the characters :func:`ach_text` writes."""
    if not value.strip():
        return "is blank"
    if value.startswith(" "):
        return f"{value!r} must be left-justified"
    if ach_text(value) != " ".join(value.split()):
        return f"{value!r} must be upper-case letters, digits and punctuation"
    return None


def _named(what: str) -> Callable[[str], str | None]:
    def rule(value: str) -> str | None:
        problem = name_problem(value)
        return None if problem is None else f"{what} {problem}"
    return rule


HEADER_RULES: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("immediate destination", routing_field_problem),
    ("immediate origin", origin_problem),
    ("immediate destination name", _named("immediate destination name")),
    ("immediate origin name", _named("immediate origin name")),
)
BATCH_RULES: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("company name", _named("company name")),
    ("company identification", company_id_problem),
)


def originator_findings(originator: Originator) -> list[Finding]:
    """The header rules over the ``[rails.nacha]`` identity, each at its setting's name."""
    widths = {"immediate_destination_name": 23, "immediate_origin_name": 23, "company_name": 16}
    findings = []
    rules = {
        "immediate_destination": routing_field_problem, "immediate_origin": origin_problem,
        "company_id": company_id_problem,
    }
    for setting, rule in rules.items():
        if (problem := rule(getattr(originator, setting))) is not None:
            findings.append(Finding(setting, "FF01", problem))
    for setting, width in widths.items():
        written = ach_text(getattr(originator, setting))[:width]
        if not written:
            findings.append(Finding(setting, "FF01", "is required (the name the ODFI knows)"))
    return findings


class _Checker:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, where: str, code: str, message: str, severity: str = "error") -> None:
        sev: Any = severity
        self.findings.append(Finding(where, code, message, sev))

    def numeric(self, rec: Rec) -> None:
        for f in rec.fields.values():
            value = rec.get(f.name)
            if f.numeric and not value.isdigit():
                self.add(rec.where(f.name), "FF01", f"{f.name} {value!r} must be digits")

    def equal(self, rec: Rec, name: str, actual: int, code: str) -> None:
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
    records = [Rec(n, t, LAYOUTS[t[0]][1]) if t[0] in LAYOUTS else None for n, t in lines]
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
    for name, rule in HEADER_RULES:
        if (problem := rule(head.get(name))) is not None:
            c.add(head.where(name), "RC01" if "check digit" in problem else "FF01", problem)
    created = head.get("file creation date")
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
        for name, rule in BATCH_RULES:
            if (problem := rule(header.get(name))) is not None:
                c.add(header.where(name), "FF01", problem)
        same_day = header.get("effective entry date") <= created
        if (said := effective_day_problem(header.get("effective entry date"))) is not None:
            c.add(header.where("effective entry date"), "DT01", said[1], said[0])
        odfi = header.get("originating DFI identification")
        i += 1
        b_hash = b_count = b_credit = b_debit = 0
        entry: Rec | None = None
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
                elif amount is not None and amount > SAME_DAY_LIMIT_CENTS and same_day:
                    c.add(rec.where("amount"), "AM02",
                          f"{amount} cents is over the Same Day ACH per-payment limit "
                          f"({SAME_DAY_LIMIT_CENTS}) with a same-day effective date")
                if (problem := name_problem(rec.get("individual name"))) is not None:
                    c.add(rec.where("individual name"), "FF01", f"individual name {problem}")
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
                add = Rec(rec.number, rec.text, layout)
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


def _close_entry(c: _Checker, entry: Rec, addenda: int) -> None:
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
