"""The directory-drop file channel: atomic files out, each bank file read once, and a SEPA
payment over it settled by a real mock-bank that reads our outbox and writes our inbox."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest

from rails.errors import IdempotencyConflict
from rails.iso20022 import SepaCreditTransferRail
from rails.port import PaymentStatus
from rails.transport import FileTransport
from rails.transport_directory import DirectoryTransport, TransportError, classify
from tests.rails.iso20022.harness import MockBank, mock_bank
from tests.rails.iso20022.sepa_data import ACME, bank_now, pay

CAMT054 = (b'<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:'
           b'camt.054.001.08"><BkToCstmrDbtCdtNtfctn/></Document>')


def channel(tmp_path: Path, **kw: float) -> DirectoryTransport:
    return DirectoryTransport(tmp_path / "out", tmp_path / "in", tmp_path / "journal.db",
                              settle_s=kw.get("settle_s", 0.0))


async def test_an_outgoing_file_appears_whole_under_its_name_and_only_once(
    tmp_path: Path
) -> None:
    t = channel(tmp_path)
    assert isinstance(t, FileTransport)
    assert await t.send("sepa-ct-1.xml", b"<pain/>", "application/xml") is None
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["sepa-ct-1.xml"]
    assert (tmp_path / "out" / "sepa-ct-1.xml").read_bytes() == b"<pain/>"
    # the bank took it; a retry with the same bytes does not put it back
    (tmp_path / "out" / "sepa-ct-1.xml").unlink()
    await t.send("sepa-ct-1.xml", b"<pain/>", "application/xml")
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(IdempotencyConflict):
        await t.send("sepa-ct-1.xml", b"<other/>", "application/xml")
    for bad in ("../escape.xml", ".hidden", "x.tmp", ""):
        with pytest.raises(TransportError):
            await t.send(bad, b"x", "application/xml")
    await t.aclose()


async def test_each_inbox_file_is_read_once_moved_aside_and_remembered_across_a_restart(
    tmp_path: Path
) -> None:
    t = channel(tmp_path)
    inbox = tmp_path / "in"
    (inbox / "report-1.xml").write_bytes(CAMT054)
    (inbox / "bai2.statement-ACME-2.bai2").write_bytes(b"01,BANK,ACME,261001,0900,1,,,2/\n")
    (inbox / "half.xml.part").write_bytes(b"<Docu")
    (inbox / ".hidden.xml").write_bytes(CAMT054)
    first = await t.messages("")
    assert [(m.id, m.type) for m in first] == [(1, "bai2.statement"), (2, "camt.054.001.08")]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == [
        "bai2.statement-ACME-2.bai2", "report-1.xml"]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
        ".hidden.xml", "half.xml.part"]
    assert [m.id for m in await t.messages("camt.054")] == [2]
    assert await t.messages("camt.054", after_id=2) == []
    await t.aclose()
    again = channel(tmp_path)  # a restart sees the same messages, reads no file again
    assert [m.body for m in await again.messages("")] == [m.body for m in first]
    await again.aclose()


async def test_a_crash_between_journal_and_move_does_not_read_the_file_twice(
    tmp_path: Path
) -> None:
    t = channel(tmp_path)
    (tmp_path / "in" / "r.xml").write_bytes(CAMT054)
    await t.messages("")
    # as if the move had not happened: the file is back in the inbox
    os.replace(tmp_path / "in" / "processed" / "r.xml", tmp_path / "in" / "r.xml")
    assert [m.id for m in await t.messages("")] == [1]
    assert not (tmp_path / "in" / "r.xml").exists()
    await t.aclose()


async def test_unreadable_and_oversized_files_go_to_failed_with_the_reason(
    tmp_path: Path
) -> None:
    t = DirectoryTransport(tmp_path / "out", tmp_path / "in", tmp_path / "j.db",
                           settle_s=0.0, max_file_bytes=1000)
    (tmp_path / "in" / "mystery.dat").write_bytes(b"hello")
    (tmp_path / "in" / "big.xml").write_bytes(CAMT054 + b" " * 1000)
    assert await t.messages("") == []
    failed = tmp_path / "in" / "failed"
    assert "neither an ISO 20022" in (failed / "mystery.dat.reason.txt").read_text()
    assert "more than 1000" in (failed / "big.xml.reason.txt").read_text()
    await t.aclose()


async def test_a_file_still_settling_is_left_for_the_next_pass(tmp_path: Path) -> None:
    t = channel(tmp_path, settle_s=30.0)
    (tmp_path / "in" / "r.xml").write_bytes(CAMT054)
    assert await t.messages("") == []
    old = os.stat(tmp_path / "in" / "r.xml").st_mtime - 60
    os.utime(tmp_path / "in" / "r.xml", (old, old))
    assert len(await t.messages("")) == 1
    await t.aclose()


def test_one_folder_for_both_or_one_inside_the_other_is_refused(tmp_path: Path) -> None:
    for out, inbox in ((tmp_path / "x", tmp_path / "x"), (tmp_path / "x", tmp_path / "x" / "in"),
                       (tmp_path / "y" / "out", tmp_path / "y")):
        with pytest.raises(TransportError):
            DirectoryTransport(out, inbox, tmp_path / "j.db")


def test_types_come_from_the_iso_namespace_or_the_name() -> None:
    assert classify("anything.xml", CAMT054) == "camt.054.001.08"
    assert classify("nacha.ack-bank-3.ach", b"101 ...") == "nacha.ack"
    assert classify("statement.txt", b"01,BANK") is None


async def test_a_sepa_payment_over_the_folders_is_booked_by_the_banks_statement(
    tmp_path: Path
) -> None:
    drop, pickup = tmp_path / "bank-drop", tmp_path / "bank-pickup"
    with mock_bank(tmp_path, "--drop-dir", str(drop), "--pickup-dir", str(pickup),
                   "--drop-interval-ms", "100", "--drop-settle-ms", "0") as bank:
        rail = SepaCreditTransferRail(
            transport=DirectoryTransport(drop, pickup, tmp_path / "journal.db", settle_s=0.0),
            account=ACME, store_path=tmp_path / "rail.db", clock=bank_now,
            booking_deadline=timedelta(days=2))
        try:
            record = await rail.submit(pay("chan-9/payout/0"))
            assert record.status is PaymentStatus.PENDING  # a folder answers later
            for _ in range(100):
                record = await rail.status("chan-9/payout/0")
                if record.status.final:
                    break
                await asyncio.sleep(0.1)
            assert record.status is PaymentStatus.BOOKED
            assert record.end_to_end_id in {
                p["end_to_end_id"] for p in await _bank_payments(bank)}
            read = sorted(p.name for p in (pickup / "processed").iterdir())
            assert any("camt.054" in n for n in read)
            assert any("pain.002" in n for n in read)
            # the file sent is gone from the outbox into the bank's processed folder
            assert [p.name for p in (drop / "processed").iterdir()] == [
                rail.file_name(rail._store.get("chan-9/payout/0"))]  # type: ignore[arg-type]
            again = await rail.submit(pay("chan-9/payout/0"))
            assert again.status is PaymentStatus.BOOKED  # the store answers; nothing re-sent
            assert len(await _bank_payments(bank)) == 1
        finally:
            await rail.aclose()


async def _bank_payments(bank: MockBank) -> list[dict[str, object]]:
    status, body = await bank.call("GET", "/_mock/payments")
    assert status == 200, body
    return list(body)
