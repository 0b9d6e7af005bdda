"""The typed settings of each rail: one frozen dataclass per ``[rails.NAME]`` config section.

Adding a setting to a rail is one change here: a field (with a default unless it is required)
and its docstring; :func:`parse_settings` reads, type-checks and names it, and a rule that one
type cannot say goes in the class's ``problems``. Required fields have no default. Everything is
checked when the config is loaded, so a node never starts with a rail it could not use.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rails.iso20022 import sepa
from rails.nacha.checks import originator_findings
from rails.nacha.records import Originator, aba_valid
from rails.port import Account, AccountScheme, payee_account


class RailConfigError(ValueError):
    """A ``[rails.NAME]`` section is unusable; the message names the setting and says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RailSettings:
    """What every rail needs: the bank's address and our own account there."""

    schemes: ClassVar[tuple[str, ...]]
    """The account schemes this rail's own account may be in; the first is the default."""

    url: str
    """The bank's door: its API origin, or the file gateway's."""
    identification: str
    """Our own account, as channel terms name it (an IBAN; ``ROUTING:ACCOUNT`` for ACH; a sort
    code and account number)."""
    name: str = ""
    """The account holder's name; the node's name when empty."""
    agent: str = ""
    """Our bank's identifier: its BIC (SEPA, optional), its routing number (ACH)."""
    scheme: str = ""
    """The scheme of `identification` (:class:`rails.port.AccountScheme`); the rail's own
    when empty."""
    currency: str = ""
    """The currency the account is held in ("" when not said: a SEPA account is in EUR, an
    ACH account in USD); `channel open` refuses a deposit the bank would refuse for it."""

    def __post_init__(self) -> None:
        if not self.scheme:
            object.__setattr__(self, "scheme", self.schemes[0])

    def problems(self) -> list[tuple[str, str]]:
        """(setting, why) for every rule beyond the types; empty when the section is usable."""
        found: list[tuple[str, str]] = []
        if not re.fullmatch(r"https?://\S+", self.url):
            found.append(("url", f"{self.url!r} is not an http(s) URL"))
        if self.scheme not in self.schemes:
            found.append(("scheme", f"{self.scheme!r}: this rail's accounts are "
                                    f"{' or '.join(self.schemes)}"))
        return found

    def account(self, holder: str) -> Account:
        """Our account as the rail's port takes it."""
        return payee_account(self.scheme, self.identification, self.name or holder,
                             agent=self.agent or None)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenBankingSettings(RailSettings):
    """``[rails.openbanking]``: UK Open Banking pay-by-bank (the sandbox bank in tests)."""

    schemes: ClassVar[tuple[str, ...]] = (AccountScheme.SORT_CODE.value,
                                          AccountScheme.IBAN.value)
    account_id: str
    """The bank's AccountId of our account (statements, incoming credits)."""
    client_id: str
    """Our TPP client id at the bank."""
    org_id: str
    """Our OB Directory organisation id: signatures name us ``{org-id}/{ssid}``."""
    software_statement_id: str
    key_file: str
    """The TPP's private signing key (PEM, mode 0600); it also signs the OAuth client
    assertions tokens are fetched with (rails/ob_oauth.py)."""
    token_file: str = ""
    """No longer read: tokens come from OAuth (kept so an older config still loads)."""
    redirect_uri: str = ""
    """Where the bank sends the account holder back after authorising a payment's consent
    (registered with the bank): https, or http on loopback. Empty: no PSU authorisation step
    (``meterline rails authorise`` refuses; the bank must authorise consents itself)."""

    def problems(self) -> list[tuple[str, str]]:
        found = RailSettings.problems(self)
        if self.redirect_uri and not re.fullmatch(
                r"(https://[^\s?#]+|http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/[^\s?#]*)?)",
                self.redirect_uri):
            found.append(("redirect_uri", f"{self.redirect_uri!r} is not an https URL (or http "
                                          "on loopback) without query or fragment"))
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRailSettings(RailSettings):
    """What a file rail (SEPA, NACHA) adds: how its files reach the bank, and how long a
    payment may go without a statement booking before the operator hears of it."""

    transport: str = "mock-bank"
    """How files reach the bank: ``directory`` (a folder pair an SFTP or EBICS client serves,
    docs/file-channel.md) or ``mock-bank`` (its HTTP door at `url`; tests only)."""
    outbox_dir: str = ""
    """(directory) where payment files are written for the bank; relative to the data dir."""
    inbox_dir: str = ""
    """(directory) where the bank's reports and statements arrive; relative to the data dir."""
    booking_deadline_s: int = 3 * 24 * 3600
    """A payment no statement shows booked this long after submission is raised as
    unreconciled (rails/reconcile.py, ADR 0130)."""

    def problems(self) -> list[tuple[str, str]]:
        found = RailSettings.problems(self)
        if self.transport not in ("directory", "mock-bank"):
            found.append(("transport", f"{self.transport!r} is not directory or mock-bank"))
        if self.transport == "directory" and not (self.outbox_dir and self.inbox_dir):
            found.append(("outbox_dir", "transport directory needs outbox_dir and inbox_dir"))
        if self.booking_deadline_s <= 0:
            found.append(("booking_deadline_s", "must be positive"))
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class SepaSettings(FileRailSettings):
    """``[rails.sepa]``: SEPA credit transfers as pain.001.001.09 files.

    The postal address is the debtor's (ours), written into every pain.001 that involves a
    non-EEA SEPA country (EPC SCT rulebook; EU 2023/1113): at least the town and the country,
    which is what the EPC's structured-address rule asks for. A payout that needs it and finds
    none is refused before the bank hears of it.
    """

    schemes: ClassVar[tuple[str, ...]] = (AccountScheme.IBAN.value,)
    initiating_party: str = ""
    """The initiating party's name in the group header; the holder's when empty."""
    street_name: str = ""
    building_number: str = ""
    post_code: str = ""
    town_name: str = ""
    country: str = ""
    """ISO 3166 alpha-2 (``DE``, ``CH``)."""

    def problems(self) -> list[tuple[str, str]]:
        found = FileRailSettings.problems(self)
        if (problem := sepa.iban_problem(self.identification)) is not None:
            found.append(("identification", problem))
        if self.agent and (problem := sepa.bic_problem(self.agent)) is not None:
            found.append(("agent", problem))
        if self.country and not re.fullmatch(r"[A-Z]{2}", self.country):
            found.append(("country", f"{self.country!r} is not an ISO 3166 alpha-2 code"))
        if any(self.address_lines()) and not (self.town_name and self.country):
            found.append(("town_name", "an address needs at least town_name and country"))
        if (not self.town_name and self.identification[:2] in sepa.NON_EEA_SEPA):
            found.append(("town_name", "an account in a non-EEA SEPA country needs the "
                                       "postal address (town_name and country at least)"))
        if self.town_name:
            found += sepa.PostalAddress(*self.address_lines()).problems()
        return found

    def address_lines(self) -> tuple[str, str, str, str, str]:
        return (self.street_name, self.building_number, self.post_code, self.town_name,
                self.country)

    def postal_address(self) -> sepa.PostalAddress | None:
        if not self.town_name:
            return None
        return sepa.PostalAddress(*self.address_lines())


@dataclass(frozen=True, slots=True, kw_only=True)
class NachaSettings(FileRailSettings):
    """``[rails.nacha]``: US ACH credits as NACHA CCD+ files to the ODFI.

    The six identity settings are what the ODFI assigned when it agreed to take the company's
    files, never our account number; each is checked to the NACHA format
    (:func:`rails.nacha.checks.originator_findings`).
    """

    schemes: ClassVar[tuple[str, ...]] = (AccountScheme.US_ABA.value,)
    immediate_destination: str
    """``␣`` + the routing number the file goes to (the ODFI or its processor)."""
    immediate_destination_name: str
    immediate_origin: str
    """``␣TTTTAAAAC`` or the 10 characters the ODFI assigned (often 1 + EIN)."""
    immediate_origin_name: str
    company_id: str
    """Company Identification: 1 + EIN, 3 + DUNS or 9 + a number, 10 characters."""
    company_name: str
    report_account: str = ""
    """The IBAN the bank's camt.054 reports name this account by, if it is not one that ends
    in the account number."""

    def problems(self) -> list[tuple[str, str]]:
        found = FileRailSettings.problems(self)
        routing = self.agent or self.identification.partition(":")[0]
        if not aba_valid(routing):
            found.append(("agent", f"the ODFI routing number {routing!r} fails the ABA check "
                                   "digit (give agent, or identification as ROUTING:ACCOUNT)"))
        found += [(f.path, f.message) for f in originator_findings(self.originator())]
        return found

    def originator(self) -> Originator:
        return Originator(
            immediate_destination=self.immediate_destination,
            immediate_destination_name=self.immediate_destination_name,
            immediate_origin=self.immediate_origin,
            immediate_origin_name=self.immediate_origin_name,
            company_id=self.company_id, company_name=self.company_name)


def _setting_type(cls: type[RailSettings], name: str) -> type:
    hints = {"str": str, "int": int, "bool": bool}
    annotation = next(f.type for f in dataclasses.fields(cls) if f.name == name)
    return hints[str(annotation)]


def parse_settings(cls: type[RailSettings], raw: Mapping[str, Any], where: str
                   ) -> RailSettings:
    """`raw` (a TOML table) as `cls`: unknown and missing settings, wrong types and every rule
    of ``problems`` are a :class:`RailConfigError` naming ``[where] setting``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise RailConfigError(f"unknown [{where}] settings {unknown}; known: {sorted(fields)}")
    missing = [name for name, f in fields.items()
               if name not in raw and f.default is dataclasses.MISSING]
    if missing:
        raise RailConfigError(f"[{where}] needs {', '.join(missing)} "
                              f"(see the {cls.__name__} settings in rails/settings.py)")
    for key, value in raw.items():
        want = _setting_type(cls, key)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise RailConfigError(f"[{where}] {key} must be a {want.__name__}")
    settings = cls(**raw)
    problems = settings.problems()
    if problems:
        raise RailConfigError("; ".join(f"[{where}] {key}: {why}" for key, why in problems))
    return settings
