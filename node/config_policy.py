"""What this node accepts of channel terms: `[limits]`, `[policy]` and the allow-list.

**The allow-list.** An opener on it has its proposals accepted, and our deposit paid, without the
operator — but only within limits (:class:`Allowance`)::

    [peers]
    allow = ["<node id>"]              # default limits (below)

    [[peers.allowed]]
    node_id = "<node id>"
    max_peer_deposit = "1000.00 EUR"   # the most it may ask US to deposit, per channel
    currencies = ["EUR"]               # optional; default: any
    min_dispute_window_ms = 3600000    # optional; default: the [policy] range
    max_dispute_window_ms = 1209600000

A bare ``allow`` entry (or a table without ``max_peer_deposit``) may ask us to deposit
**nothing**: an allow-list entry is written to save the operator a click on channels the opener
funds, and a key on it must not be able to make this node pay a deposit of any size into a
channel on its own. An operator who wants more says how much. A proposal outside the limits is
held for the operator (``meterline channel list`` says why), never refused for it; terms outside
``[policy]`` are refused from anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config_base import ConfigError, typed
from protocol.channel import TermsBounds
from protocol.errors import ProtocolError
from protocol.money import currency_exponent, format_decimal, parse_rail_money
from protocol.types import MAX_AMOUNT, MAX_DISPUTE_WINDOW_MS


@dataclass(frozen=True, slots=True)
class Limits:
    max_inflight: int = 512
    """Unacknowledged proofs the stream keeps in flight before it waits."""
    max_body_bytes: int = 64 * 1024
    max_batch: int = 1024
    """Proofs committed together at most (one transaction)."""
    header_timeout_ms: int = 10_000
    """A request's headers are complete this soon after the connection opens (or after the
    request's first byte), or the connection is closed (specs/0005 "Timeouts and limits")."""
    body_timeout_ms: int = 30_000
    """A request's body is complete this soon after its headers, or the connection is closed."""
    idle_timeout_ms: int = 20_000
    """A kept-alive connection with no new request is closed this long after its last answer
    (longer than the 15 s our HTTP clients keep an idle connection, so they hang up first)."""
    payment_event_interval_ms: int = 60_000
    """At most one ``payment.received`` event per channel this often (node.events)."""
    event_retention_ms: int = 90 * 86_400_000
    """Events older than this are pruned once every webhook receiver has them (node.events)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """What this node (or arbiter) accepts of any channel's terms, and how closely it watches.

    The dispute window must leave a node that only learns of a unilateral close by asking the
    arbiter (every `watch_interval_ms`) many chances to hand in its evidence: the minimum is at
    least ten watch intervals (specs/0005 §4).
    """

    min_dispute_window_ms: int = 3_600_000
    """1 h: the shortest dispute window accepted (proposed, accepted, or registered)."""
    max_dispute_window_ms: int = 14 * 86_400_000
    """14 days: the longest (money is locked at most this long by a vanished peer)."""
    watch_interval_ms: int = 30_000
    """How often a node asks the arbiter for the signed status of each unsettled channel."""

    def terms_bounds(self) -> TermsBounds:
        """The dispute windows this policy accepts, as the protocol checks them."""
        return TermsBounds(self.min_dispute_window_ms, self.max_dispute_window_ms)


WATCHES_PER_WINDOW = 10


@dataclass(frozen=True, slots=True)
class Allowance:
    """What an allow-listed opener may propose and still be accepted without the operator."""

    node_id: str
    min_dispute_window_ms: int
    max_dispute_window_ms: int
    max_peer_deposit: int = 0
    """The most the opener may ask us to deposit into one channel, in minor units of
    `deposit_currency`. 0 (the default, and what a bare ``allow`` entry gets): nothing."""
    deposit_currency: str = ""
    """The currency of `max_peer_deposit` ("" when it is 0: no deposit in any currency)."""
    currencies: frozenset[str] | None = None
    """The currencies it may propose; None: any."""

    def objection(self, currency: str, peer_deposit: int, dispute_window_ms: int) -> str | None:
        """Why terms with these values are outside the allowance; None when they are within."""
        if self.currencies is not None and currency not in self.currencies:
            return (f"the currency {currency} is not one this opener is allowed "
                    f"({', '.join(sorted(self.currencies))})")
        if peer_deposit and (currency != self.deposit_currency
                             or peer_deposit > self.max_peer_deposit):
            return (f"it asks us to deposit {_minor_text(peer_deposit, currency)}; this opener "
                    f"may ask at most {self.limit_text()}")
        if not self.min_dispute_window_ms <= dispute_window_ms <= self.max_dispute_window_ms:
            return (f"its dispute window of {dispute_window_ms} ms is outside this opener's "
                    f"{self.min_dispute_window_ms}..{self.max_dispute_window_ms} ms")
        return None

    def limit_text(self) -> str:
        if not self.max_peer_deposit:
            return "nothing (no max_peer_deposit is set)"
        return _minor_text(self.max_peer_deposit, self.deposit_currency)


def _minor_text(minor: int, currency: str) -> str:
    try:
        exponent = currency_exponent(currency)
    except ProtocolError:
        return f"{minor} minor units of {currency}"
    return f"{format_decimal(minor, exponent, min_places=exponent)} {currency}"



ALLOWED_KEYS = frozenset({"node_id", "max_peer_deposit", "currencies", "min_dispute_window_ms",
                          "max_dispute_window_ms"})


def is_node_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def read_allowances(path: Path, raw: Any, policy: Policy) -> tuple[Allowance, ...]:
    """The ``[[peers.allowed]]`` tables, each checked strictly (ConfigError naming it)."""
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: [[peers.allowed]] must be an array of tables")
    return tuple(_allowance(path, i, entry, policy) for i, entry in enumerate(raw, 1))


def _allowance(path: Path, n: int, entry: Any, policy: Policy) -> Allowance:
    where = f"[[peers.allowed]] entry {n}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    unknown = set(entry) - ALLOWED_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown {where} settings {sorted(unknown)}")
    node_id = entry.get("node_id")
    if not isinstance(node_id, str) or not is_node_id(node_id.lower()):
        raise ConfigError(f"{path}: {where} node_id must be a node id (64 hex digits)")
    node_id = node_id.lower()
    where = f"[[peers.allowed]] entry {n} ({node_id[:16]}…)"
    max_minor, deposit_currency = 0, ""
    if "max_peer_deposit" in entry:
        text = entry["max_peer_deposit"]
        if not isinstance(text, str):
            raise ConfigError(f"{path}: {where} max_peer_deposit must be an amount in whole "
                              f"minor units like \"1000.00 EUR\", not {text!r}")
        try:
            money = parse_rail_money(text)  # the money grammar, specs/0001 §2.1
        except ProtocolError as exc:
            raise ConfigError(f"{path}: {where} max_peer_deposit: {exc.message}") from None
        if money.amount > MAX_AMOUNT:
            raise ConfigError(f"{path}: {where} max_peer_deposit is above {MAX_AMOUNT}")
        max_minor, deposit_currency = money.amount, money.currency if money.amount else ""
    currencies: frozenset[str] | None = None
    if "currencies" in entry:
        listed = entry["currencies"]
        if not isinstance(listed, list) or not listed or not all(
                isinstance(c, str) for c in listed):
            raise ConfigError(f"{path}: {where} currencies must be a non-empty list of ISO 4217 "
                              "codes")
        for code in listed:
            try:
                currency_exponent(code)
            except ProtocolError as exc:
                raise ConfigError(f"{path}: {where} currencies: {exc.message}") from None
        currencies = frozenset(listed)
        if deposit_currency and deposit_currency not in currencies:
            raise ConfigError(f"{path}: {where} max_peer_deposit is in {deposit_currency}, "
                              "which is not in its currencies")
    windows = []
    for key in ("min_dispute_window_ms", "max_dispute_window_ms"):
        value = entry.get(key, getattr(policy, key))
        if not isinstance(value, int) or isinstance(value, bool) or not (
                policy.min_dispute_window_ms <= value <= policy.max_dispute_window_ms):
            raise ConfigError(
                f"{path}: {where} {key} must be an integer within [policy] "
                f"{policy.min_dispute_window_ms}..{policy.max_dispute_window_ms}")
        windows.append(value)
    if windows[0] > windows[1]:
        raise ConfigError(f"{path}: {where} min_dispute_window_ms is above max_dispute_window_ms")
    return Allowance(node_id, windows[0], windows[1], max_minor, deposit_currency, currencies)


def read_policy(path: Path, raw: dict[str, Any]) -> Policy:
    policy: Policy = typed(path, "policy", raw, Policy)
    if policy.max_dispute_window_ms > MAX_DISPUTE_WINDOW_MS:
        raise ConfigError(f"{path}: [policy] max_dispute_window_ms is at most "
                          f"{MAX_DISPUTE_WINDOW_MS} (366 days)")
    if policy.min_dispute_window_ms > policy.max_dispute_window_ms:
        raise ConfigError(f"{path}: [policy] min_dispute_window_ms is above "
                          "max_dispute_window_ms")
    if policy.min_dispute_window_ms < WATCHES_PER_WINDOW * policy.watch_interval_ms:
        raise ConfigError(
            f"{path}: [policy] min_dispute_window_ms must be at least {WATCHES_PER_WINDOW} × "
            f"watch_interval_ms ({WATCHES_PER_WINDOW * policy.watch_interval_ms}): a node must "
            "have many chances to learn of a unilateral close in time")
    return policy
