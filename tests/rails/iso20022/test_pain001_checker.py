"""The pain.001 gate: what it passes the official XSD and mock-bank pass; what it refuses,
it names by element path and reason code."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import xmlschema

from rails.iso20022 import sepa
from rails.iso20022.pain001 import (
    XSD_DIR,
    CreditTransfer,
    CreditTransferFile,
    build_pain001,
    check_pain001,
    is_creditor_reference,
)
from rails.port import Account, AccountScheme
from tests.rails.iso20022.harness import MockBank
from tests.rails.iso20022.sepa_data import ACME, GLOBEX, PEER

PAIN001 = xmlschema.XMLSchema(str(XSD_DIR / "pain.001.001.09.xsd"))
GRP = "/Document/CstmrCdtTrfInitn/GrpHdr"
PMT = "/Document/CstmrCdtTrfInitn/PmtInf[1]"


def three_payments() -> bytes:
    """One file, three transactions: a transliterated name, an RF reference, a BIC'd IBAN."""
    created = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    return build_pain001(CreditTransferFile(
        msg_id=sepa.derive_id("batch", "M"), pmt_inf_id=sepa.derive_id("batch", "P"),
        created_at=created, execution_date=date(2026, 10, 1), debtor=ACME,
        transfers=(
            CreditTransfer(sepa.derive_id("a", "E"), 1, "EUR",
                           Account("Jürgen Müller & Söhne Straße GmbH", AccountScheme.IBAN,
                                   PEER.identification), "ML channel a"),
            CreditTransfer(sepa.derive_id("b", "E"), 99_999, "EUR", GLOBEX,
                           "RF18539007547034"),
            CreditTransfer(sepa.derive_id("c", "E"), 100_000_00, "EUR",
                           Account("Commerz", AccountScheme.IBAN, "DE89370400440532013000"),
                           "ML channel c"),
        )))


async def test_multi_transaction_file_passes_xsd_profile_and_mock_bank(bank: MockBank) -> None:
    data = three_payments()
    assert PAIN001.is_valid(data.decode())
    assert check_pain001(data) == []
    status, prose = await bank.validate(data)
    assert status == 200, prose
    assert "3 payments, 0 findings" in prose, prose
    text = data.decode()
    assert "<NbOfTxs>3</NbOfTxs>" in text
    assert "<CtrlSum>101000.00</CtrlSum>" in text
    assert "<Nm>Jurgen Muller + Sohne Strasse GmbH</Nm>" in text
    assert "<BICFI>COBADEFFXXX</BICFI>" in text  # schwifty's registry, from the IBAN
    assert "<Cd>SCOR</Cd>" in text
    assert "<Ref>RF18539007547034</Ref>" in text


def test_ids_are_deterministic_short_and_in_the_sepa_set() -> None:
    ids = {sepa.derive_id(k, kind) for k in ("a", "b", "ch/1:close") for kind in "MPE"}
    assert len(ids) == 9
    for value in ids:
        assert len(value) <= 31
        assert sepa.SEPA_CHARSET.fullmatch(value)
    assert sepa.derive_id("a", "E") == sepa.derive_id("a", "E")


def test_rf_reference_check_digits() -> None:
    assert is_creditor_reference("RF18539007547034")
    assert not is_creditor_reference("RF19539007547034")
    assert not is_creditor_reference("ML channel a")


@pytest.mark.parametrize(
    ("old", "new", "path", "code", "bank_code"),
    [
        (b"<CtrlSum>101000.00</CtrlSum>", b"<CtrlSum>101000.01</CtrlSum>",
         f"{GRP}/CtrlSum", "AM10", "AM10"),
        (b"<NbOfTxs>3</NbOfTxs>", b"<NbOfTxs>4</NbOfTxs>", f"{GRP}/NbOfTxs", "AM18", "AM18"),
        (b"NL30MOCK0000000005", b"NL31MOCK0000000005",
         f"{PMT}/CdtTrfTxInf[1]/CdtrAcct/Id/IBAN", "AC01", "AC01"),
        (b'Ccy="EUR">0.01<', b'Ccy="EUR">0.011<',
         f"{PMT}/CdtTrfTxInf[1]/Amt/InstdAmt", "AM12", None),
        (b'Ccy="EUR">0.01<', b'Ccy="USD">0.01<',
         f"{PMT}/CdtTrfTxInf[1]/Amt/InstdAmt", "AM03", None),  # mock decides AM03 on receipt
        (b"<Nm>Jurgen", "<Nm>Jürgen".encode(), f"{PMT}/CdtTrfTxInf[1]/Cdtr/Nm", "FF01", None),
        (b"<Cd>SEPA</Cd>", b"<Cd>NURG</Cd>", f"{PMT}/PmtTpInf/SvcLvl/Cd", "FF01", None),
        (b"<BICFI>COBADEFFXXX</BICFI>", b"<BICFI>COBADE</BICFI>",
         f"{PMT}/CdtTrfTxInf[3]/CdtrAgt/FinInstnId/BICFI", "FF01", None),
    ],
)
async def test_each_broken_rule_is_named_by_path_and_code(
    bank: MockBank, old: bytes, new: bytes, path: str, code: str, bank_code: str | None
) -> None:
    data = three_payments()
    assert old in data
    broken = data.replace(old, new, 1)
    findings = check_pain001(broken)
    assert (path, code) in {(f.path, f.code) for f in findings if f.severity == "error"}, findings
    if bank_code is not None:  # the bank's own validator agrees it is wrong
        status, prose = await bank.validate(broken)
        assert status == 422, prose
        assert bank_code in prose, prose


def test_the_xsd_alone_would_pass_what_the_profile_refuses() -> None:
    """Why the profile exists: the XSD accepts USD, 3 decimals and a bad IBAN check digit."""
    broken = (three_payments()
              .replace(b'Ccy="EUR">0.01<', b'Ccy="USD">0.011<', 1)
              .replace(b"NL30MOCK0000000005", b"NL31MOCK0000000005"))
    assert PAIN001.is_valid(broken.decode())
    assert {f.code for f in check_pain001(broken)} >= {"AM03", "AM12", "AC01"}


@pytest.mark.parametrize("data", [
    b"",
    b"<Document",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
    b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"/>',
])
def test_unreadable_or_hostile_files_are_findings_not_exceptions(data: bytes) -> None:
    findings = check_pain001(data)
    assert findings
    assert all(f.code == "FF01" for f in findings)


def _one(debtor: Account, creditor: Account, address: sepa.PostalAddress | None) -> bytes:
    return build_pain001(CreditTransferFile(
        msg_id=sepa.derive_id("reach", "M"), pmt_inf_id=sepa.derive_id("reach", "P"),
        created_at=datetime(2026, 10, 1, 9, 0, tzinfo=UTC), execution_date=date(2026, 10, 1),
        debtor=debtor, debtor_address=address,
        transfers=(CreditTransfer(sepa.derive_id("reach", "E"), 100, "EUR", creditor,
                                  "ML channel r"),)))


def test_a_non_eea_debtor_needs_its_address_even_paying_inside_the_eea() -> None:
    """The reach rules look at both sides: a Swiss debtor paying a German creditor must write
    its postal address; the same file with it is clean, and the address is transliterated."""
    zurich = Account("Carrier AG", AccountScheme.IBAN, "CH9300762011623852957", "UBSWCHZH80A")
    bare = check_pain001(_one(zurich, GLOBEX, None))
    assert {(f.path, f.code) for f in bare} == {
        (f"{PMT}/Dbtr/PstlAdr/TwnNm", "FF01"), (f"{PMT}/Dbtr/PstlAdr/Ctry", "FF01")}
    address = sepa.PostalAddress("Bahnhofstraße", "1", "8001", "Zürich", "CH")
    data = _one(zurich, GLOBEX, address)
    assert check_pain001(data) == []
    assert PAIN001.is_valid(data.decode())
    assert "<StrtNm>Bahnhofstrasse</StrtNm>" in data.decode()
    assert "<TwnNm>Zurich</TwnNm>" in data.decode()


def test_an_eea_payment_needs_neither_address_nor_creditor_bic() -> None:
    assert check_pain001(_one(ACME, GLOBEX, None)) == []
    assert "PstlAdr" not in _one(ACME, GLOBEX, None).decode()


def test_a_creditor_bic_that_is_not_the_payees_bank_is_refused_in_the_file() -> None:
    """The checker holds every CdtrAgt BIC to the creditor's IBAN (ADR 0230): another country's
    bank, or a bank the registry contradicts, is RC01 at the BIC; the IBAN's own bank passes."""
    address = sepa.PostalAddress("Herengracht", "182", "1016 BR", "Amsterdam", "NL")
    for bic, why in (("BNPAFRPPXXX", "is of a bank in FR"),
                     ("DEUTDEFFXXX", "the bank registry has COBADEFFXXX")):
        iban = "CH9300762011623852957" if bic.startswith("BNPA") else "DE89370400440532013000"
        findings = check_pain001(_one(ACME, Account("Payee", AccountScheme.IBAN, iban, bic),
                                      address))
        assert [(f.path, f.code) for f in findings] == [
            (f"{PMT}/CdtTrfTxInf[1]/CdtrAgt/FinInstnId/BICFI", "RC01")], findings
        assert why in findings[0].message
    good = Account("Payee", AccountScheme.IBAN, "DE89370400440532013000", "COBADEFFXXX")
    assert check_pain001(_one(ACME, good, address)) == []
