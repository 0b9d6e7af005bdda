"""The node's bank: which rail it uses (``[bank]``) and that rail's settings (``[rails.RAIL]``).

The settings themselves are typed and checked by :mod:`rails.settings` through
:mod:`rails.registry`; this module only finds them in the config file, reads an old-style
``[bank]`` table as the rail's section, and splits a flat ``--bank-config`` object back into
the two sections. Errors are :class:`rails.settings.RailConfigError`; ``node.config`` adds the
file's path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.transfers import RETURN_HORIZON_MS
from rails import registry
from rails.settings import RailConfigError, RailSettings, parse_settings

MAX_WINDOW_S = RETURN_HORIZON_MS // 1000
"""A return window no longer than the arbiter's machine remembers a booked payout (else a
return asked for late would find no payout to pay again)."""
RETURN_WINDOW_S = 60 * 86_400
"""60 days: an ACH consumer's unauthorized-debit return (R10) may come 60 days after the
settlement date; a SEPA SCT return (pacs.004) comes within days (ADR 0271)."""


@dataclass(frozen=True, slots=True)
class BankConfig:
    """The node's own bank account and the rail that reaches it.

    ``[bank] rail`` names the rail (:data:`rails.registry.REGISTRY`); its settings are the
    ``[rails.RAIL]`` section, typed by :mod:`rails.settings`::

        [bank]
        rail = "nacha"
        poll_interval_ms = 500
        return_window_s = 5184000   # asked about returns for 60 days after booking (at most 90)

        [rails.nacha]
        url = "https://files.odfi.example"
        identification = "021000021:12345678"
        immediate_origin = "1470000001"
        …

    A ``[bank]`` written before the ``[rails.*]`` sections existed (the rail's settings in
    ``[bank]`` itself) is read as that rail's section; without an ``identification`` it means,
    as it always did, no bank account. `settings` is None when the node has no account.
    """

    rail: str = "openbanking"
    poll_interval_ms: int = 500
    settings: RailSettings | None = None
    return_window_s: int = RETURN_WINDOW_S
    """How long after booking a payout is still asked about returns (ADR 0271)."""

    def account_currency(self) -> str:
        """The account's currency, "" when neither the config nor the rail says."""
        said = self.settings.currency if self.settings else ""
        return said or {"sepa": "EUR", "nacha": "USD"}.get(self.rail, "")

    @property
    def identification(self) -> str:
        return self.settings.identification if self.settings else ""

    @property
    def scheme(self) -> str:
        return self.settings.scheme if self.settings else ""

    @property
    def name(self) -> str:
        return self.settings.name if self.settings else ""

    @property
    def url(self) -> str:
        return self.settings.url if self.settings else ""


BANK_KEYS = frozenset({"rail", "poll_interval_ms", "return_window_s"})
LEGACY_KEYS = frozenset({"url", "account_id", "scheme", "identification", "name", "agent",
                         "report_account", "client_id", "token_file", "key_file"})
"""What [bank] held before the [rails.*] sections: still read, as the rail's section."""


def read_bank(raw: Mapping[str, Any]) -> BankConfig:
    """[bank] and [rails.*] of a parsed config.toml (see :class:`BankConfig`); anything wrong
    is a RailConfigError naming the section and setting."""
    bank = raw.get("bank", {})
    rails_raw = raw.get("rails", {})
    for section, table in (("bank", bank), ("rails", rails_raw)):
        if not isinstance(table, dict):
            raise RailConfigError(f"[{section}] must be a table")
    rail = bank.get("rail", "openbanking")
    poll = bank.get("poll_interval_ms", 500)
    if not isinstance(poll, int) or isinstance(poll, bool) or poll <= 0:
        raise RailConfigError("[bank] poll_interval_ms must be a positive integer")
    if not isinstance(rail, str):
        raise RailConfigError("[bank] rail must be a string")
    window = bank.get("return_window_s", RETURN_WINDOW_S)
    if not isinstance(window, int) or isinstance(window, bool) or not 0 <= window <= MAX_WINDOW_S:
        raise RailConfigError(
            f"[bank] return_window_s must be an integer from 0 to {MAX_WINDOW_S} seconds (90 "
            "days: how long the arbiter remembers a booked payout, whose return it can still "
            "pay again)")
    registry.entry(rail)
    sections = {name: registry.entry(name) for name in rails_raw}
    legacy = {k: v for k, v in bank.items() if k not in BANK_KEYS}
    if legacy and rail in rails_raw:
        raise RailConfigError(f"[bank] has {sorted(legacy)} and there is a [rails.{rail}] "
                              f"section too: move them into [rails.{rail}]")
    old_shape = {f.name for f in dataclasses.fields(registry.entry(rail).settings)} | LEGACY_KEYS
    unknown = sorted(set(legacy) - old_shape)
    if unknown:
        raise RailConfigError(f"unknown [bank] settings {unknown}: [bank] takes rail, "
                              "poll_interval_ms and return_window_s; the rail's settings go "
                              f"in [rails.{rail}]")
    settings: RailSettings | None = None
    for name, known in sections.items():
        if not isinstance(rails_raw[name], dict):
            raise RailConfigError(f"[rails.{name}] must be a table")
        parsed = parse_settings(known.settings, rails_raw[name], f"rails.{name}")
        if name == rail:
            settings = parsed
    if legacy and legacy.get("identification"):
        settings = _legacy(rail, legacy)
    return BankConfig(rail=rail, poll_interval_ms=poll, settings=settings,
                      return_window_s=window)


def _legacy(rail: str, table: dict[str, Any]) -> RailSettings:
    """A [bank] table of the old shape as [rails.RAIL]; empty strings are the old defaults of
    settings the rail does not have."""
    known = registry.entry(rail).settings
    names = {f.name for f in dataclasses.fields(known)}
    table = {k: v for k, v in table.items() if k in names or v != ""}
    return parse_settings(known, table, "bank")


def bank_sections(bank: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """A flat bank settings object (``meterline init --bank-config``: ``{"rail": …, "url": …}``)
    as the [bank] and [rails.RAIL] sections; checked as load_config will check them."""
    values = {k: v for k, v in bank.items() if v is not None}
    rail = values.get("rail", "openbanking")
    head = {k: values.pop(k) for k in sorted(BANK_KEYS) if k in values}
    sections: dict[str, Mapping[str, Any]] = {"bank": head}
    if values:
        known = registry.entry(str(rail))
        parse_settings(known.settings, values, f"rails.{rail}")
        sections[f"rails.{rail}"] = values
    return sections
