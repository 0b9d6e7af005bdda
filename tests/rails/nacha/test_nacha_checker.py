"""The NACHA gate: every broken rule is named by line and column, and achkit or mock-bank agree
the file is wrong."""

from __future__ import annotations

from datetime import UTC, date, datetime

import achkit
import pytest

from rails.nacha import AchCredit, AchFileSpec, build_ccd_plus, check_nacha
from tests.rails.iso20022.harness import MockBank

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def two_entries() -> bytes:
    return build_ccd_plus(AchFileSpec(
        odfi_routing="999999992", company_id="0000000001", company_name="ACME Corporation",
        created_at=T0, file_id_modifier="A", effective_date=date(2026, 10, 1),
        entries=(
            AchCredit("MLAAAAAAAAAAAAA", 12_345, "021000021", "12345678901", "Peer Power Inc",
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
    await bank.patch_account("ACME", format="nacha", currency="USD")
    status, prose = await bank.validate(data)
    assert status == 200, prose
    assert "2 payments, 0 findings" in prose, prose
    assert "MULLER SOHNE" in data.decode()  # ASCII, accents dropped
    # Entry hash: 02100002 + 01100001 = 3200003; credit total 12350 cents.
    control = data.decode().splitlines()[6]
    assert control[10:20] == "0003200003"
    assert control[32:44] == "000000012350"


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
