"""The golden cases: one instruction each, built by the real adapters at a fixed clock.

Each case is what the rail would send for one payment (or the findings it refuses it with), so
the expected file under ``files/`` is byte for byte what leaves the node. Regenerate them all
after a deliberate change of the writers with::

    .venv/bin/python -m tests.rails.golden.regenerate

and read the diff: a golden file changes only when the bytes a bank receives change.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from protocol.money import parse_decimal
from protocol.payout import cumulative_shares
from protocol.types import Amount, MinorUnits
from rails.errors import InvalidInstruction
from rails.iso20022 import SepaCreditTransferRail, sepa
from rails.nacha import AchCreditRail, Originator
from rails.port import Account, AccountScheme, PaymentInstruction
from rails.store import SqliteIdempotencyStore

FILES = Path(__file__).resolve().parent / "files"
CLOCK = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
"""A Thursday morning: the injected clock every file's timestamps and dates come from."""

SEPA_DEBTOR = Account("ACME Corporation", AccountScheme.IBAN, "NL41MOCK0000000001")
"""mock-bank's seeded ACME account (bank MOCK), the escrow that pays."""
SEPA_ADDRESS = sepa.PostalAddress("Herengracht", "182", "1016 BR", "Amsterdam", "NL")
ACH_DEBTOR = Account("ACME Corporation", AccountScheme.US_ABA, "0000000001", "999999992")
ACH_ORIGIN = Originator(
    immediate_destination=" 999999992", immediate_destination_name="MOCK BANK",
    immediate_origin="1470000001", immediate_origin_name="ACME CORPORATION",
    company_id="1470000001", company_name="ACME CORPORATION")
ACH_COMPANY_ID = ACH_ORIGIN.company_id

NAME_98 = ("Internationale Spedition und Kontraktlogistik Nordwest GmbH & Co. KG "
           "Niederlassung Bremerhaven Süd")
assert len(NAME_98) == 98


def _close(deposits: tuple[str, str], sent: tuple[str, str], currency: str
           ) -> tuple[int, int]:
    """The two payouts of a close by the protocol's one payout rule (specs/0004 §4)."""
    scale, exponent = 6, 2
    p = cumulative_shares(
        opener_deposit=MinorUnits(parse_decimal(deposits[0], exponent)),
        peer_deposit=MinorUnits(parse_decimal(deposits[1], exponent)),
        opener_sent=Amount(parse_decimal(sent[0], scale)),
        peer_sent=Amount(parse_decimal(sent[1], scale)), scale=scale, exponent=exponent)
    return p.opener, p.peer


CLOSE = _close(("5000.00", "100.00"), ("24.69", "5.00"), "EUR")
"""Opener pays 24.69, receives 5.00: opener 4980.31, peer 119.69 (exact)."""
ROUNDING = _close(("5000.00", "100.00"), ("24.690000", "5.265000"), "EUR")
"""Peer owed 119.425: paid 119.42 (rounded down), the opener the rest 4980.58."""


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    rail: str
    """"sepa" or "nacha"."""
    amount_minor: int
    creditor: Account
    reference: str = "ML 7F3A9C1B PAYOUT 1"
    address: bool = True
    """(sepa) whether the debtor's postal address is configured."""
    refused: bool = False
    """The rail refuses it: the golden file holds the findings, nothing would be sent."""
    execution: date | None = None
    """The requested execution (effective entry) date; the creation day when None."""

    @property
    def path(self) -> Path:
        suffix = ".refused.txt" if self.refused else ".xml" if self.rail == "sepa" else ".ach"
        return FILES / f"{self.name}{suffix}"

    def instruction(self) -> PaymentInstruction:
        debtor = SEPA_DEBTOR if self.rail == "sepa" else ACH_DEBTOR
        currency = "EUR" if self.rail == "sepa" else "USD"
        return PaymentInstruction(
            idempotency_key=f"golden/{self.name}", debtor=debtor, creditor=self.creditor,
            amount_minor=self.amount_minor, currency=currency, reference=self.reference,
            execution_date=self.execution)


def _iban(iban: str, name: str = "Peer Energie B.V.", bic: str | None = None) -> Account:
    return Account(name, AccountScheme.IBAN, iban, bic)


def _aba(routing: str, account: str = "12345678901", name: str = "Peer Power Inc") -> Account:
    return Account(name, AccountScheme.US_ABA, account, routing)


DE = "DE89370400440532013000"
US = "021000021"
CASES: tuple[Case, ...] = (
    # -- SEPA ----------------------------------------------------------------------------------
    Case("sepa-one-payout", "sepa", 1_234_56, _iban(DE)),
    Case("sepa-close-pair-opener", "sepa", CLOSE[0], _iban(DE, "Opener GmbH")),
    Case("sepa-close-pair-peer", "sepa", CLOSE[1], _iban("FR1420041010050500013M02606",
                                                         "Peer SA")),
    Case("sepa-one-cent", "sepa", 1, _iban(DE)),
    Case("sepa-max-999999999.99", "sepa", 999_999_999_99, _iban(DE)),
    Case("sepa-rounding-pair-opener", "sepa", ROUNDING[0], _iban(DE, "Opener GmbH")),
    Case("sepa-rounding-pair-peer", "sepa", ROUNDING[1], _iban("FR1420041010050500013M02606",
                                                               "Peer SA")),
    Case("sepa-non-ascii", "sepa", 500_00,
         _iban(DE, "Jürgen Müller & Söhne Straße GmbH, Ærø Ørsted")),
    Case("sepa-greek", "sepa", 500_00, _iban("GR1601101250000000012300695",
                                             "Παπαδόπουλος Γεώργιος Ευάγγελος")),
    Case("sepa-cyrillic", "sepa", 500_00, _iban("BG80BNBG96611020345678",
                                                "Щукин и Цветков ЕООД")),
    Case("sepa-98-char-name", "sepa", 500_00, _iban(DE, NAME_98)),
    Case("sepa-eea-non-euro-se", "sepa", 500_00, _iban("SE4550000000058398257466")),
    Case("sepa-eea-non-euro-pl", "sepa", 500_00, _iban("PL61109010140000071219812874")),
    Case("sepa-non-eea-gb", "sepa", 500_00, _iban("GB29NWBK60161331926819", "Carrier Ltd")),
    Case("sepa-non-eea-ch", "sepa", 500_00, _iban("CH9300762011623852957", "Carrier AG",
                                                  "UBSWCHZH80A")),
    Case("sepa-non-eea-mc", "sepa", 500_00, _iban("MC5811222000010123456789030",
                                                  "Carrier SAM", "SGBTMCMCXXX")),
    Case("sepa-non-eea-gb-without-address", "sepa", 500_00,
         _iban("GB29NWBK60161331926819", "Carrier Ltd"), address=False, refused=True),
    Case("sepa-non-eea-ch-without-bic", "sepa", 500_00,
         _iban("CH9300762011623852957", "Carrier AG"), refused=True),
    Case("sepa-non-eea-ch-foreign-bic", "sepa", 500_00,
         _iban("CH9300762011623852957", "Carrier AG", "BNPAFRPPXXX"), refused=True),
    Case("sepa-wrong-bank-bic", "sepa", 500_00, _iban(DE, "Peer GmbH", "DEUTDEFFXXX"),
         refused=True),
    Case("sepa-non-sepa-tr", "sepa", 500_00, _iban("TR330006100519786457841326", "Istanbul AS"),
         refused=True),
    Case("sepa-non-sepa-br", "sepa", 500_00,
         _iban("BR1800360305000010009795493C1", "Sao Paulo SA"), refused=True),
    # -- NACHA ---------------------------------------------------------------------------------
    Case("ach-one-payout", "nacha", 1_234_56, _aba(US)),
    Case("ach-close-pair-opener", "nacha", CLOSE[0], _aba(US, "400200", "Opener Inc")),
    Case("ach-close-pair-peer", "nacha", CLOSE[1], _aba("011000015", "77", "Peer LLC")),
    Case("ach-one-cent", "nacha", 1, _aba(US)),
    Case("ach-max-99999999.99-next-day", "nacha", 99_999_999_99, _aba(US)),
    Case("ach-999999999.99-refused", "nacha", 999_999_999_99, _aba(US), refused=True),
    Case("ach-rounding-pair-opener", "nacha", ROUNDING[0], _aba(US, "400200", "Opener Inc")),
    Case("ach-rounding-pair-peer", "nacha", ROUNDING[1], _aba("011000015", "77", "Peer LLC")),
    Case("ach-non-ascii", "nacha", 500_00,
         _aba(US, name="Ærø Café Crème & Müller Straße")),
    Case("ach-greek", "nacha", 500_00, _aba(US, name="Παπαδόπουλος Γεώργιος")),
    Case("ach-cyrillic", "nacha", 500_00, _aba(US, name="Щукин Цветков")),
    Case("ach-98-char-name", "nacha", 500_00, _aba(US, name=NAME_98)),
    Case("ach-routing-boston-fed", "nacha", 10_00, _aba("011000015")),
    Case("ach-routing-wells-fargo", "nacha", 10_00, _aba("122105278")),
    Case("ach-routing-bank-of-america", "nacha", 10_00, _aba("026009593")),
    Case("ach-routing-chase-texas", "nacha", 10_00, _aba("111000025")),
    Case("ach-columbus-day-next-banking-day", "nacha", 10_00, _aba(US),
         execution=date(2026, 10, 12)),
    Case("ach-over-limit-thanksgiving", "nacha", 1_000_000_01, _aba(US),
         execution=date(2026, 11, 26)),
    Case("ach-bad-routing-refused", "nacha", 10_00, _aba("021000022"), refused=True),
)


def refusal_text(exc: InvalidInstruction) -> bytes:
    lines = [f"{f.severity} {f.code} {f.path}: {f.message}" for f in exc.findings]
    return ("\n".join(lines) + "\n").encode()


def build(case: Case) -> bytes:
    """What the adapter would send for `case` (or, refused, its findings), at :data:`CLOCK`."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteIdempotencyStore(str(Path(tmp) / "store.sqlite"))
        make: Callable[[], bytes]
        if case.rail == "sepa":
            sepa_rail = SepaCreditTransferRail(
                base_url="http://127.0.0.1:9", account=SEPA_DEBTOR, store=store,
                clock=lambda: CLOCK, debtor_address=SEPA_ADDRESS if case.address else None)

            def make() -> bytes:
                return sepa_rail.prepare(case.instruction())
        else:
            ach_rail = AchCreditRail(base_url="http://127.0.0.1:9", account=ACH_DEBTOR,
                                     originator=ACH_ORIGIN, store=store,
                                     clock=lambda: CLOCK)

            def make() -> bytes:
                return ach_rail.prepare(case.instruction(), CLOCK, "A")
        try:
            data = make()
        except InvalidInstruction as exc:
            if not case.refused:
                raise
            data = refusal_text(exc)
        else:
            if case.refused:
                raise AssertionError(f"{case.name} was expected to be refused")
        finally:
            store.close()
        return data
