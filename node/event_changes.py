"""What changed: the ERP's events derived from a committed transition (state before → after).

Pure functions, no I/O: node.events calls them at each commit point and appends what they
return in that commit's transaction (ADR 0210). Amounts are decimal strings with the currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.storage.models import Transfer
from protocol import arbiter as arb
from protocol import channel as ch
from protocol.messages import TransferNotice
from protocol.money import currency_exponent, format_decimal
from protocol.refunds import HoldCredit
from protocol.transfers import TransferStatus

if TYPE_CHECKING:
    from rails.port import PaymentRecord

EVENT_TYPES: dict[str, str] = {
    "channel.proposed": "a channel was proposed (by us, or to us and accepted)",
    "channel.opened": "every deposit is confirmed: payments flow",
    "channel.closing": "a cooperative close is being agreed",
    "channel.closed": "both parties signed the final state; the arbiter pays out",
    "channel.disputed": "a unilateral close is open; its dispute window runs",
    "channel.settled": "the arbiter's bank booked the payouts",
    "deposit.confirmed": "a deposit is confirmed (by the arbiter's signature, or its bank)",
    "deposit.rejected": "a deposit was refused by the bank, or held by the arbiter for refund",
    "checkpoint.paid": "a checkpoint payout was booked at the arbiter's bank (on a node: as "
                       "the arbiter's signed notice told it)",
    "payment.received": "payments received on a channel, aggregated per interval",
    "payout.booked": "a payout was booked at the bank (on a node: the final close's, as the "
                     "arbiter told it)",
    "payout.rejected": "the bank refused a payout (on a node: as the arbiter told it)",
    "payout.returned": "a payout came back after booking (on a node: as the arbiter told it)",
}
"""Every event type, with what it means (docs/webhooks.md lists them)."""

PHASE_EVENTS = {
    ch.Phase.OPEN: "channel.opened", ch.Phase.CLOSING: "channel.closing",
    ch.Phase.CLOSED: "channel.closed", ch.Phase.DISPUTED: "channel.disputed",
    ch.Phase.SETTLED: "channel.settled",
}
ESCROW_PHASE_EVENTS = {
    arb.ArbiterPhase.OPEN: "channel.opened", arb.ArbiterPhase.DISPUTE: "channel.disputed",
    arb.ArbiterPhase.SETTLED: "channel.settled",
}

Change = tuple[str, dict[str, Any]]
"""An event before it is stored: its type and its data."""


def minor(amount_minor: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    return format_decimal(amount_minor, exponent, min_places=exponent)


def scaled(amount: int, state: ch.ChannelState) -> str:
    """An amount at the channel's scale, as a decimal string."""
    exponent = currency_exponent(state.terms.currency)
    sign = "-" if amount < 0 else ""
    return sign + format_decimal(abs(amount), state.terms.scale, min_places=exponent)


def parse_types(text_: str) -> tuple[str, ...]:
    """``channel.opened,payment.*`` → its patterns; an unknown type is a ValueError."""
    patterns = tuple(p.strip() for p in text_.split(",") if p.strip())
    if not patterns:
        raise ValueError("no event types given")
    for pattern in patterns:
        if pattern == "*":
            continue
        if pattern.endswith(".*"):
            if not any(t.startswith(pattern[:-1]) for t in EVENT_TYPES):
                raise ValueError(f"no event type matches {pattern[:40]!r}")
        elif pattern not in EVENT_TYPES:
            raise ValueError(f"unknown event type {pattern[:40]!r} (known: "
                             f"{', '.join(EVENT_TYPES)}; or a prefix like channel.*, or *)")
    return patterns


def matches(patterns: Sequence[str], type_: str) -> bool:
    return any(p == "*" or p == type_ or (p.endswith(".*") and type_.startswith(p[:-1]))
               for p in patterns)


# -- what changed (pure: state before and after → events) ------------------------------------


def channel_changes(before: ch.ChannelState | None, after: ch.ChannelState) -> list[Change]:
    """The events of one committed channel transition (payments aside: see `payment_change`)."""
    terms = after.terms
    base = {"role": "opener" if after.us == 0 else "peer", "currency": terms.currency}
    out: list[Change] = []
    if before is None:
        out.append(("channel.proposed", {
            **base, "peer": terms.parties()[after.them].hex(), "arbiter": terms.arbiter.hex(),
            "deposit": {"opener": minor(terms.opener_deposit, terms.currency),
                        "peer": minor(terms.peer_deposit, terms.currency)}}))
    old_funded = before.funded if before is not None else (0, 0)
    for party in (0, 1):
        if after.funded[party] > old_funded[party]:
            out.append(("deposit.confirmed", {
                **base, "party": "opener" if party == 0 else "peer",
                "amount": minor(after.funded[party] - old_funded[party], terms.currency),
                "total": minor(after.funded[party], terms.currency)}))
    if (before is None or before.phase is not after.phase) and after.phase in PHASE_EVENTS:
        data: dict[str, Any] = {**base, "phase": after.phase.value,
                                "balance": scaled(after.balance(), after)}
        if after.phase is ch.Phase.DISPUTED:
            data["deadline_ms"] = after.dispute_deadline_ms
        if after.phase is ch.Phase.SETTLED and after.payout is not None:
            ours = (after.payout.opener_payout, after.payout.peer_payout)[after.us]
            data["payout"] = minor(ours, terms.currency)
        out.append((PHASE_EVENTS[after.phase], data))
    return out


def escrow_changes(before: arb.ArbiterState | None, after: arb.ArbiterState,
                   effects: Iterable[object]) -> list[Change]:
    """The events of one committed escrow transition (arbiter mode)."""
    cur = after.terms.currency
    base: dict[str, Any] = {"role": "arbiter", "currency": cur}
    out: list[Change] = []
    if before is None:
        out.append(("channel.proposed", {
            **base, "opener": after.terms.opener.hex(), "peer": after.terms.peer.hex()}))
    old = before.deposited if before is not None else (0, 0)
    for party in (0, 1):
        if after.deposited[party] > old[party]:
            out.append(("deposit.confirmed", {
                **base, "party": "opener" if party == 0 else "peer",
                "amount": minor(after.deposited[party] - old[party], cur),
                "total": minor(after.deposited[party], cur)}))
    for effect in effects:
        if isinstance(effect, HoldCredit):
            credit = effect.credit
            out.append(("deposit.rejected", {
                **base, "amount": minor(credit.amount, cur), "entry_id": credit.credit_id,
                "reason": credit.reason.value}))
    rejected = {e.notice.reference for e in effects if isinstance(e, arb.SendTransferNotice)
                and e.notice.status == "rejected"}
    seen = {t.idempotency_key: t.status for t in (before.transfers if before else ())}
    for t in after.transfers:
        if seen.get(t.idempotency_key) is t.status:
            continue
        data: dict[str, Any] = {**base, "party": "opener" if t.party == 0 else "peer",
                "amount": minor(t.amount, cur), "reference": t.reference,
                "checkpoint": t.checkpoint, "attempt": t.attempt}
        if t.status is TransferStatus.BOOKED:
            out.append(("checkpoint.paid" if t.checkpoint else "payout.booked", data))
        elif t.status is TransferStatus.RETURNED:
            type_ = "payout.rejected" if t.reference in rejected else "payout.returned"
            out.append((type_, {**data, "reason": t.reason}))
    if not after.transfers and before is not None:  # a machine that keeps only the flags
        for party in (0, 1):
            if after.booked[party] and not before.booked[party] and after.payouts is not None:
                amount = (after.payouts.opener, after.payouts.peer)[party]
                out.append(("payout.booked", {**base, "party": "opener" if party == 0
                                              else "peer", "amount": minor(amount, cur),
                                              "checkpoint": 0}))
    if (before is None or before.phase is not after.phase) and after.phase in ESCROW_PHASE_EVENTS:
        phase: dict[str, Any] = {**base, "phase": after.phase.value}
        if after.phase is arb.ArbiterPhase.DISPUTE:
            phase["deadline_ms"] = after.deadline_ms
        out.append((ESCROW_PHASE_EVENTS[after.phase], phase))
    return out


NOTICE_EVENTS = {"rejected": "payout.rejected", "returned": "payout.returned"}


def notice_change(state: ch.ChannelState, party: int, notice: TransferNotice) -> Change:
    """The event a node emits for the arbiter's TransferNotice (node.transfer_notices, ADR
    0321): a checkpoint's payout booked is ``checkpoint.paid``, the final close's is
    ``payout.booked``; a rejection or return is ``payout.rejected`` / ``payout.returned``
    with the bank's reason."""
    if notice.status == "booked":
        type_ = "checkpoint.paid" if notice.checkpoint else "payout.booked"
    else:
        type_ = NOTICE_EVENTS[notice.status]
    data: dict[str, Any] = {
        "role": "opener" if state.us == 0 else "peer", "currency": state.terms.currency,
        "party": "opener" if party == 0 else "peer", "ours": party == state.us,
        "amount": minor(notice.amount, state.terms.currency), "reference": notice.reference,
        "checkpoint": notice.checkpoint, "attempt": notice.attempt, "source": "arbiter"}
    if notice.reason:
        data["reason"] = notice.reason
    return type_, data


def transfer_change(row: Transfer, record: PaymentRecord) -> Change | None:
    """A bank transfer of ours that the bank refused or returned (node.transfers): the
    deposit or payout it was, with the bank's reason."""
    status = record.status.value
    if status == row.status or status not in ("rejected", "returned"):
        return None
    kind = "deposit" if row.purpose == "deposit" else "payout"
    type_ = f"{kind}.rejected" if kind == "deposit" or status == "rejected" else "payout.returned"
    return type_, {"role": "arbiter" if kind == "payout" else "opener" if row.party == 0
                   else "peer", "currency": row.currency,
                   "amount": minor(row.amount_minor, row.currency), "reference": row.reference,
                   "status": status, "reason_code": record.reason_code or "",
                   "reason": (record.reason or "")[:200]}


@dataclass(frozen=True, slots=True)
class Report:
    """What the last `payment.received` of a channel covered."""

    nonce: int = 0
    amount: int = 0
    quantities: tuple[int, ...] = ()
    reported_ms: int = 0


def payment_change(report: Report, state: ch.ChannelState, now_ms: int, interval_ms: int,
                   *, force: bool = False) -> tuple[Change, Report] | None:
    """The `payment.received` due on `state` (and the report it leaves), or None: nothing
    new received, or the last one is younger than the interval (unless `force`)."""
    flow = state.received
    if flow.nonce <= report.nonce or (not force and now_ms - report.reported_ms < interval_ms):
        return None
    old_q = report.quantities or (0,) * len(flow.quantities)
    units = {line.unit: format_decimal(new - old, line.quantity_scale)
             for line, old, new in zip(state.terms.tariff, old_q, flow.quantities, strict=True)
             if new != old}
    data = {"role": "opener" if state.us == 0 else "peer", "currency": state.terms.currency,
            "amount": scaled(flow.amount - report.amount, state),
            "updates": flow.nonce - report.nonce, "from_nonce": report.nonce + 1,
            "to_nonce": flow.nonce, "units": units,
            "total_received": scaled(flow.amount, state),
            "since_ms": report.reported_ms or None, "until_ms": now_ms}
    return ("payment.received", data), Report(flow.nonce, flow.amount, tuple(flow.quantities),
                                              now_ms)


__all__ = ["EVENT_TYPES", "Change", "Report", "channel_changes", "escrow_changes",
           "matches", "notice_change", "parse_types", "payment_change", "transfer_change"]
