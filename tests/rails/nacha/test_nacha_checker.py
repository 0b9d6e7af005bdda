"""The NACHA gate: every broken rule is named by line and column, and achkit or mock-bank agree
the file is wrong."""

from __future__ import annotations

from datetime import UTC, date, datetime

import achkit
import pytest

from rails.nacha import (
    SAME_DAY_LIMIT_CENTS,
    AchCredit,
    AchFileSpec,
    Originator,
    build_ccd_plus,
    check_nacha,
    originator_findings,
)
from rails.validate import is_clean
from tests.rails.iso20022.harness import MockBank
from tests.rails.nacha.ach_data import ACME_ORIGIN, COMPANY_IDS

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def two_entries(amount: int = 12_345, effective: date = date(2026, 10, 1),
                originator: Originator = ACME_ORIGIN) -> bytes:
    return build_ccd_plus(AchFileSpec(
        odfi_routing="999999992", originator=originator,
        created_at=T0, file_id_modifier="A", effective_date=effective,
        entries=(
            AchCredit("MLAAAAAAAAAAAAA", amount, "021000021", "12345678901", "Peer Power Inc",
                      "ML CHANNEL A"),
            AchCredit("MLBBBBBBBBBBBBB", 5, "011000015", "42", "Müller Söhne", "ML CHANNEL B"),
        )))


def _replace(data: bytes, line: int, col: int, text: str) -> bytes:
    rows = data.decode().split("\n")
    row = rows[line - 1]
    rows[line - 1] = row[:col - 1] + text + row[col - 1 + len(text):]
    return "\n".join(rows).encode()


async def test_clean_two_entry_file(bank: MockBank) -> None:
    data = two_entries()
    assert check_nacha(data) == []
    assert achkit.validate(data.decode())["ok"]
    await bank.patch_account("ACME", format="nacha", currency="USD",
                             account_number=COMPANY_IDS["ACME"])
    status, prose = await bank.validate(data)
    assert status == 200, prose
    assert "2 payments, 0 findings" in prose, prose
    assert "MULLER SOHNE" in data.decode()  # ASCII, accents dropped
    # Entry hash: 02100002 + 01100001 = 3200003; credit total 12350 cents.
    control = data.decode().splitlines()[6]
    assert control[10:20] == "0003200003"
    assert control[32:44] == "000000012350"
    header, batch = data.decode().splitlines()[:2]
    assert header[3:13] == " 999999992"  # immediate destination: the ODFI
    assert header[13:23] == "1470000001"  # immediate origin as the ODFI assigned it
    assert header[40:63] == "MOCK BANK".ljust(23)
    assert header[63:86] == "ACME CORPORATION".ljust(23)
    assert batch[40:50] == "1470000001"  # company identification: 1 + EIN


@pytest.mark.parametrize(
    ("line", "col", "text", "where", "code", "achkit_code"),
    [
        (7, 11, "0003200004", "line 7 col 11", "FF01", "BAD_ENTRY_HASH"),
        (7, 33, "000000012351", "line 7 col 33", "AM10", "BAD_BATCH_CREDIT"),
        (7, 5, "000005", "line 7 col 5", "AM18", "BAD_BATCH_COUNT"),
        (3, 12, "2", "line 3 col 12", "RC01", "BAD_ROUTING_CHECKSUM"),
        (8, 2, "000002", "line 8 col 2", "AM18", "BAD_FILE_BATCH_COUNT"),
        (3, 2, "27", "line 3 col 2", "FF01", None),  # a debit in a credits-only batch
        (4, 2, "99", "line 4 col 2", "FF01", None),  # not a 05 addenda
        (3, 79, "0", "line 3 col 79", "FF01", None),  # indicator 0 but an addenda follows
    ],
)
def test_each_broken_rule_is_named_by_line_and_column(
    line: int, col: int, text: str, where: str, code: str, achkit_code: str | None
) -> None:
    broken = _replace(two_entries(), line, col, text)
    findings = check_nacha(broken)
    assert (where, code) in {(f.path, f.code) for f in findings}, findings
    if achkit_code is not None:
        assert achkit_code in {e["code"] for e in achkit.validate(broken.decode())["errors"]}


def test_short_line_bad_byte_and_missing_padding() -> None:
    data = two_entries()
    rows = data.split(b"\n")
    short = b"\n".join([rows[0][:90], *rows[1:]])
    assert ("line 1 col 1", "FF01") in {(f.path, f.code) for f in check_nacha(short)}
    accented = data.replace(b"MULLER", "MÜLLER".encode("latin-1"))
    msgs = [f for f in check_nacha(accented) if "0xDC" in f.message]
    assert msgs
    assert msgs[0].path == "line 5 col 56"
    unpadded = b"\n".join(rows[:8]) + b"\n"
    findings = check_nacha(unpadded)
    assert any("lines of nines" in f.message for f in findings)
    assert [f.path for f in findings] == ["line 9 col 1"]


def test_garbage_is_findings_not_exceptions() -> None:
    for data in (b"", b"hello", b"5" * 94 + b"\n", b"1" + b"0" * 93 + b"\n"):
        assert check_nacha(data)


@pytest.mark.parametrize(
    ("line", "col", "text", "where", "problem"),
    [
        (1, 14, "12345     ", "line 1 col 14", "immediate origin"),  # account, left-justified
        (1, 4, "0999999992", "line 1 col 4", "routing number"),  # no leading space
        (1, 41, " " * 23, "line 1 col 41", "immediate destination name is blank"),
        (1, 64, " R  CAFE CREME &       ", "line 1 col 64", "left-justified"),
        (2, 41, "12345     ", "line 2 col 41", "company identification"),
        (2, 41, "1ABCDEFGHI", "line 2 col 41", "1 + a 9-digit EIN"),
        (2, 5, "  ACME          ", "line 2 col 5", "left-justified"),
        (3, 55, " PEER POWER INC       ", "line 3 col 55", "left-justified"),
    ],
)
def test_what_an_odfi_refuses_beyond_the_format(
    line: int, col: int, text: str, where: str, problem: str
) -> None:
    broken = _replace(two_entries(), line, col, text)
    found = {(f.path, f.code): f.message for f in check_nacha(broken)}
    messages = [m for (path, _), m in found.items() if path == where]
    assert any(problem in m for m in messages), found


def test_over_the_same_day_limit_needs_a_later_effective_date() -> None:
    over = SAME_DAY_LIMIT_CENTS + 1
    same_day = check_nacha(two_entries(amount=over))
    assert [(f.path, f.code) for f in same_day] == [("line 3 col 30", "AM02")]
    assert check_nacha(two_entries(amount=SAME_DAY_LIMIT_CENTS)) == []
    assert check_nacha(two_entries(amount=over, effective=date(2026, 10, 2))) == []


def test_originator_settings_are_held_to_the_same_rules() -> None:
    assert originator_findings(ACME_ORIGIN) == []
    bad = Originator(immediate_destination="999999992", immediate_destination_name="",
                     immediate_origin="12345", immediate_origin_name="ACME",
                     company_id="1ABCDEFGHI", company_name="ÆØÅ")
    assert {f.path for f in originator_findings(bad)} == {
        "immediate_destination", "immediate_destination_name", "immediate_origin",
        "company_id"}


def test_names_are_transliterated_not_blanked() -> None:
    text = build_ccd_plus(AchFileSpec(
        odfi_routing="999999992", originator=Originator(
            " 999999992", "Bänk Ørsted", "1470000001", "Ærø Café Crème & Co",
            "1470000001", "Müller & Söhne Straße"),
        created_at=T0, file_id_modifier="A", effective_date=date(2026, 10, 1),
        entries=(AchCredit("MLAAAAAAAAAAAAA", 1, "021000021", "1", "Παπαδόπουλος Γεώργιος",
                           "ML CHANNEL A"),))).decode()
    header, batch, entry = text.splitlines()[:3]
    assert header[40:63].rstrip() == "BANK ORSTED"
    assert header[63:86].rstrip() == "AERO CAFE CREME & CO"
    assert batch[4:20] == "MULLER & SOHNE S"
    assert entry[54:76] == "PAPADOPOULOS GEORGIOS "
    assert check_nacha(text.encode()) == []
    assert achkit.validate(text)["ok"]


def test_an_effective_date_on_a_fed_holiday_is_a_warning_and_a_non_date_an_error() -> None:
    """NACHA lets a file ask for a holiday (the operator settles it the next banking day), so
    the gate warns; a date that does not exist is refused."""
    holiday = check_nacha(two_entries(effective=date(2026, 10, 12)))  # Columbus Day
    assert [(f.path, f.code, f.severity) for f in holiday] == [
        ("line 2 col 70", "DT01", "warning")]
    assert "settles on 2026-10-13" in holiday[0].message
    assert is_clean(holiday)
    broken = check_nacha(_replace(two_entries(), 2, 70, "261399"))
    assert ("line 2 col 70", "DT01", "error") in [(f.path, f.code, f.severity) for f in broken]
    assert not is_clean(broken)
