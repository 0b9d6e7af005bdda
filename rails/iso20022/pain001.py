"""pain.001.001.09 out: write one credit-transfer file, and check any file before it leaves.

Writing and checking are separate on purpose. :func:`build_pain001` renders what it is given and
never "fixes" a reference or an amount; :func:`check_pain001` then judges the bytes the way a bank
would: the official XSD first, then the SEPA profile the XSD cannot express. The adapter submits
only bytes with no error finding, and ``meterline rails validate`` runs the same checker, so a
file the CLI passes is a file the adapter would send.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as SafeET
import xmlschema
from defusedxml import DefusedXmlException

from rails.errors import Finding
from rails.iso20022 import sepa
from rails.money import format_minor
from rails.port import Account, AccountScheme

NS = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
XSD_DIR = Path(__file__).resolve().parent.parent / "xsd"

MAX_SEPA_AMOUNT_MINOR = 99_999_999_999
"""EPC SCT rulebook: at most 999,999,999.99 EUR per transaction."""

_RF = re.compile(r"RF[0-9]{2}[A-Z0-9]{1,21}")
# Elements that repeat and so get an index in a finding's path.
_INDEXED = frozenset({"PmtInf", "CdtTrfTxInf"})


@dataclass(frozen=True, slots=True)
class CreditTransfer:
    """One CdtTrfTxInf: everything but the debtor side."""

    end_to_end_id: str
    amount_minor: int
    currency: str
    creditor: Account
    reference: str


@dataclass(frozen=True, slots=True)
class CreditTransferFile:
    """One pain.001 with one PmtInf (one debtor account, one execution date)."""

    msg_id: str
    pmt_inf_id: str
    created_at: datetime
    execution_date: date
    debtor: Account
    transfers: tuple[CreditTransfer, ...]
    initiating_party: str | None = None
    debtor_address: sepa.PostalAddress | None = None
    """Written as Dbtr/PstlAdr when given; required when a non-EEA SEPA country is involved."""


def is_creditor_reference(reference: str) -> bool:
    """An ISO 11649 RF reference (``RF18539007547034``) with valid mod-97 check digits."""
    if not _RF.fullmatch(reference):
        return False
    rearranged = reference[4:] + reference[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{NS}}}{tag}", attrs)
    if text is not None:
        el.text = text
    return el


def _account(parent: ET.Element, tag: str, account: Account) -> None:
    acct = _sub(_sub(parent, tag), "Id")
    if account.scheme is AccountScheme.IBAN:
        _sub(acct, "IBAN", account.identification)
    else:
        _sub(_sub(acct, "Othr"), "Id", account.identification)


def _agent(parent: ET.Element, tag: str, account: Account, *, required: bool) -> None:
    bic = account.agent
    if bic is None and account.scheme is AccountScheme.IBAN:
        bic = sepa.bic_for_iban(account.identification)
    if bic is None and not required:
        return  # EPC: the creditor agent is optional in SEPA (IBAN-only).
    fin = _sub(_sub(parent, tag), "FinInstnId")
    if bic is not None:
        _sub(fin, "BICFI", bic)
    else:
        # The EPC implementation guide's placeholder when the debtor's BIC is not given.
        _sub(_sub(fin, "Othr"), "Id", "NOTPROVIDED")


def _address(parent: ET.Element, address: sepa.PostalAddress) -> None:
    adr = _sub(parent, "PstlAdr")
    tags = {"street_name": "StrtNm", "building_number": "BldgNb", "post_code": "PstCd",
            "town_name": "TwnNm"}
    for key, limit in sepa.MAX_ADDRESS_PART.items():
        if value := getattr(address, key):
            _sub(adr, tags[key], sepa.transliterate(value, limit))
    _sub(adr, "Ctry", address.country)


def _iso_datetime(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat()


def build_pain001(doc: CreditTransferFile) -> bytes:
    """Render `doc` as pain.001.001.09 bytes: UTF-8, deterministic for equal input.

    Names are transliterated to the SEPA set and cut to 70; nothing else is changed, so a bad
    IBAN or an over-long reference reaches :func:`check_pain001` and is reported there.
    """
    total = sum(t.amount_minor for t in doc.transfers)
    currency = doc.transfers[0].currency if doc.transfers else "EUR"
    count = str(len(doc.transfers))
    ctrl_sum = format_minor(total, currency)

    ET.register_namespace("", NS)
    root = ET.Element(f"{{{NS}}}Document")
    init = _sub(root, "CstmrCdtTrfInitn")
    hdr = _sub(init, "GrpHdr")
    _sub(hdr, "MsgId", doc.msg_id)
    _sub(hdr, "CreDtTm", _iso_datetime(doc.created_at))
    _sub(hdr, "NbOfTxs", count)
    _sub(hdr, "CtrlSum", ctrl_sum)
    _sub(_sub(hdr, "InitgPty"), "Nm",
         sepa.transliterate(doc.initiating_party or doc.debtor.name))

    pmt = _sub(init, "PmtInf")
    _sub(pmt, "PmtInfId", doc.pmt_inf_id)
    _sub(pmt, "PmtMtd", "TRF")
    _sub(pmt, "NbOfTxs", count)
    _sub(pmt, "CtrlSum", ctrl_sum)
    _sub(_sub(_sub(pmt, "PmtTpInf"), "SvcLvl"), "Cd", "SEPA")
    _sub(_sub(pmt, "ReqdExctnDt"), "Dt", doc.execution_date.isoformat())
    dbtr = _sub(pmt, "Dbtr")
    _sub(dbtr, "Nm", sepa.transliterate(doc.debtor.name))
    if doc.debtor_address is not None:
        _address(dbtr, doc.debtor_address)
    _account(pmt, "DbtrAcct", doc.debtor)
    _agent(pmt, "DbtrAgt", doc.debtor, required=True)
    _sub(pmt, "ChrgBr", "SLEV")

    for t in doc.transfers:
        tx = _sub(pmt, "CdtTrfTxInf")
        _sub(_sub(tx, "PmtId"), "EndToEndId", t.end_to_end_id)
        _sub(_sub(tx, "Amt"), "InstdAmt", format_minor(t.amount_minor, t.currency),
             Ccy=t.currency)
        _agent(tx, "CdtrAgt", t.creditor, required=False)
        _sub(_sub(tx, "Cdtr"), "Nm", sepa.transliterate(t.creditor.name))
        _account(tx, "CdtrAcct", t.creditor)
        rmt = _sub(tx, "RmtInf")
        if is_creditor_reference(t.reference):
            ref = _sub(_sub(rmt, "Strd"), "CdtrRefInf")
            tp = _sub(ref, "Tp")
            _sub(_sub(tp, "CdOrPrtry"), "Cd", "SCOR")
            _sub(tp, "Issr", "ISO")
            _sub(ref, "Ref", t.reference)
        else:
            _sub(rmt, "Ustrd", t.reference)

    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


# -- checking --------------------------------------------------------------------------------


@functools.cache
def _schema(name: str) -> Any:
    """Load an official XSD once per process (xmlschema takes a few hundred ms per schema)."""
    return xmlschema.XMLSchema(str(XSD_DIR / f"{name}.xsd"))


def parse_untrusted(data: bytes) -> ET.Element:
    """Parse bank or user XML with DTDs, entities and external references refused.

    Raises ValueError with the parser's reason; callers turn it into their own typed error.
    """
    try:
        root: ET.Element = SafeET.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise ValueError(f"refused: {type(exc).__name__}") from exc
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from exc
    return root


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def element_paths(root: ET.Element) -> dict[int, str]:
    """``id(element)`` → ``/Document/CstmrCdtTrfInitn/PmtInf[1]/...`` for every element."""
    paths: dict[int, str] = {}

    def walk(el: ET.Element, path: str) -> None:
        paths[id(el)] = path
        counts: dict[str, int] = {}
        for child in el:
            name = local(child.tag)
            counts[name] = counts.get(name, 0) + 1
            step = f"{name}[{counts[name]}]" if name in _INDEXED else name
            walk(child, f"{path}/{step}")

    walk(root, "/" + local(root.tag))
    return paths


def _xsd_findings(schema_name: str, root: ET.Element, paths: dict[int, str]) -> list[Finding]:
    findings = []
    for err in _schema(schema_name).iter_errors(root):
        elem = getattr(err, "elem", None)
        path = paths.get(id(elem), "/") if elem is not None else "/"
        reason = err.reason or str(err.message)
        findings.append(Finding(path, "FF01", f"XSD {schema_name}: {reason}"))
    return findings


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if local(c.tag) == name]


def _find(el: ET.Element, *names: str) -> ET.Element | None:
    cur: ET.Element | None = el
    for name in names:
        if cur is None:
            return None
        found = _children(cur, name)
        cur = found[0] if found else None
    return cur


def _text(el: ET.Element | None) -> str | None:
    return None if el is None else (el.text or "")


def _decimal(text: str | None) -> Decimal | None:
    if text is None or not re.fullmatch(r"\d+(\.\d+)?", text.strip()):
        return None
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        return None


class _Profile:
    """The SEPA rules over a parsed document; each finding names the element it is about."""

    def __init__(self, root: ET.Element, paths: dict[int, str]) -> None:
        self.root = root
        self.paths = paths
        self.findings: list[Finding] = []

    def add(self, el: ET.Element | None, code: str, message: str, *, parent: ET.Element | None
            = None, missing: str = "", severity: str = "error") -> None:
        if el is not None:
            path = self.paths.get(id(el), "/")
        else:
            base = self.paths.get(id(parent), "") if parent is not None else ""
            path = f"{base}/{missing}"
        sev: Any = severity
        self.findings.append(Finding(path, code, message, sev))

    def ident(self, el: ET.Element | None, what: str, parent: ET.Element, missing: str) -> None:
        if el is None:
            self.add(None, "FF01", f"{what} is mandatory", parent=parent, missing=missing)
            return
        value = el.text or ""
        if not value.strip():
            self.add(el, "FF01", f"{what} is empty")
        if len(value) > sepa.MAX_ID:
            self.add(el, "FF01", f"{what} is {len(value)} characters; at most {sepa.MAX_ID}")
        if (problem := sepa.charset_problem(value)) is not None:
            self.add(el, "FF01", f"{what} has {problem}")
        if value.startswith("/") or "//" in value:
            self.add(el, "FF01", f"{what} must not start with '/' or contain '//'")

    def name(self, el: ET.Element | None, what: str, parent: ET.Element, missing: str) -> None:
        if el is None:
            self.add(None, "FF01", f"{what} is mandatory in SEPA", parent=parent,
                     missing=missing)
            return
        value = el.text or ""
        if len(value) > sepa.MAX_NAME:
            self.add(el, "FF01", f"{what} is {len(value)} characters; SEPA allows "
                                 f"{sepa.MAX_NAME}")
        if (problem := sepa.charset_problem(value)) is not None:
            self.add(el, "FF01", f"{what} has {problem}")

    def iban(self, holder: ET.Element | None, what: str, parent: ET.Element, missing: str
             ) -> None:
        iban = _find(holder, "Id", "IBAN") if holder is not None else None
        if iban is None:
            self.add(holder, "AC01", f"{what} must be an IBAN in SEPA", parent=parent,
                     missing=missing)
            return
        if (problem := sepa.iban_problem(iban.text or "")) is not None:
            self.add(iban, "AC01", problem)

    def reach(self, pmt: ET.Element) -> None:
        """Where the money goes: every creditor in SEPA; a non-EEA SEPA country involved
        (debtor or creditor) needs the debtor's postal address (town and country) and, for a
        creditor there, its agent's BIC (EPC SCT rulebook; EU 2023/1113)."""
        debtor = _text(_find(pmt, "DbtrAcct", "Id", "IBAN")) or ""
        countries = [sepa.country_class(debtor)] if debtor else []
        for tx in _children(pmt, "CdtTrfTxInf"):
            iban = _find(tx, "CdtrAcct", "Id", "IBAN")
            if iban is None or not iban.text:
                continue
            kind = sepa.country_class(iban.text)
            countries.append(kind)
            if kind is sepa.CountryClass.NOT_SEPA:
                self.add(iban, "AC01", f"{iban.text[:2]} is not a SEPA country: a SEPA credit "
                                       "transfer cannot reach this account")
            bic = _find(tx, "CdtrAgt", "FinInstnId", "BICFI")
            if (bic is not None and bic.text and sepa.bic_problem(bic.text) is None
                    and (problem := sepa.creditor_bic_problem(iban.text, bic.text)) is not None):
                self.add(bic, "RC01", problem)
            if kind is sepa.CountryClass.NON_EEA_SEPA and bic is None:
                self.add(None, "RC01", "the creditor agent's BIC is required for a payee in a "
                                       "non-EEA SEPA country", parent=tx,
                         missing="CdtrAgt/FinInstnId/BICFI")
        if sepa.CountryClass.NON_EEA_SEPA in countries:
            adr = _find(pmt, "Dbtr", "PstlAdr")
            for tag in ("TwnNm", "Ctry"):
                if adr is None or not (_text(_find(adr, tag)) or "").strip():
                    self.add(None, "FF01", f"the debtor's postal address ({tag}) is required "
                                           "when a non-EEA SEPA country is involved",
                             parent=pmt, missing=f"Dbtr/PstlAdr/{tag}")

    def agent(self, holder: ET.Element | None) -> None:
        bic = _find(holder, "FinInstnId", "BICFI") if holder is not None else None
        if bic is not None and (problem := sepa.bic_problem(bic.text or "")) is not None:
            self.add(bic, "RC01", problem)

    def amount(self, el: ET.Element | None, tx: ET.Element) -> int | None:
        """Check InstdAmt and return it in minor units (EUR cents), or None when unusable."""
        if el is None:
            self.add(None, "FF01", "InstdAmt is mandatory in SEPA", parent=tx,
                     missing="Amt/InstdAmt")
            return None
        ccy = el.get("Ccy")
        if ccy != "EUR":
            self.add(el, "AM03", f"currency {ccy!r}: SEPA credit transfers are in EUR")
        text = (el.text or "").strip()
        match = re.fullmatch(r"(\d+)(?:\.(\d+))?", text)
        if not match:
            self.add(el, "AM12", f"amount {text!r} is not a plain decimal")
            return None
        whole, frac = match.group(1), match.group(2) or ""
        if len(frac) > 2:
            self.add(el, "AM12", f"amount {text} has {len(frac)} decimals; EUR has 2")
            return None
        if len(frac) < 2:
            self.add(el, "AM12", f"amount {text} should be written with 2 decimals",
                     severity="warning")
        minor = int(whole) * 100 + int(frac.ljust(2, "0"))
        if minor <= 0:
            self.add(el, "AM12", "amount must be more than zero")
        elif minor > MAX_SEPA_AMOUNT_MINOR:
            self.add(el, "AM02", f"amount {text} is above the SEPA maximum 999999999.99")
        return minor

    def remittance(self, rmt: ET.Element | None) -> None:
        if rmt is None:
            return
        ustrd = _children(rmt, "Ustrd")
        strd = _children(rmt, "Strd")
        if len(ustrd) > 1:
            self.add(ustrd[1], "FF01", "SEPA allows one Ustrd")
        if ustrd and strd:
            self.add(strd[0], "FF01", "SEPA allows Ustrd or Strd, not both")
        if len(strd) > 1:
            self.add(strd[1], "FF01", "SEPA allows one Strd")
        for el in ustrd:
            value = el.text or ""
            if len(value) > sepa.MAX_USTRD:
                self.add(el, "FF01", f"Ustrd is {len(value)} characters; at most "
                                     f"{sepa.MAX_USTRD}")
            if (problem := sepa.charset_problem(value)) is not None:
                self.add(el, "FF01", f"Ustrd has {problem}")
        for el in strd:
            ref = _find(el, "CdtrRefInf", "Ref")
            if ref is None:
                continue
            value = ref.text or ""
            if len(value) > sepa.MAX_STRD_REF:
                self.add(ref, "FF01", f"Ref is {len(value)} characters; at most "
                                      f"{sepa.MAX_STRD_REF}")
            if (problem := sepa.charset_problem(value)) is not None:
                self.add(ref, "FF01", f"Ref has {problem}")

    def run(self) -> None:
        init = _find(self.root, "CstmrCdtTrfInitn")
        if init is None:
            self.add(None, "FF01", "CstmrCdtTrfInitn is missing", parent=self.root,
                     missing="CstmrCdtTrfInitn")
            return
        hdr = _find(init, "GrpHdr")
        if hdr is None:
            return  # the XSD has said so
        self.ident(_find(hdr, "MsgId"), "MsgId", hdr, "MsgId")
        e2e_seen: dict[str, ET.Element] = {}
        all_amounts: list[int] = []
        tx_total = 0
        for pmt in _children(init, "PmtInf"):
            self.ident(_find(pmt, "PmtInfId"), "PmtInfId", pmt, "PmtInfId")
            svc = _find(pmt, "PmtTpInf", "SvcLvl", "Cd")
            if svc is None or svc.text != "SEPA":
                self.add(svc, "FF01", "PmtTpInf/SvcLvl/Cd must be SEPA", parent=pmt,
                         missing="PmtTpInf/SvcLvl/Cd")
            chrg = _find(pmt, "ChrgBr")
            if chrg is not None and chrg.text != "SLEV":
                self.add(chrg, "FF01", "ChrgBr must be SLEV in SEPA")
            self.name(_find(pmt, "Dbtr", "Nm"), "Dbtr/Nm", pmt, "Dbtr/Nm")
            self.iban(_find(pmt, "DbtrAcct"), "DbtrAcct", pmt, "DbtrAcct/Id/IBAN")
            self.reach(pmt)
            self.agent(_find(pmt, "DbtrAgt"))
            txs = _children(pmt, "CdtTrfTxInf")
            tx_total += len(txs)
            amounts: list[int] = []
            for tx in txs:
                e2e = _find(tx, "PmtId", "EndToEndId")
                self.ident(e2e, "EndToEndId", tx, "PmtId/EndToEndId")
                if e2e is not None and e2e.text:
                    if e2e.text in e2e_seen:
                        self.add(e2e, "AM05", f"EndToEndId {e2e.text} is used twice in the "
                                              "file")
                    e2e_seen[e2e.text] = e2e
                minor = self.amount(_find(tx, "Amt", "InstdAmt"), tx)
                if minor is not None:
                    amounts.append(minor)
                self.agent(_find(tx, "CdtrAgt"))
                self.name(_find(tx, "Cdtr", "Nm"), "Cdtr/Nm", tx, "Cdtr/Nm")
                self.iban(_find(tx, "CdtrAcct"), "CdtrAcct", tx, "CdtrAcct/Id/IBAN")
                self.remittance(_find(tx, "RmtInf"))
            self.totals(pmt, len(txs), amounts if len(amounts) == len(txs) else None)
            all_amounts.extend(amounts)
        complete = len(all_amounts) == tx_total
        self.totals(hdr, tx_total, all_amounts if complete else None)

    def totals(self, holder: ET.Element, count: int, amounts: Sequence[int] | None) -> None:
        """NbOfTxs = count (AM18) and CtrlSum = sum (AM10), at group and batch level."""
        nb = _find(holder, "NbOfTxs")
        if nb is not None and (nb.text or "").strip() != str(count):
            self.add(nb, "AM18", f"NbOfTxs says {nb.text} but there are {count} transactions")
        ctrl = _find(holder, "CtrlSum")
        if ctrl is None:
            self.add(None, "AM10", "CtrlSum is required by this profile", parent=holder,
                     missing="CtrlSum", severity="warning")
            return
        stated = _decimal(ctrl.text)
        if stated is None:
            self.add(ctrl, "AM10", f"CtrlSum {ctrl.text!r} is not a plain decimal")
            return
        if amounts is None:
            return
        actual = Decimal(sum(amounts)).scaleb(-2)
        if stated != actual:
            self.add(ctrl, "AM10", f"CtrlSum says {ctrl.text} but the amounts sum to "
                                   f"{actual:.2f}")


def check_pain001(data: bytes) -> list[Finding]:
    """Every finding about a pain.001.001.09 file: XSD errors, then SEPA profile rules.

    An empty list (or warnings only) means the file may leave. The same function backs the
    adapter's pre-submission gate and ``meterline rails validate``.
    """
    try:
        root = parse_untrusted(data)
    except ValueError as exc:
        return [Finding("/", "FF01", str(exc))]
    if root.tag != f"{{{NS}}}Document":
        return [Finding("/" + local(root.tag), "FF01",
                        f"not a pain.001.001.09 Document (root {root.tag})")]
    paths = element_paths(root)
    findings = _xsd_findings("pain.001.001.09", root, paths)
    profile = _Profile(root, paths)
    profile.run()
    return dedupe([*findings, *profile.findings])


def dedupe(findings: Sequence[Finding]) -> list[Finding]:
    """Drop a later finding with the same path, code and message; keep the order."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for f in findings:
        k = (f.path, f.code, f.message)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out


def errors(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def iter_text(root: ET.Element, name: str) -> Iterator[str]:
    for el in root.iter():
        if local(el.tag) == name and el.text:
            yield el.text
