"""Reconciliation: what the bank's statement shows, against the transfers we expect it to show.

A payout or deposit is *settled* when, and only when, a statement of our own account (camt.053 or
an intraday camt.054 for SEPA, BAI2 for ACH, the account's transactions for Open Banking) carries
a booked debit with the payment's end-to-end id, its amount and its currency. The bank's word
that it "booked" a payment (a pain.002 ``ACSC``, an OB ``AcceptedSettlementCompleted``) is an
acceptance, not a settlement: it is the statement that shows the money moved.

:func:`match` is pure (no I/O, the clock is an argument): booked statement entries and the
transfers we expect → :class:`Matching`, the matches and the differences. A difference is never
settled silently; each one names its kind and says why in words an operator can act on:

- ``amount_mismatch`` / ``currency_mismatch``: an entry with our end-to-end id but another amount
  or currency (the payment is *not* settled; the entry is kept for the operator);
- ``missing_booking``: no booked entry for a payment submitted longer ago than the deadline;
- ``unknown_entry``: a debit from our account (or a return credit) whose end-to-end id is none
  of ours — money moved that nobody here asked for;
- ``duplicate_booking``: more than one debit for one end-to-end id — paid twice.

Credits without a return reason are money others sent (deposits into an escrow account, read by
:meth:`rails.port.Rail.incoming_credits`), not differences. Entries not booked yet (``PDNG``)
are ignored: they prove nothing either way.

A rail asks :func:`verdict` for one payment's status from a matching; the node only asks the
rail for a status and never decides settlement itself.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from rails.port import EntryDirection, PaymentStatus, Reconciliation, StatementEntry
from rails.store import StoredSubmission

DEFAULT_BOOKING_DEADLINE = timedelta(days=3)
"""How long after submission a payment may go without a booked statement entry before it is
raised as ``missing_booking``: SEPA SCT books D+1, ACH credits settle in one or two banking days,
Faster Payments within the hour; three calendar days covers a weekend. A rail may be given its
own deadline."""


@dataclass(frozen=True, slots=True)
class Expected:
    """A transfer we submitted and expect to see debited from our account."""

    key: str
    """The payment's idempotency key."""
    end_to_end_id: str
    amount_minor: int
    currency: str
    submitted_at: datetime | None = None
    """When it was handed to the bank; None: no deadline applies (it is never missing)."""


class Outcome(enum.StrEnum):
    BOOKED = "booked"
    """A booked debit with the payment's end-to-end id, amount and currency: settled."""
    RETURNED = "returned"
    """A booked credit with the payment's end-to-end id and a return reason."""


@dataclass(frozen=True, slots=True)
class Match:
    key: str
    outcome: Outcome
    entry: StatementEntry


class DifferenceKind(enum.StrEnum):
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    MISSING_BOOKING = "missing_booking"
    UNKNOWN_ENTRY = "unknown_entry"
    DUPLICATE_BOOKING = "duplicate_booking"


@dataclass(frozen=True, slots=True)
class Difference:
    """Something the statement and our submissions disagree on; `reason` is for the operator."""

    kind: DifferenceKind
    reason: str
    key: str | None = None
    entry: StatementEntry | None = None


@dataclass(frozen=True, slots=True)
class Matching:
    matches: tuple[Match, ...] = ()
    differences: tuple[Difference, ...] = ()
    waiting: tuple[str, ...] = ()
    """Keys of payments not on the statement yet and still within the deadline."""

    def for_key(self, key: str) -> tuple[list[Match], list[Difference]]:
        return ([m for m in self.matches if m.key == key],
                [d for d in self.differences if d.key == key])


def _settles(entry: StatementEntry) -> bool:
    return entry.direction is EntryDirection.DEBIT and entry.return_reason is None


def _returns(entry: StatementEntry) -> bool:
    return entry.direction is EntryDirection.CREDIT and entry.return_reason is not None


def match(entries: Iterable[StatementEntry], expected: Iterable[Expected], *,
          now: datetime, deadline: timedelta = DEFAULT_BOOKING_DEADLINE) -> Matching:
    """Match booked `entries` to `expected` transfers by end-to-end id, then amount and currency.

    The same entry seen twice (a camt.054 and the camt.053 that repeats it, both with one entry
    id) counts once.
    """
    by_e2e: Mapping[str, Expected] = {e.end_to_end_id: e for e in expected}
    seen: set[str] = set()
    matches: list[Match] = []
    differences: list[Difference] = []
    settled: dict[str, StatementEntry] = {}
    for entry in entries:
        if not entry.booked or entry.entry_id in seen:
            continue
        seen.add(entry.entry_id)
        if not (_settles(entry) or _returns(entry)):
            continue  # money someone else sent: a credit, not ours to reconcile
        exp = by_e2e.get(entry.end_to_end_id or "")
        if exp is None:
            what = "debit" if _settles(entry) else "return credit"
            differences.append(Difference(
                DifferenceKind.UNKNOWN_ENTRY,
                f"{what} {entry.entry_id} of {entry.amount_minor} {entry.currency} "
                f"(end-to-end id {entry.end_to_end_id or 'none'}) matches no payment we made",
                entry=entry))
            continue
        if entry.currency != exp.currency:
            differences.append(Difference(
                DifferenceKind.CURRENCY_MISMATCH,
                f"entry {entry.entry_id} is in {entry.currency}; payment {exp.key} was "
                f"{exp.amount_minor} {exp.currency}", key=exp.key, entry=entry))
            continue
        if entry.amount_minor != exp.amount_minor:
            differences.append(Difference(
                DifferenceKind.AMOUNT_MISMATCH,
                f"entry {entry.entry_id} shows {entry.amount_minor} {entry.currency}; payment "
                f"{exp.key} was {exp.amount_minor} {exp.currency}", key=exp.key, entry=entry))
            continue
        if _returns(entry):
            matches.append(Match(exp.key, Outcome.RETURNED, entry))
            continue
        if exp.key in settled:
            differences.append(Difference(
                DifferenceKind.DUPLICATE_BOOKING,
                f"payment {exp.key} is debited twice: entries {settled[exp.key].entry_id} and "
                f"{entry.entry_id}", key=exp.key, entry=entry))
            continue
        settled[exp.key] = entry
        matches.append(Match(exp.key, Outcome.BOOKED, entry))
    on_statement = {m.key for m in matches} | {d.key for d in differences if d.key}
    waiting: list[str] = []
    for exp in by_e2e.values():
        if exp.key in on_statement:
            continue
        if exp.submitted_at is not None and now - exp.submitted_at > deadline:
            differences.append(Difference(
                DifferenceKind.MISSING_BOOKING,
                f"payment {exp.key} ({exp.amount_minor} {exp.currency}, end-to-end id "
                f"{exp.end_to_end_id}) submitted {exp.submitted_at.isoformat()} is not booked "
                f"on the statement after {deadline}", key=exp.key))
        else:
            waiting.append(exp.key)
    return Matching(tuple(matches), tuple(differences), tuple(waiting))


def one_view(*sources: Iterable[StatementEntry]) -> list[StatementEntry]:
    """The entries of several reports of one account in different formats (a camt.054 and a
    BAI2 statement), with each booking once: an entry of a later source that matches one of
    an earlier source (direction, end-to-end id, amount, currency, booking day) is that same
    booking, as often as the earlier source shows it. A booking a later source shows more
    often stays more often (a duplicate debit is not hidden)."""
    def shape(e: StatementEntry) -> tuple[object, ...]:
        return (e.direction, e.end_to_end_id, e.amount_minor, e.currency, e.booking_date,
                e.booked)

    out: list[StatementEntry] = []
    for source in sources:
        seen: dict[tuple[object, ...], int] = {}
        for e in out:
            seen[shape(e)] = seen.get(shape(e), 0) + 1
        for e in source:
            if seen.get(shape(e), 0) > 0:
                seen[shape(e)] -= 1
                continue
            out.append(e)
    return out


def expected_of(stored: StoredSubmission) -> Expected:
    """What a submission kept by an adapter's store expects the statement to show (its
    ``meta`` carries the end-to-end id and, from this version on, ``submitted_at``)."""
    submitted = stored.meta.get("submitted_at")
    return Expected(key=stored.idempotency_key, end_to_end_id=stored.meta["end_to_end_id"],
                    amount_minor=int(stored.instruction["amount_minor"]),
                    currency=str(stored.instruction["currency"]),
                    submitted_at=datetime.fromisoformat(submitted) if submitted else None)


def in_period(day: date | None, since: date | None, until: date | None) -> bool:
    """Whether `day` is in the inclusive period (an unknown day is in every period)."""
    return day is None or ((since is None or day >= since) and (until is None or day <= until))


def reconcile_period(entries: Iterable[StatementEntry], submissions: Iterable[StoredSubmission],
                     *, now: datetime, deadline: timedelta, since: date | None = None,
                     until: date | None = None) -> tuple[Matching, Reconciliation]:
    """A rail's reconciliation for a period: entries booked and (not rejected) submissions
    made in it, matched; `outstanding` is every submission still waiting (an adapter may
    narrow it with what it knows of their status)."""
    booked_in = [e for e in entries if in_period(e.booking_date, since, until)]
    expected = []
    for sub in submissions:
        if sub.record is not None and sub.record.status is PaymentStatus.REJECTED:
            continue
        exp = expected_of(sub)
        if in_period(exp.submitted_at.date() if exp.submitted_at else None, since, until):
            expected.append(exp)
    matching = match(booked_in, expected, now=now, deadline=deadline)
    matched = {m.entry.entry_id for m in matching.matches}
    return matching, Reconciliation(
        booked={m.key: m.entry for m in matching.matches if m.outcome is Outcome.BOOKED},
        returned={m.key: m.entry for m in matching.matches if m.outcome is Outcome.RETURNED},
        outstanding=matching.waiting,
        unmatched=tuple(e for e in booked_in if e.entry_id not in matched),
        differences=matching.differences)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: PaymentStatus | None
    """BOOKED, RETURNED or UNRECONCILED; None when the statement says nothing yet."""
    reason_code: str | None = None
    reason: str | None = None


def verdict(matching: Matching, key: str) -> Verdict:
    """What the statement says of one payment: a difference outranks a match (never settle a
    payment the operator must look at), a return outranks a booking."""
    found, differences = matching.for_key(key)
    if differences:
        first = differences[0]
        return Verdict(PaymentStatus.UNRECONCILED, first.kind.value,
                       "; ".join(d.reason for d in differences))
    returned = [m for m in found if m.outcome is Outcome.RETURNED]
    if returned:
        return Verdict(PaymentStatus.RETURNED, returned[0].entry.return_reason)
    if found:
        return Verdict(PaymentStatus.BOOKED)
    return Verdict(None)
