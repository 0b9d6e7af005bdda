"""The ACH rail over the directory-drop file channel: NACHA files written atomically into the
outbox a real mock-bank reads, its acknowledgements, camt.054 notifications, BAI2 statements and
return files read from the inbox it writes. No HTTP between rail and bank; the payment is
``booked`` only once a statement entry in the inbox shows it, and the rail is built from a
``[rails.nacha] transport = "directory"`` section the way the node builds it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from rails.nacha import AchCreditRail
from rails.port import PaymentRecord, PaymentStatus
from rails.registry import RailContext, build_rail, entry
from rails.settings import NachaSettings, RailConfigError, parse_settings
from rails.transport_directory import DirectoryTransport
from tests.rails.iso20022.harness import MockBank, mock_bank
from tests.rails.nacha.ach_data import ACME, ACME_ORIGIN, COMPANY_IDS, bank_now, pay


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "bank-drop", tmp_path / "bank-pickup"


@pytest.fixture
def dropbank(tmp_path: Path, folders: tuple[Path, Path]) -> Iterator[MockBank]:
    drop, pickup = folders
    with mock_bank(tmp_path, "--drop-dir", str(drop), "--pickup-dir", str(pickup),
                   "--drop-interval-ms", "100", "--drop-settle-ms", "0") as bank:
        yield bank


async def _nacha_accounts(bank: MockBank) -> None:
    for account in ("ACME", "GLOBEX"):
        await bank.patch_account(account, format="nacha", currency="USD",
                                 account_number=COMPANY_IDS[account])


def _rail(tmp_path: Path, folders: tuple[Path, Path]) -> AchCreditRail:
    drop, pickup = folders
    return AchCreditRail(
        transport=DirectoryTransport(drop, pickup, tmp_path / "channel.db", settle_s=0.0),
        account=ACME, originator=ACME_ORIGIN, store_path=tmp_path / "ach.db", clock=bank_now,
        booking_deadline=timedelta(days=2))


async def _until_final(rail: AchCreditRail, key: str) -> PaymentRecord:
    record = await rail.status(key)
    for _ in range(100):
        if record.status.final:
            break
        await asyncio.sleep(0.1)
        record = await rail.status(key)
    return record


async def test_a_nacha_payment_over_the_folders_is_booked_only_by_a_statement_entry(
    tmp_path: Path, folders: tuple[Path, Path], dropbank: MockBank
) -> None:
    await _nacha_accounts(dropbank)
    drop, pickup = folders
    rail = _rail(tmp_path, folders)
    try:
        record = await rail.submit(pay("chan-7/payout/0"))
        assert record.status is PaymentStatus.PENDING  # a folder answers later
        name = rail.file_name(rail._store.get("chan-7/payout/0"))  # type: ignore[arg-type]
        assert name.startswith("ach-ccd-")
        assert name.endswith(".ach")
        record = await _until_final(rail, "chan-7/payout/0")
        assert record.status is PaymentStatus.BOOKED
        # mock-bank took the file from our outbox, and its answers came through our inbox
        assert [p.name for p in (drop / "processed").iterdir()] == [name]
        read = sorted(p.name for p in (pickup / "processed").iterdir())
        assert any(n.startswith("nacha.ack-") for n in read), read
        assert any(n.startswith("camt.054") for n in read), read
        # the statement match is what booked it: by individual id and amount
        recon = await rail.reconcile()
        assert set(recon.booked) == {"chan-7/payout/0"}
        assert recon.booked["chan-7/payout/0"].end_to_end_id == record.end_to_end_id
        assert recon.booked["chan-7/payout/0"].amount_minor == 12_345
        assert recon.differences == ()
        # a retry after a restart sends nothing twice
        await rail.aclose()
        rail = _rail(tmp_path, folders)
        again = await rail.submit(pay("chan-7/payout/0"))
        assert again.status is PaymentStatus.BOOKED
        assert len(await dropbank.payments_with(record.end_to_end_id)) == 1
    finally:
        await rail.aclose()


async def test_a_return_file_in_the_inbox_marks_the_payment_returned(
    tmp_path: Path, folders: tuple[Path, Path], dropbank: MockBank
) -> None:
    await _nacha_accounts(dropbank)
    await dropbank.patch_account("ACME", behaviour="return-later",
                                 parameters={"days": 2, "reason": "R03"})
    rail = _rail(tmp_path, folders)
    try:
        await rail.submit(pay("chan-8/payout/0"))
        assert (await _until_final(rail, "chan-8/payout/0")).status is PaymentStatus.BOOKED
        await dropbank.advance(5)
        record = await rail.status("chan-8/payout/0")
        for _ in range(50):
            if record.status is PaymentStatus.RETURNED:
                break
            await asyncio.sleep(0.1)
            record = await rail.status("chan-8/payout/0")
        assert (record.status, record.reason_code) == (PaymentStatus.RETURNED, "R03")
        assert any(p.name.startswith("nacha.return-")
                   for p in (folders[1] / "processed").iterdir())
    finally:
        await rail.aclose()


NACHA_SECTION = {
    "url": "https://odfi.example", "identification": "999999992:0000000001",
    "immediate_destination": " 999999992", "immediate_destination_name": "MOCK BANK",
    "immediate_origin": "1470000001", "immediate_origin_name": "ACME CORPORATION",
    "company_id": "1470000001", "company_name": "ACME CORPORATION",
}


def test_the_directory_transport_is_chosen_in_the_nacha_section(tmp_path: Path) -> None:
    settings = parse_settings(NachaSettings, {**NACHA_SECTION, "transport": "directory",
                                              "outbox_dir": "out", "inbox_dir": "in",
                                              "booking_deadline_s": 86_400}, "rails.nacha")
    rail = build_rail("nacha", settings, RailContext(tmp_path, "ACME"))
    assert isinstance(rail, AchCreditRail)
    assert isinstance(rail._bank, DirectoryTransport)
    assert rail._bank.outbox == (tmp_path / "out").resolve()
    assert rail.booking_deadline == timedelta(days=1)
    assert (tmp_path / "rail-nacha-channel.sqlite").exists()
    asyncio.run(rail.aclose())
    assert entry("nacha").settings is NachaSettings
    for bad, why in (({"transport": "sftp"}, "not directory or mock-bank"),
                     ({"transport": "directory"}, "needs outbox_dir and inbox_dir"),
                     ({"booking_deadline_s": 0}, "must be positive")):
        with pytest.raises(RailConfigError, match=why):
            parse_settings(NachaSettings, {**NACHA_SECTION, **bad}, "rails.nacha")
    same = parse_settings(NachaSettings, {**NACHA_SECTION, "transport": "directory",
                                          "outbox_dir": "x", "inbox_dir": "x"}, "rails.nacha")
    with pytest.raises(RailConfigError, match=r"\[rails.nacha\].*separate folders"):
        build_rail("nacha", same, RailContext(tmp_path, "ACME"))


def _deliver(pickup: Path, inbox: Path, prefix: str) -> list[str]:
    """Play the bank's H2H server for files of one type: move them from mock-bank's pickup
    folder into our inbox, renamed into place (the rest stay at the bank for now)."""
    moved = []
    for path in sorted(pickup.iterdir()):
        if path.is_file() and path.name.startswith(prefix) and not path.name.endswith(".tmp"):
            temporary = inbox / f".{path.name}.tmp"
            temporary.write_bytes(path.read_bytes())
            temporary.replace(inbox / path.name)
            path.unlink()
            moved.append(path.name)
    return moved


async def test_the_acknowledgement_alone_never_books_only_a_statement_does(
    tmp_path: Path, folders: tuple[Path, Path], dropbank: MockBank
) -> None:
    """The inbox gets the ODFI's acknowledgement first: the payment is ``accepted``, not
    booked. With no camt.054 ever delivered, the BAI2 end-of-day statement is what books it."""
    await _nacha_accounts(dropbank)
    drop, pickup = folders
    inbox = tmp_path / "inbox"
    rail = AchCreditRail(
        transport=DirectoryTransport(drop, inbox, tmp_path / "channel.db", settle_s=0.0),
        account=ACME, originator=ACME_ORIGIN, store_path=tmp_path / "ach.db", clock=bank_now,
        report_account=COMPANY_IDS["ACME"], booking_deadline=timedelta(days=2))
    try:
        await rail.submit(pay("chan-9/payout/0"))
        for _ in range(100):
            if _deliver(pickup, inbox, "nacha.ack-"):
                break
            await asyncio.sleep(0.1)
        record = await rail.status("chan-9/payout/0")
        assert record.status is PaymentStatus.ACCEPTED
        assert (await rail.reconcile()).outstanding == ("chan-9/payout/0",)
        # the bank's camt.054 stays at the bank; the day ends and its BAI2 is released
        await dropbank.advance(1)
        for _ in range(100):
            if _deliver(pickup, inbox, "bai2.statement-"):
                break
            await asyncio.sleep(0.1)
        assert not any(p.name.startswith("camt.054") for p in inbox.rglob("*"))
        booked = await rail.status("chan-9/payout/0")
        assert booked.status is PaymentStatus.BOOKED
        assert set((await rail.reconcile()).booked) == {"chan-9/payout/0"}
    finally:
        await rail.aclose()
