"""JSON shapes of the admin API (specs/admin-api.yaml). Amounts are decimal strings."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from node.context import Context
from node.errors import NotFound
from node.storage.models import Settlement, Transfer
from node.storage.repository import BUCKET_MS
from protocol import channel as ch
from protocol.messages import ChannelTerms
from protocol.money import allocate, currency_exponent, format_decimal, to_minor_units
from protocol.payout import payouts
from protocol.references import Purpose, bank_reference
from protocol.schedule import SettleSchedule, next_checkpoint_ms, unpaid
from protocol.types import Amount


def money(amount: int, state: ch.ChannelState) -> dict[str, str]:
    """Both renderings: at the currency exponent (rounded down) and at full scale."""
    terms = state.terms
    exponent = currency_exponent(terms.currency)
    minor = to_minor_units(Amount(amount), terms.scale, exponent) if amount >= 0 else -(
        to_minor_units(Amount(-amount), terms.scale, exponent))
    return {
        "amount": format_decimal(minor, exponent, min_places=exponent),
        "precise": format_decimal(amount, terms.scale, min_places=exponent),
        "currency": terms.currency,
    }


def minor(amount_minor: int, currency: str) -> dict[str, str]:
    exponent = currency_exponent(currency)
    return {"amount": format_decimal(amount_minor, exponent, min_places=exponent),
            "currency": currency}


def shares(state: ch.ChannelState, opener_sent: int, peer_sent: int) -> tuple[int, int]:
    """What the arbiter pays each side for these sent totals, on what it confirmed it holds
    (protocol.payout: the one rule the arbiter's machine applies too)."""
    result = payouts(state.terms, state.funded, opener_sent, peer_sent,
                     checkpoint=state.checkpoint, topped_up=state.topped_up,
                     withdrawn=state.withdrawn)
    return result.opener, result.peer


def balance(state: ch.ChannelState) -> dict[str, str]:
    """Our balance (ADR 0151): `precise` is exactly what `pay` still accepts (deposit − sent +
    received); `amount` is that rounded towards zero at the currency exponent, so paying the
    amount shown always succeeds; `payout` is what the arbiter would pay us if the channel
    closed now, by the payout rule (0004 §4: the net payee is rounded down and the payer gets
    the remainder, so a payer's payout can be one minor unit above `amount`)."""
    terms = state.terms
    exponent = currency_exponent(terms.currency)
    ours = shares(state, state.flows[0].amount, state.flows[1].amount)[state.us]
    return {**money(state.balance(), state),
            "payout": format_decimal(ours, exponent, min_places=exponent)}


def channel_summary(state: ch.ChannelState) -> dict[str, Any]:
    terms = state.terms
    return {
        "id": state.channel_id.hex(),
        "peer": terms.parties()[state.them].hex(),
        "role": "opener" if state.us == 0 else "peer",
        "arbiter": terms.arbiter.hex(),
        "phase": state.phase.value,
        "currency": terms.currency,
        "balance": balance(state),
        "sent": money(state.sent.amount, state),
        "received": money(state.received.amount, state),
    }


def transfer_json(row: Transfer) -> dict[str, Any]:
    return {
        "purpose": row.purpose,
        "party": "opener" if row.party == 0 else "peer",
        "amount": minor(row.amount_minor, row.currency),
        "reference": row.reference,
        "idempotency_key": row.idempotency_key,
        "end_to_end_id": row.end_to_end_id,
        "status": row.status,
        "reason": row.reason,
        "creditor": json.loads(row.creditor),
        "source": "rail",
    }


def expected_payouts(state: ch.ChannelState) -> tuple[int, int] | None:
    """The payouts the signed final state implies (what the arbiter will pay), in minor units.

    None while no cooperative close is signed (a dispute decides it at the arbiter).
    """
    close = state.close
    if close is None or not close.fully_signed():
        return None
    return shares(state, close.opener_amount, close.peer_amount)


def settlement_transfers(state: ch.ChannelState, ours: list[Transfer]) -> list[dict[str, Any]]:
    """Our own rail transfers plus what the arbiter reported (deposits seen, payouts booked)
    or will make (payouts expected from the signed final state)."""
    out = [transfer_json(t) for t in ours]
    terms = state.terms
    known = {t["reference"] for t in out}
    party_name = ("opener", "peer")
    for party, conf in enumerate(state.funding):
        if conf is not None and conf.bank_reference not in known:
            out.append({"purpose": "deposit", "party": party_name[party],
                        "amount": minor(conf.amount, terms.currency),
                        "reference": conf.bank_reference, "status": "booked",
                        "source": "arbiter"})
    notice = state.payout
    if notice is not None:
        for party, (amount, ref) in enumerate(((notice.opener_payout, notice.opener_reference),
                                               (notice.peer_payout, notice.peer_reference))):
            if amount:
                out.append({"purpose": "payout", "party": party_name[party],
                            "amount": minor(amount, terms.currency), "reference": ref,
                            "status": "booked", "source": "arbiter"})
    elif state.phase in (ch.Phase.CLOSED, ch.Phase.DISPUTED):
        expected = expected_payouts(state)
        for party in (0, 1):
            if expected is not None and expected[party] == 0:
                continue
            out.append({"purpose": "payout", "party": party_name[party],
                        "amount": None if expected is None else
                        minor(expected[party], terms.currency),
                        "reference": bank_reference(state.channel_id, Purpose.PAYOUT, party),
                        "status": "pending", "source": "arbiter"})
    return out


def tariff_json(terms: ChannelTerms) -> list[dict[str, Any]]:
    return [
        {"unit": line.unit, "quantity_scale": line.quantity_scale,
         "tiers": [{"up_to": None if t.up_to is None else
                    format_decimal(t.up_to, line.quantity_scale),
                    "price": format_decimal(t.price, terms.scale)} for t in line.tiers]}
        for line in terms.tariff
    ]


def channel_detail(state: ch.ChannelState, transfers: list[Transfer]) -> dict[str, Any]:
    terms = state.terms
    units = {
        "sent": {line.unit: format_decimal(q, line.quantity_scale)
                 for line, q in zip(terms.tariff, state.sent.quantities, strict=True)},
        "received": {line.unit: format_decimal(q, line.quantity_scale)
                     for line, q in zip(terms.tariff, state.received.quantities, strict=True)},
    }
    dispute_deadline = None
    if state.dispute_deadline_ms is not None:
        dispute_deadline = datetime.fromtimestamp(
            state.dispute_deadline_ms / 1000, tz=UTC).isoformat(timespec="seconds")
    return {
        **channel_summary(state),
        "opener": terms.opener.hex(),
        "scale": terms.scale,
        "deposit": {"ours": minor(terms.deposits()[state.us], terms.currency),
                    "peer": minor(terms.deposits()[state.them], terms.currency)},
        "funded": {"ours": minor(state.funded[state.us], terms.currency),
                   "peer": minor(state.funded[state.them], terms.currency)},
        "tariff": tariff_json(terms),
        "nonce_sent": state.sent.nonce,
        "nonce_received": state.received.nonce,
        "acked_nonce_sent": state.sent.acked_nonce,
        "units": units,
        "dispute_window_ms": terms.dispute_window_ms,
        "dispute_deadline": dispute_deadline,
        "settlement": settlement_transfers(state, transfers),
    }


def signed(minor_units: int, exponent: int) -> str:
    """A signed amount at the currency exponent, all its decimals: ``-183.27``, ``5.000``."""
    return format_decimal(minor_units, exponent, min_places=exponent)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


async def statement(ctx: Context, state: ch.ChannelState,
                    transfers: list[Transfer]) -> dict[str, Any]:
    """Line items per (direction, unit, reference); subtotals per unit; the net; transfers.

    Each line and subtotal carries `allocated`: its signed share (received +, sent −) of the
    net at the currency exponent by the largest-remainder rule (ADR 0152), so the allocated
    lines add up to their subtotals and to the net exactly, and the net is the exact net
    rounded towards zero — what the payout rule moves between the two banks."""
    cid = state.channel_id.hex()
    rows = await ctx.repo.usage(cid)
    terms = state.terms
    exponent = currency_exponent(terms.currency)
    lines_by_unit = {line.unit: line for line in terms.tariff}
    grouped: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        g = grouped[(row.sender, row.unit, row.reference)]
        g[0] += row.quantity
        g[1] += row.amount
        g[2] += row.updates
    keys = sorted(grouped)
    exact = [grouped[k][1] * (-1 if k[0] == state.us else 1) for k in keys]
    shares = allocate(exact, 10 ** (terms.scale - exponent))
    items = []
    subtotals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (sender, unit, reference), share in zip(keys, shares, strict=True):
        quantity, amount, updates = grouped[(sender, unit, reference)]
        direction = "sent" if sender == state.us else "received"
        line = lines_by_unit.get(unit)
        items.append({
            "direction": direction,
            "unit": unit,
            "reference": reference,
            "quantity": format_decimal(quantity, line.quantity_scale) if line else None,
            "unit_price": format_decimal(line.tiers[0].price, terms.scale) if line else None,
            "graduated": bool(line and len(line.tiers) > 1),
            "updates": updates,
            "amount": money(amount, state),
            "allocated": signed(share, exponent),
        })
        subtotals[(direction, unit)][0] += amount
        subtotals[(direction, unit)][1] += share
    by_direction = {d: sum(sh for (dd, _), (_, sh) in subtotals.items() if dd == d)
                    for d in ("sent", "received")}
    net = state.received.amount - state.sent.amount
    buckets = [row.bucket_ms for row in rows]
    peer_id = terms.parties()[state.them].hex()
    try:
        peer_name = (await ctx.peer(peer_id)).name or None
    except NotFound:
        peer_name = None
    return {
        "channel": cid,
        "counterparty": {"id": peer_id, "name": peer_name},
        "period": {"from": _iso(min(buckets)), "to": _iso(max(buckets) + BUCKET_MS)}
        if buckets else None,
        "currency": terms.currency,
        "exponent": exponent,
        "scale": terms.scale,
        "phase": state.phase.value,
        "items": items,
        "subtotals": [{"direction": d, "unit": u, "amount": money(a, state),
                       "allocated": signed(sh, exponent)}
                      for (d, u), (a, sh) in sorted(subtotals.items())],
        "sent": money(state.sent.amount, state),
        "received": money(state.received.amount, state),
        "net": money(net, state),
        "allocated": {"sent": signed(by_direction["sent"], exponent),
                      "received": signed(by_direction["received"], exponent),
                      "net": signed(sum(shares), exponent)},
        "balance": balance(state),
        "transfers": settlement_transfers(state, transfers),
    }


def longlived_json(state: ch.ChannelState, schedule: SettleSchedule,
                   settlements: list[Settlement]) -> dict[str, Any]:
    """A long-lived channel's schedule, its next scheduled checkpoint, what it would pay now,
    its top-ups and every settlement at a checkpoint so far (specs/0003 §9)."""
    terms = state.terms
    due = next_checkpoint_ms(state, schedule)
    latest = state.checkpoint
    return {
        "schedule": {
            "every_ms": schedule.every_ms,
            "threshold": money(schedule.threshold, state) if schedule.threshold else None,
            "next_checkpoint": None if due is None else _iso(due),
            "next_checkpoint_ms": due,
        },
        "checkpoint": None if latest is None else {
            "seq": latest.seq, "opener_amount": money(latest.opener_amount, state),
            "peer_amount": money(latest.peer_amount, state)},
        "unpaid": money(unpaid(state), state) if state.phase is ch.Phase.OPEN else None,
        "topped_up": {"ours": minor(state.topped_up[state.us], terms.currency),
                      "peer": minor(state.topped_up[state.them], terms.currency)},
        "settlements": [settlement_json(row, terms.currency)
                        for row in sorted(settlements, key=_settlement_order)],
    }


def _settlement_order(row: Settlement) -> tuple[bool, int, int]:
    return row.seq == 0, row.seq, row.party  # the final close's payouts after the checkpoints


def settlement_json(row: Settlement, currency: str) -> dict[str, Any]:
    """One settlement with what the arbiter told of it (node.transfer_notices): `submitted`
    until then; `booked`, `rejected` or `returned` (with the bank's `reason`) after; `attempt`
    and `reference` are the live payment's (a returned payout is paid again under a new one).
    Checkpoint 0 is the final close's payout."""
    return {"checkpoint": row.seq, "party": ("opener", "peer")[row.party],
            "amount": minor(row.amount_minor, currency), "reference": row.reference,
            "status": row.status, "reason": row.reason or None, "attempt": row.attempt,
            "signed": _iso(row.signed_ms),
            "changed": _iso(row.changed_ms) if row.changed_ms else None}
