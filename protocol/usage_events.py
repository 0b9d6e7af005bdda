"""Usage events: idempotent metered events priced by the tariff and bound into a proof.

Sans-I/O (specs/0003 §5.4). An event is `(id, quantities, reference, time_ms, source, type)`;
its *key* a digest of the channel and its id (unique per channel), its *content digest* a
digest of the rest.
Several events may share one balance proof: the proof's usage reference is then the
*commitment* ``ev1:`` + base64url(SHA-256 over the canonical list of ``[id, content]`` pairs), and
since the reference is hashed into the proof's running usage digest (specs/0003 §6), the signed
proof binds exactly those events, in that order. The payer keeps the pairs (its deduplication
rows), so anyone holding them can recompute the commitment of a proof.

:func:`plan` decides, for a batch, what each event is: accepted (with its price), a duplicate
of one already accepted (its original result), or refused (a code). The node stores and signs.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from protocol.encoding import pack
from protocol.tariff import TariffLine
from protocol.types import MAX_AMOUNT

MAX_BATCH = 100
"""Events in one request (as Stripe's meter event stream and Lago's batch endpoint)."""
KEY_BYTES = 16
"""Bytes of SHA-256(id) kept per event: a collision among 2^32 ids has odds of 2^-64."""
CONTENT_BYTES = 16
"""Bytes of SHA-256(content) kept per event."""
COMMITMENT_PREFIX = "ev1:"
"""A proof reference that starts with this is a commitment to the events it carries."""
AGGREGATE_REFERENCE = "events"
"""How usage aggregates (per reference and hour) name the proofs that carry events: the
commitment differs for every proof, the aggregate row must not."""
MAX_FUTURE_MS = 300_000
"""An event may be stamped at most 5 minutes ahead of the node's clock (clock skew): its
deduplication row is kept until its time plus the window, so this bounds how long."""


class Outcome(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class UsageEvent:
    id: str
    quantities: tuple[int, ...]
    """The event's delta per tariff line, in tariff order, at each line's quantity scale."""
    reference: str
    time_ms: int
    source: str = ""
    """CloudEvents `source` (content, not identity: the id alone is unique per channel)."""
    type: str = ""
    content: bytes = field(init=False, repr=False, compare=False)
    """SHA-256 of everything but the id (its first CONTENT_BYTES), computed once: the plan,
    the deduplication row and the commitment all use it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "content", hashlib.sha256(pack([
            "usage-event/1", list(self.quantities), self.reference, self.time_ms, self.source,
            self.type])).digest()[:CONTENT_BYTES])


def event_key(channel_id: bytes, event_id: str) -> bytes:
    """The deduplication key of an event id on a channel (the id is unique per channel)."""
    return hashlib.sha256(b"usage-event-id/1" + channel_id + event_id.encode()).digest()[
        :KEY_BYTES]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the deduplication window holds for an event already accepted."""

    content: bytes
    nonce: int
    amount: int


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    nonce: int = 0
    """The proof that carries the event (accepted: the next proof's nonce)."""
    amount: int = 0
    """Its price at channel scale (a duplicate: the original price; it charges nothing now)."""
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    decisions: tuple[Decision, ...]
    """One per event, in order."""
    accepted: tuple[int, ...]
    """Indices of the accepted events (what the next proof carries, in this order)."""
    quantities: tuple[int, ...]
    """Their summed deltas per tariff line (the next proof's ActionPay)."""
    reference: str
    """The commitment to them ("" when none was accepted)."""


def commitment(pairs: Sequence[tuple[str, bytes]]) -> str:
    """The proof reference binding `(id, content digest)` pairs, in order (47 characters)."""
    digest = hashlib.sha256(pack(["usage-events/1", [[i, c] for i, c in pairs]])).digest()
    return COMMITMENT_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def aggregate_reference(reference: str) -> str:
    """The usage-aggregate name of a proof reference (a commitment aggregates as "events")."""
    return AGGREGATE_REFERENCE if reference.startswith(COMMITMENT_PREFIX) else reference


def plan(
    events: Sequence[UsageEvent],
    *,
    tariff: Sequence[TariffLine],
    sent_quantities: Sequence[int],
    sent_amount: int,
    capacity: int,
    next_nonce: int,
    recorded: Mapping[str, Recorded],
    now_ms: int,
    window_ms: int,
    room: int | None = None,
) -> Plan:
    """Decide every event of a batch, in order: refused when outside the window, empty, an id
    reused with other content, or beyond the capacity; a duplicate when its id and content were
    accepted before (`recorded`) or earlier in this batch; otherwise accepted at its marginal
    price (the cumulative tariff after it less before it, so graduated tiers price in order).
    `recorded` holds what the window remembers of these ids, by id; `room` is how many more
    ids the window may hold (beyond it: refused `DEDUP_FULL`)."""
    decisions: list[Decision] = []
    accepted: list[int] = []
    seen: dict[str, tuple[bytes, Decision]] = {}
    cumulative = list(sent_quantities)
    priced = [line.amount(q) for line, q in zip(tariff, cumulative, strict=True)]
    """What each line's cumulative quantity costs: an event reprices only the lines it has."""
    amount = sent_amount  # the direct part (sent_amount less the tariff's) stays as it is
    pairs: list[tuple[str, bytes]] = []
    for index, event in enumerate(events):
        content = event.content
        earlier = seen.get(event.id)
        old = recorded.get(event.id)
        if earlier is not None or old is not None:
            held = earlier[0] if earlier is not None else old.content  # type: ignore[union-attr]
            if held != content:
                decisions.append(_refuse("EVENT_ID_REUSED", f"event {event.id!r} was sent "
                                         "before with other content; an id names one event"))
            elif earlier is not None:
                first = earlier[1]
                decisions.append(Decision(Outcome.DUPLICATE, first.nonce, first.amount))
            else:
                decisions.append(Decision(Outcome.DUPLICATE, old.nonce, old.amount))  # type: ignore[union-attr]
            continue
        if event.time_ms < now_ms - window_ms:
            decisions.append(_refuse("EVENT_TOO_OLD", f"event {event.id!r} is older than the "
                                     f"deduplication window ({window_ms // 1000} s)"))
            continue
        if event.time_ms > now_ms + MAX_FUTURE_MS:
            decisions.append(_refuse("EVENT_IN_FUTURE", f"event {event.id!r} is stamped more "
                                     f"than {MAX_FUTURE_MS // 1000} s ahead of this node"))
            continue
        if len(event.quantities) != len(tariff) or any(q < 0 for q in event.quantities):
            decisions.append(_refuse("BAD_UNITS", "one non-negative quantity per tariff line"))
            continue
        if not any(event.quantities):
            decisions.append(_refuse("NOTHING_TO_PAY", f"event {event.id!r} has no units"))
            continue
        if room is not None and len(accepted) >= room:
            decisions.append(_refuse("DEDUP_FULL", "the deduplication window holds as many "
                                     "ids as it may ([ingest] max_ids); try again later"))
            continue
        lines = [(i, cumulative[i] + q, tariff[i].amount(cumulative[i] + q))
                 for i, q in enumerate(event.quantities) if q]
        new_amount = amount + sum(price - priced[i] for i, _, price in lines)
        if new_amount > capacity or new_amount > MAX_AMOUNT or any(
                after > MAX_AMOUNT for _, after, _ in lines):
            decisions.append(_refuse("CAPACITY_EXCEEDED", f"event {event.id!r} would exceed "
                                     "what this channel can still pay"))
            continue
        decision = Decision(Outcome.ACCEPTED, next_nonce, new_amount - amount)
        for i, after, price in lines:
            cumulative[i], priced[i] = after, price
        amount = new_amount
        seen[event.id] = (content, decision)
        decisions.append(decision)
        accepted.append(index)
        pairs.append((event.id, content))
    deltas = tuple(a - b for a, b in zip(cumulative, sent_quantities, strict=True))
    return Plan(tuple(decisions), tuple(accepted), deltas, commitment(pairs) if pairs else "")


def _refuse(code: str, message: str) -> Decision:
    return Decision(Outcome.REFUSED, code=code, message=message)


__all__ = [
    "AGGREGATE_REFERENCE",
    "MAX_BATCH",
    "Decision",
    "Outcome",
    "Plan",
    "Recorded",
    "UsageEvent",
    "aggregate_reference",
    "commitment",
    "event_key",
    "plan",
]
