"""The rails a node can use: a name, its settings class and the factory that builds its adapter.

``[bank] rail = "NAME"`` picks one; its settings are the ``[rails.NAME]`` section
(:mod:`rails.settings`). A new rail is one :class:`RailEntry` here; a new setting is one field
in its settings class. The node never branches on a rail's name: it asks :func:`build_rail`.

:func:`check_payee_account` is what the node asks when it validates channel terms (at propose
and at accept): an account its rail can never pay is refused when the channel is opened, not
when the money is due.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rails.errors import Finding, RailError
from rails.iso20022 import sepa
from rails.nacha.records import aba_valid
from rails.port import Account, AccountScheme, Rail
from rails.settings import (
    FileRailSettings,
    NachaSettings,
    OpenBankingSettings,
    RailConfigError,
    RailSettings,
    SepaSettings,
)
from rails.transport import FileTransport


@dataclass(frozen=True, slots=True)
class RailContext:
    """What a factory needs besides the settings: where the rail keeps its files, and the
    holder name to use when the settings give none."""

    data_dir: Path
    holder: str


def _openbanking(settings: RailSettings, ctx: RailContext) -> Rail:
    from rails.openbanking import OpenBankingConfig, OpenBankingRail

    assert isinstance(settings, OpenBankingSettings)
    key_file = Path(settings.key_file)
    if key_file.is_file() and (mode := stat.S_IMODE(key_file.stat().st_mode)) & 0o077:
        raise RailConfigError(f"key_file {key_file} is readable by others (mode {mode:o}): "
                              f"run `chmod 600 {key_file}`")
    return OpenBankingRail(OpenBankingConfig(
        base_url=settings.url, client_id=settings.client_id, org_id=settings.org_id,
        software_statement_id=settings.software_statement_id,
        key_file=Path(settings.key_file), account_id=settings.account_id,
        store_path=ctx.data_dir / "rail-openbanking.sqlite", poll_attempts=4,
        redirect_uri=settings.redirect_uri,
        poll_interval_s=0.1))


def _file_transport(settings: FileRailSettings, ctx: RailContext, rail: str
                    ) -> FileTransport | None:
    """The folder channel when ``transport = "directory"``, else None (the rail then speaks
    mock-bank's HTTP door at ``url``: tests only). Each rail keeps its own journal."""
    if settings.transport != "directory":
        return None
    from rails.transport_directory import DirectoryTransport

    try:
        return DirectoryTransport(ctx.data_dir / settings.outbox_dir,
                                  ctx.data_dir / settings.inbox_dir,
                                  ctx.data_dir / f"rail-{rail}-channel.sqlite")
    except RailError as exc:
        raise RailConfigError(f"[rails.{rail}] {exc}") from None


def _sepa(settings: RailSettings, ctx: RailContext) -> Rail:
    from rails.iso20022 import SepaCreditTransferRail

    assert isinstance(settings, SepaSettings)
    transport = _file_transport(settings, ctx, "sepa")
    return SepaCreditTransferRail(
        transport=transport, base_url=None if transport else settings.url,
        booking_deadline=timedelta(seconds=settings.booking_deadline_s),
        account=settings.account(ctx.holder),
        store_path=ctx.data_dir / "rail-sepa.sqlite",
        initiating_party=settings.initiating_party or None,
        debtor_address=settings.postal_address())


def _nacha(settings: RailSettings, ctx: RailContext) -> Rail:
    from rails.nacha import AchCreditRail

    assert isinstance(settings, NachaSettings)
    transport = _file_transport(settings, ctx, "nacha")
    return AchCreditRail(
        transport=transport, base_url=None if transport else settings.url,
        booking_deadline=timedelta(seconds=settings.booking_deadline_s),
        account=settings.account(ctx.holder),
        originator=settings.originator(), store_path=ctx.data_dir / "rail-nacha.sqlite",
        report_account=settings.report_account or None)


def _sepa_payee(account: Account, payer: RailSettings | None) -> str | None:
    if account.scheme is not AccountScheme.IBAN:
        return f"the SEPA rail pays IBANs, not {account.scheme.value} accounts"
    if (problem := sepa.payee_problem(account.identification, account.agent)) is not None:
        return problem
    if (isinstance(payer, SepaSettings) and payer.postal_address() is None
            and sepa.country_class(account.identification) is sepa.CountryClass.NON_EEA_SEPA):
        return ("a payment to a non-EEA SEPA country needs the payer's postal address: set "
                "town_name and country (and street_name, building_number, post_code) in "
                "[rails.sepa]")
    return None


def _nacha_payee(account: Account, payer: RailSettings | None) -> str | None:
    if account.scheme is not AccountScheme.US_ABA:
        return f"the ACH rail pays US.ABA accounts, not {account.scheme.value}"
    if not (account.agent and aba_valid(account.agent)):
        return f"routing number {account.agent!r} fails the ABA check digit"
    if not account.identification.replace("-", "").isalnum() or len(account.identification) > 17:
        return "an ACH account number is 1 to 17 letters or digits"
    return None


def _openbanking_payee(account: Account, payer: RailSettings | None) -> str | None:
    if account.scheme is AccountScheme.US_ABA:
        return "UK Open Banking pays sort code or IBAN accounts, not US.ABA"
    return None


@dataclass(frozen=True, slots=True)
class RailEntry:
    name: str
    settings: type[RailSettings]
    factory: Callable[[RailSettings, RailContext], Rail]
    payee_problem: Callable[[Account, RailSettings | None], str | None]
    """Why this rail can never pay `account` (from `payer`'s account, when given), or None."""


REGISTRY: dict[str, RailEntry] = {
    entry.name: entry for entry in (
        RailEntry("openbanking", OpenBankingSettings, _openbanking, _openbanking_payee),
        RailEntry("sepa", SepaSettings, _sepa, _sepa_payee),
        RailEntry("nacha", NachaSettings, _nacha, _nacha_payee),
    )
}


def entry(name: str) -> RailEntry:
    """The rail called `name`; RailConfigError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise RailConfigError(f"no rail {name!r}: [bank] rail must be one of "
                              f"{', '.join(sorted(REGISTRY))}") from None


def build_rail(name: str, settings: RailSettings, ctx: RailContext) -> Rail:
    """The adapter for rail `name` with its settings."""
    return entry(name).factory(settings, ctx)


def check_payee_account(rail: str, account: Account, payer: RailSettings | None = None
                        ) -> Finding | None:
    """Can rail `rail` ever pay `account`? None when it can; a finding (code AC01) saying why
    not (a non-SEPA IBAN on the SEPA rail, a bad routing number on ACH…). With `payer`, the
    settings of the account that would pay, also what the payment needs of the payer (a SEPA
    payer's postal address for a non-EEA SEPA payee)."""
    problem = entry(rail).payee_problem(account, payer)
    return None if problem is None else Finding("account", "AC01", problem)
