"""What the bank sends back: pain.002, camt.054, camt.053 and pacs.004, read into plain values.

Everything here is untrusted input. It is parsed with DTDs and entities refused, read by local
element names (any version of a message family is accepted; the namespace's family must match),
and anything that does not hold together (a missing amount, a currency with the wrong number of
decimals, a date that is not one) is a :class:`~rails.errors.BankProtocolError`, never a raw
exception: a bank answer the adapter cannot read must stop the caller, not crash it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from xml.etree import ElementTree as ET

from rails.errors import BankProtocolError
from rails.iso20022.pain001 import local, parse_untrusted
from rails.money import parse_minor
from rails.port import EntryDirection, Statement, StatementEntry

_NS_PREFIX = "urn:iso:std:iso:20022:tech:xsd:"


def _root(data: bytes, family: str) -> ET.Element:
    """Parse `data` and insist its namespace is `family` (``pain.002``, ``camt.054``, ...)."""
    try:
        root = parse_untrusted(data)
    except ValueError as exc:
        raise BankProtocolError(f"{family}: {exc}") from exc
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if local(root.tag) != "Document" or not ns.startswith(_NS_PREFIX + family + "."):
        raise BankProtocolError(f"expected a {family} Document, got {root.tag}")
    return root


def _kids(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if local(c.tag) == name]


def _at(el: ET.Element | None, *names: str) -> ET.Element | None:
    cur = el
    for name in names:
        if cur is None:
            return None
        found = _kids(cur, name)
        cur = found[0] if found else None
    return cur


def _text(el: ET.Element | None, *names: str) -> str | None:
    found = _at(el, *names)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _need(el: ET.Element | None, *names: str) -> str:
    value = _text(el, *names)
    if not value:
        where = local(el.tag) if el is not None else "?"
        raise BankProtocolError(f"{where}/{'/'.join(names)} is missing")
    return value


def _amount(el: ET.Element | None, what: str) -> tuple[int, str]:
    """An ``Amt Ccy="EUR"`` element in minor units, or BankProtocolError."""
    if el is None:
        raise BankProtocolError(f"{what} is missing")
    ccy = el.get("Ccy") or ""
    try:
        return parse_minor(el.text or "", ccy), ccy
    except ValueError as exc:
        raise BankProtocolError(f"{what}: {exc}") from exc


def _date(text: str | None, what: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError as exc:
        raise BankProtocolError(f"{what} {text!r} is not a date") from exc


# -- pain.002 --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TxStatus:
    end_to_end_id: str
    pmt_inf_id: str | None
    status: str
    """ISO code: ACCP, ACSC, RJCT, PDNG, ..."""
    reason_code: str | None
    reason_text: str | None


@dataclass(frozen=True, slots=True)
class StatusReport:
    msg_id: str
    original_msg_id: str
    group_status: str | None
    group_reason: str | None
    group_reason_text: str | None
    batches: tuple[tuple[str, str | None, str | None], ...]
    """(OrgnlPmtInfId, PmtInfSts, reason code) per batch."""
    transactions: tuple[TxStatus, ...]


def _reason(holder: ET.Element | None) -> tuple[str | None, str | None]:
    info = _at(holder, "StsRsnInf")
    if info is None:
        return None, None
    code = _text(info, "Rsn", "Cd") or _text(info, "Rsn", "Prtry")
    texts = [c.text.strip() for c in _kids(info, "AddtlInf") if c.text]
    return code, (" ".join(texts) or None)


def parse_pain002(data: bytes) -> StatusReport:
    """A customer payment status report: group, batch and transaction statuses with reasons."""
    root = _root(data, "pain.002")
    rpt = _at(root, "CstmrPmtStsRpt")
    if rpt is None:
        raise BankProtocolError("pain.002 has no CstmrPmtStsRpt")
    grp = _at(rpt, "OrgnlGrpInfAndSts")
    if grp is None:
        raise BankProtocolError("pain.002 has no OrgnlGrpInfAndSts")
    group_code, group_text = _reason(grp)
    batches = []
    txs = []
    for pmt in _kids(rpt, "OrgnlPmtInfAndSts"):
        pmt_id = _need(pmt, "OrgnlPmtInfId")
        batch_code, _ = _reason(pmt)
        batches.append((pmt_id, _text(pmt, "PmtInfSts"), batch_code))
        for tx in _kids(pmt, "TxInfAndSts"):
            code, text = _reason(tx)
            txs.append(TxStatus(
                end_to_end_id=_need(tx, "OrgnlEndToEndId"), pmt_inf_id=pmt_id,
                status=_need(tx, "TxSts"), reason_code=code, reason_text=text))
    return StatusReport(
        msg_id=_need(_at(rpt, "GrpHdr"), "MsgId"),
        original_msg_id=_need(grp, "OrgnlMsgId"),
        group_status=_text(grp, "GrpSts"),
        group_reason=group_code, group_reason_text=group_text,
        batches=tuple(batches), transactions=tuple(txs))


# -- camt.053 / camt.054 ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``Ntry`` (with its first ``TxDtls``), everything a reconciler matches on."""

    entry_id: str
    direction: EntryDirection
    amount_minor: int
    currency: str
    booked: bool
    booking_date: date | None
    value_date: date | None
    msg_id: str | None
    pmt_inf_id: str | None
    end_to_end_id: str | None
    structured_reference: str | None
    unstructured: str | None
    return_reason: str | None
    counterparty_name: str | None
    counterparty_account: str | None

    @property
    def reference(self) -> str | None:
        return self.structured_reference or self.unstructured

    def to_port(self) -> StatementEntry:
        return StatementEntry(
            entry_id=self.entry_id, direction=self.direction, amount_minor=self.amount_minor,
            currency=self.currency, booked=self.booked, booking_date=self.booking_date,
            end_to_end_id=self.end_to_end_id, reference=self.reference,
            return_reason=self.return_reason)


@dataclass(frozen=True, slots=True)
class AccountReport:
    """One ``Stmt`` of a camt.053 or one ``Ntfctn`` of a camt.054."""

    report_id: str
    account: str
    currency: str
    entries: tuple[Entry, ...]
    opening_balance_minor: int | None = None
    closing_balance_minor: int | None = None

    def to_statement(self) -> Statement:
        return Statement(
            account=self.account, currency=self.currency,
            entries=tuple(e.to_port() for e in self.entries),
            opening_balance_minor=self.opening_balance_minor,
            closing_balance_minor=self.closing_balance_minor, statement_id=self.report_id)


def _account_id(acct: ET.Element | None) -> str:
    return _text(acct, "Id", "IBAN") or _text(acct, "Id", "Othr", "Id") or ""


def _entry(ntry: ET.Element, report_id: str, index: int) -> Entry:
    amount, ccy = _amount(_at(ntry, "Amt"), "Ntry/Amt")
    side = _need(ntry, "CdtDbtInd")
    if side not in ("CRDT", "DBIT"):
        raise BankProtocolError(f"Ntry/CdtDbtInd {side!r} is neither CRDT nor DBIT")
    status = _text(ntry, "Sts", "Cd") or _text(ntry, "Sts")
    tx = _at(ntry, "NtryDtls", "TxDtls")
    refs = _at(tx, "Refs")
    e2e = _text(refs, "EndToEndId")
    credit = side == "CRDT"
    # The other party: the payer on a credit, the payee on a debit.
    party = _at(tx, "RltdPties", "Dbtr" if credit else "Cdtr")
    name = _text(party, "Pty", "Nm") or _text(party, "Nm")
    acct = _at(tx, "RltdPties", "DbtrAcct" if credit else "CdtrAcct")
    ustrd = [c.text.strip() for c in _kids(_at(tx, "RmtInf") or ET.Element("x"), "Ustrd")
             if c.text]
    return Entry(
        entry_id=_text(ntry, "AcctSvcrRef") or _text(ntry, "NtryRef")
        or f"{report_id}#{index}",
        direction=EntryDirection(side), amount_minor=amount, currency=ccy,
        booked=status == "BOOK",
        booking_date=_date(_text(ntry, "BookgDt", "Dt") or _text(ntry, "BookgDt", "DtTm"),
                           "BookgDt"),
        value_date=_date(_text(ntry, "ValDt", "Dt"), "ValDt"),
        msg_id=_text(refs, "MsgId"), pmt_inf_id=_text(refs, "PmtInfId"),
        end_to_end_id=None if e2e in (None, "NOTPROVIDED") else e2e,
        structured_reference=_text(tx, "RmtInf", "Strd", "CdtrRefInf", "Ref"),
        unstructured=" ".join(ustrd) or None,
        return_reason=_text(tx, "RtrInf", "Rsn", "Cd") or _text(tx, "RtrInf", "Rsn", "Prtry"),
        counterparty_name=name,
        counterparty_account=_account_id(acct) or None)


def _balance(stmt: ET.Element, code: str) -> int | None:
    for bal in _kids(stmt, "Bal"):
        if _text(bal, "Tp", "CdOrPrtry", "Cd") == code:
            minor, _ = _amount(_at(bal, "Amt"), f"Bal {code}")
            return -minor if _text(bal, "CdtDbtInd") == "DBIT" else minor
    return None


def _reports(data: bytes, family: str, body: str, item: str) -> list[AccountReport]:
    root = _root(data, family)
    top = _at(root, body)
    if top is None:
        raise BankProtocolError(f"{family} has no {body}")
    out = []
    for node in _kids(top, item):
        report_id = _need(node, "Id")
        acct = _at(node, "Acct")
        account = _account_id(acct)
        if not account:
            raise BankProtocolError(f"{family} {report_id} names no account")
        entries = tuple(_entry(n, report_id, i) for i, n in enumerate(_kids(node, "Ntry"), 1))
        out.append(AccountReport(
            report_id=report_id, account=account,
            currency=_text(acct, "Ccy") or (entries[0].currency if entries else ""),
            entries=entries,
            opening_balance_minor=_balance(node, "OPBD"),
            closing_balance_minor=_balance(node, "CLBD")))
    return out


def parse_camt054(data: bytes) -> list[AccountReport]:
    """A debit/credit notification: one report per ``Ntfctn`` (no balances)."""
    return _reports(data, "camt.054", "BkToCstmrDbtCdtNtfctn", "Ntfctn")


def parse_camt053(data: bytes) -> list[AccountReport]:
    """An end-of-day statement: one report per ``Stmt`` with OPBD/CLBD balances."""
    return _reports(data, "camt.053", "BkToCstmrStmt", "Stmt")


# -- pacs.004 --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Return:
    return_id: str | None
    original_msg_id: str | None
    end_to_end_id: str
    amount_minor: int
    currency: str
    reason_code: str | None
    settlement_date: date | None


def parse_pacs004(data: bytes) -> list[Return]:
    """A payment return: one :class:`Return` per ``TxInf``, with its reason code."""
    root = _root(data, "pacs.004")
    rtr = _at(root, "PmtRtr")
    if rtr is None:
        raise BankProtocolError("pacs.004 has no PmtRtr")
    group_msg = _text(rtr, "OrgnlGrpInf", "OrgnlMsgId")
    out = []
    for tx in _kids(rtr, "TxInf"):
        amount, ccy = _amount(_at(tx, "RtrdIntrBkSttlmAmt"), "TxInf/RtrdIntrBkSttlmAmt")
        out.append(Return(
            return_id=_text(tx, "RtrId"),
            original_msg_id=_text(tx, "OrgnlGrpInf", "OrgnlMsgId") or group_msg,
            end_to_end_id=_need(tx, "OrgnlEndToEndId"),
            amount_minor=amount, currency=ccy,
            reason_code=_text(tx, "RtrRsnInf", "Rsn", "Cd")
            or _text(tx, "RtrRsnInf", "Rsn", "Prtry"),
            settlement_date=_date(_text(tx, "IntrBkSttlmDt")
                                  or _text(rtr, "GrpHdr", "IntrBkSttlmDt"),
                                  "IntrBkSttlmDt")))
    return out
