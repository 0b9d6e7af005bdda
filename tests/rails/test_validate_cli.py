"""`meterline rails validate`: the adapters' own rules, a stable --json, exit 0 only when clean."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import cli
from rails.iso20022 import sepa
from rails.iso20022.pain001 import CreditTransfer, CreditTransferFile, build_pain001
from rails.nacha import AchCredit, AchFileSpec, build_ccd_plus
from rails.port import Account, AccountScheme
from tests.rails.nacha.ach_data import ACME_ORIGIN

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
ACME = Account("ACME Corporation", AccountScheme.IBAN, "NL41MOCK0000000001")
PEER = Account("Peer", AccountScheme.IBAN, "NL30MOCK0000000005")


def pain001() -> bytes:
    return build_pain001(CreditTransferFile(
        sepa.derive_id("k", "M"), sepa.derive_id("k", "P"), T0, date(2026, 10, 1), ACME,
        (CreditTransfer(sepa.derive_id("k", "E"), 12_345, "EUR", PEER, "ML channel 1"),)))


def nacha() -> bytes:
    return build_ccd_plus(AchFileSpec(
        "999999992", ACME_ORIGIN, T0, "A", date(2026, 10, 1),
        (AchCredit("MLAAAAAAAAAAAAA", 100, "021000021", "123", "Peer", "ML CHANNEL 1"),)))


def run(tmp_path: Path, data: bytes, *args: str) -> tuple[int, str]:
    path = tmp_path / "file"
    path.write_bytes(data)
    result = CliRunner().invoke(cli, ["rails", "validate", *args, str(path)])
    return result.exit_code, result.output


@pytest.mark.parametrize("make", [pain001, nacha])
def test_clean_files_exit_zero(tmp_path: Path, make: object) -> None:
    code, out = run(tmp_path, make())  # type: ignore[operator]
    assert code == 0, out
    assert "0 error(s)" in out
    code, out = run(tmp_path, make(), "--json")  # type: ignore[operator]
    assert (code, json.loads(out)) == (0, [])


def test_broken_pain001_prints_every_finding_with_its_path(tmp_path: Path) -> None:
    broken = (pain001().replace(b"NL30MOCK0000000005", b"NL31MOCK0000000005")
              .replace(b"<CtrlSum>123.45</CtrlSum>", b"<CtrlSum>123.46</CtrlSum>", 1))
    code, out = run(tmp_path, broken)
    assert code == 1
    assert ("error AC01 at /Document/CstmrCdtTrfInitn/PmtInf[1]/CdtTrfTxInf[1]/CdtrAcct/Id/IBAN"
            in out)
    assert "error AM10 at /Document/CstmrCdtTrfInitn/GrpHdr/CtrlSum" in out

    code, out = run(tmp_path, broken, "--json")
    findings = json.loads(out)
    assert code == 1
    assert [f["code"] for f in findings] == ["AC01", "AM10"]
    assert set(findings[0]) == {"format", "path", "code", "severity", "message"}
    assert findings[0]["format"] == "pain.001.001.09"


def test_broken_nacha_prints_line_and_column(tmp_path: Path) -> None:
    rows = nacha().decode().split("\n")
    rows[4] = rows[4][:10] + "0000000001" + rows[4][20:]  # batch control entry hash
    code, out = run(tmp_path, "\n".join(rows).encode(), "--json")
    assert code == 1
    assert [(f["path"], f["code"], f["format"]) for f in json.loads(out)] == [
        ("line 5 col 11", "FF01", "nacha")]


def test_warnings_alone_pass(tmp_path: Path) -> None:
    data = pain001().replace(b'Ccy="EUR">123.45<', b'Ccy="EUR">123.4<').replace(
        b"<CtrlSum>123.45</CtrlSum>", b"<CtrlSum>123.4</CtrlSum>")
    code, out = run(tmp_path, data)
    assert code == 0, out
    assert "warning AM12" in out


def test_unknown_format_fails(tmp_path: Path) -> None:
    code, out = run(tmp_path, b"%PDF-1.7 not a payment file")
    assert code == 1
    assert "FF01" in out


def test_help_has_an_example() -> None:
    for args in (["rails", "--help"], ["rails", "validate", "--help"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0
        assert "Example:" in result.output
        assert "meterline rails validate" in result.output
