"""Golden files: every case's bytes are what the adapter sends, byte for byte, and every file
passes the official XSD (pain.001) or achkit (NACHA), mock-bank, and the project's own checks
(``rails.validate.validate_file``: the same gate the adapters and ``meterline rails validate``
use, holding the SEPA reach rules and the ODFI rules). Refused cases pin the findings instead.

Regenerate after a deliberate change: ``.venv/bin/python -m tests.rails.golden.regenerate``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

import achkit
import pytest
import xmlschema

from rails.iso20022 import sepa
from rails.iso20022.pain001 import XSD_DIR, iter_text, parse_untrusted
from rails.nacha import SAME_DAY_LIMIT_CENTS
from rails.nacha.holidays import is_banking_day
from rails.validate import FileFormat, validate_file
from tests.rails.golden.cases import (
    ACH_COMPANY_ID,
    ACH_DEBTOR,
    CASES,
    FILES,
    Case,
    build,
)
from tests.rails.iso20022.harness import MockBank, mock_bank

PAIN001 = xmlschema.XMLSchema(str(XSD_DIR / "pain.001.001.09.xsd"))
SENT = [c for c in CASES if not c.refused]


@pytest.fixture(scope="module")
def banks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, MockBank]]:
    """Two real mock-banks: one banking ACME in SEPA, one in NACHA (known by its company id)."""
    with mock_bank(tmp_path_factory.mktemp("sepa-bank")) as sepa_bank, \
            mock_bank(tmp_path_factory.mktemp("ach-bank")) as ach_bank:
        asyncio.run(ach_bank.patch_account("ACME", format="nacha", currency="USD",
                                           account_number=ACH_COMPANY_ID))
        yield {"sepa": sepa_bank, "nacha": ach_bank}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_adapter_writes_the_golden_bytes(case: Case) -> None:
    assert case.path.exists(), f"no golden file {case.path.name}: regenerate"
    assert build(case) == case.path.read_bytes()


def test_every_golden_file_has_a_case() -> None:
    assert {p.name for p in FILES.iterdir()} == {c.path.name for c in CASES}


@pytest.mark.parametrize("case", SENT, ids=lambda c: c.name)
async def test_every_sent_file_passes_xsd_or_achkit_mock_bank_and_our_checks(
    case: Case, banks: dict[str, MockBank]
) -> None:
    data = case.path.read_bytes()
    fmt, findings = validate_file(data)
    assert fmt is (FileFormat.PAIN001 if case.rail == "sepa" else FileFormat.NACHA)
    assert findings == [], findings
    if case.rail == "sepa":
        assert PAIN001.is_valid(data.decode())
    else:
        assert achkit.validate(data.decode()) == {"ok": True, "errors": []}
    status, prose = await banks[case.rail].validate(data)
    assert status == 200, prose
    assert "0 findings" in prose, prose


@pytest.mark.parametrize("case", [c for c in CASES if c.refused], ids=lambda c: c.name)
def test_a_refused_case_names_its_rule(case: Case) -> None:
    text = case.path.read_text()
    expected = {
        "sepa-non-eea-gb-without-address": "debtor's postal address (TwnNm) is required",
        "sepa-non-eea-ch-without-bic": "creditor agent's BIC is required",
        "sepa-non-eea-ch-foreign-bic": "is of a bank in FR, but IBAN CH93",
        "sepa-wrong-bank-bic": "the bank registry has COBADEFFXXX",
        "sepa-non-sepa-tr": "TR is not a SEPA country",
        "sepa-non-sepa-br": "BR is not a SEPA country",
        "ach-999999999.99-refused": "AM02 amount_minor",
        "ach-bad-routing-refused": "fails the ABA check digit",
    }[case.name]
    assert text.startswith("error ")
    assert expected in text


def _sepa_names(data: bytes) -> list[str]:
    return list(iter_text(parse_untrusted(data), "Nm"))


@pytest.mark.parametrize(("name", "creditor"), [
    ("sepa-non-ascii", "Jurgen Muller + Sohne Strasse GmbH, Aero Orsted"),
    ("sepa-greek", "Papadopoulos Georgios Evangelos"),
    ("sepa-cyrillic", "Shtukin i Tsvetkov EOOD"),
    ("sepa-98-char-name",
     "Internationale Spedition und Kontraktlogistik Nordwest GmbH + Co. KG N"),
])
def test_sepa_names_are_transliterated_by_the_stated_standards(name: str, creditor: str
                                                               ) -> None:
    names = _sepa_names((FILES / f"{name}.xml").read_bytes())
    assert names[-1] == creditor
    assert len(creditor) <= sepa.MAX_NAME


@pytest.mark.parametrize(("name", "individual"), [
    ("ach-non-ascii", "AERO CAFE CREME & MULLE"[:22]),
    ("ach-greek", "PAPADOPOULOS GEORGIOS"),
    ("ach-cyrillic", "SHTUKIN TSVETKOV"),
    ("ach-98-char-name", "INTERNATIONALE SPEDITI"),
])
def test_ach_names_are_transliterated_and_left_justified(name: str, individual: str) -> None:
    entry = (FILES / f"{name}.ach").read_text().splitlines()[2]
    assert entry[54:76] == individual.ljust(22)


def test_sepa_reach_rules_hold_in_every_sent_file() -> None:
    """Per country class: the debtor's address where a non-EEA SEPA country is involved, the
    creditor's BIC there, and no creditor outside SEPA (the files, read back)."""
    seen = set()
    for case in (c for c in SENT if c.rail == "sepa"):
        data = case.path.read_bytes()
        root = parse_untrusted(data)
        creditor = list(iter_text(root, "IBAN"))[-1]
        kind = sepa.country_class(creditor)
        seen.add(kind)
        assert kind is not sepa.CountryClass.NOT_SEPA
        assert list(iter_text(root, "TwnNm")) == ["Amsterdam"]  # configured: always written
        bics = list(iter_text(root, "BICFI"))
        if kind is sepa.CountryClass.NON_EEA_SEPA:
            assert bics, case.name
    assert seen == {sepa.CountryClass.EEA_EURO, sepa.CountryClass.EEA_NON_EURO,
                    sepa.CountryClass.NON_EEA_SEPA}


def test_ach_identity_and_same_day_rules_hold_in_every_sent_file() -> None:
    routings = set()
    for case in (c for c in SENT if c.rail == "nacha"):
        header, batch, entry = case.path.read_text().splitlines()[:3]
        assert header[13:23] == batch[40:50] == ACH_COMPANY_ID
        assert ACH_DEBTOR.identification not in (header[13:23], batch[40:50])
        routings.add(entry[3:12])
        created, effective = header[23:29], batch[69:75]
        assert is_banking_day(datetime.strptime(effective, "%y%m%d").date()), case.name
        if case.execution is not None:
            assert effective > case.execution.strftime("%y%m%d"), case.name  # a holiday
        elif int(entry[29:39]) > SAME_DAY_LIMIT_CENTS:
            assert effective > created, case.name
        else:
            assert effective == created, case.name
    assert len(routings) >= 5

