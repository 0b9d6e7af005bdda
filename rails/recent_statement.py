"""The recent part of an account's transactions, read incrementally (issue 13).

The Open Banking adapter asks its account's transactions whenever the bank calls a payment
settled (to see the debit booked, ADR 0130). Read whole each time, an account with 10,000
channels' deposits costs O(N) per payment and O(N²) per poll. :class:`RecentStatement` keeps
what it read, by transaction id, and asks the bank only from the latest booking time it has seen
(minus an overlap, and from the oldest pending transaction it holds, which the bank may book
later), merging what comes back: an answer replaces the copy held, so a pending transaction
that turned booked is seen booked. A request for an earlier window than held reads that window
once. A caller that does not find what it looks for asks for the whole window again (a bank
may show a booking late, back-dated: the rare case, not the poll's). Transactions booked more
than `retain` before the latest one are forgotten (asked again if anyone needs them).

What is held is indexed by end-to-end reference: :meth:`RecentStatement.with_reference` gives a
payment's own transactions (and any whose reference could not be read, for the caller's parser
to refuse) without sorting or matching the account's other 10,000 (ADR 0323). The latest
booking time, the oldest one and the pending transactions are kept as they are read, so a read
costs what the bank answered, not what is held.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

Fetch = Callable[[datetime | None], Awaitable[list[dict[str, Any]]]]
"""The bank's transactions booked at or after a time (None: all it keeps)."""
Parse = Callable[[Any], datetime]
"""A transaction's ``BookingDateTime`` as an aware datetime (raises ValueError if not one)."""
Reference = Callable[[dict[str, Any]], str | None]
"""A transaction's end-to-end reference, None where it has none (raises where it cannot be
read: such a transaction is given to every caller, whose parser refuses it)."""

OVERLAP = timedelta(seconds=2)
"""Asked again before the latest booking time seen: a bank's clock and its ordering of
transactions booked in the same instant are not ours to trust to the microsecond."""
RETAIN = timedelta(days=35)
MAX_AGE_S = 0.2
"""Transactions read less than this long ago are fresh enough: a poll that settles many
payments at once reads the statement once, not once a payment."""
UNREADABLE = "\x00unreadable"
"""The index key of transactions whose reference could not be read (no end-to-end id, at
most 35 characters of the SWIFT set, can be it)."""


def _no_reference(_txn: dict[str, Any]) -> str | None:
    return None


class RecentStatement:
    def __init__(self, fetch: Fetch, parse: Parse, *, reference: Reference = _no_reference,
                 overlap: timedelta = OVERLAP, retain: timedelta = RETAIN,
                 max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._parse = parse
        self._reference = reference
        self._overlap = overlap
        self._retain = retain
        self._max_age_s = max_age_s
        self._clock = clock
        self._held: dict[str, tuple[datetime, dict[str, Any]]] = {}
        self._refs: dict[str, str | None] = {}
        """Each held transaction's reference, as indexed in `_by_ref`."""
        self._by_ref: dict[str, set[str]] = {}
        self._pending: dict[str, datetime] = {}
        """Held transactions not booked yet (the bank may book them later), by id."""
        self._latest: datetime | None = None
        self._oldest: datetime | None = None
        self._covered: datetime | None = None
        """Everything booked at or after this is held (as of the last read)."""
        self._whole = False
        """The last full read (no lower bound) is held."""
        self._read_at: float | None = None
        self.reads = 0
        """Requests made to the bank (for tests and the bench)."""

    async def since(self, when: datetime | None, *, whole: bool = False
                    ) -> list[dict[str, Any]]:
        """The account's transactions booked at or after `when` (None: all the bank keeps),
        oldest first, the bank asked only for what may be new — or, with `whole`, for all of
        that window (a bank may show a booking late, under an earlier booking time: asked for
        when what the caller looks for is not there, the rare case)."""
        await self._refresh(when, whole=whole)
        return self._select(self._held, when)

    async def with_reference(self, when: datetime | None, reference: str, *,
                             fresh: bool = False, whole: bool = False) -> list[dict[str, Any]]:
        """What :meth:`since` gives, only the transactions with end-to-end `reference` (and
        those whose reference could not be read). `fresh`: the bank is asked for what may be
        new even if the last read is recent (what the caller looks for was not there)."""
        await self._refresh(when, whole=whole, fresh=fresh)
        ids = self._by_ref.get(reference, set()) | self._by_ref.get(UNREADABLE, set())
        return self._select(ids, when)

    def _select(self, ids: Iterable[str], when: datetime | None) -> list[dict[str, Any]]:
        held = (self._held[i] for i in ids)
        return [t for booked, t in sorted(held, key=lambda e: e[0])
                if when is None or booked >= when]

    async def _refresh(self, when: datetime | None, *, whole: bool = False,
                       fresh: bool = False) -> None:
        if whole:
            await self._read(when, when)
        elif not self._holds(when):
            await self._read(when, when)
            self._whole = when is None
            self._covered = when if self._covered is None or when is None \
                else min(self._covered, when)
        elif fresh or self._read_at is None \
                or self._clock() - self._read_at >= self._max_age_s:
            await self._read(self._resume_from(), when)

    def _holds(self, when: datetime | None) -> bool:
        if self._read_at is None:
            return False
        if when is None:
            return self._whole
        return self._whole or (self._covered is not None and when >= self._covered)

    def _resume_from(self) -> datetime | None:
        if self._latest is None:
            return self._covered
        return min([self._latest - self._overlap, *self._pending.values()])

    async def _read(self, start: datetime | None, asked: datetime | None) -> None:
        txns = await self._fetch(start)
        self.reads += 1
        for t in txns:
            self._hold(str(t["TransactionId"]), self._parse(t["BookingDateTime"]), t)
        self._read_at = self._clock()
        if asked is not None:  # never what this request asked for
            self._forget(asked)

    def _hold(self, tid: str, booked: datetime, txn: dict[str, Any]) -> None:
        if tid in self._held:
            self._unindex(tid)
        try:
            ref = self._reference(txn)
        except (KeyError, TypeError, ValueError, AttributeError):
            ref = UNREADABLE
        self._held[tid] = (booked, txn)
        self._refs[tid] = ref
        if ref is not None:
            self._by_ref.setdefault(ref, set()).add(tid)
        if txn.get("Status") != "Booked":
            self._pending[tid] = booked
        self._latest = booked if self._latest is None else max(self._latest, booked)
        self._oldest = booked if self._oldest is None else min(self._oldest, booked)

    def _unindex(self, tid: str) -> None:
        ref = self._refs.pop(tid, None)
        if ref is not None:
            ids = self._by_ref[ref]
            ids.discard(tid)
            if not ids:
                del self._by_ref[ref]
        self._pending.pop(tid, None)

    def _forget(self, asked: datetime) -> None:
        if self._latest is None or self._oldest is None:
            return
        horizon = min(self._latest - self._retain, asked)
        if self._oldest >= horizon:
            return  # nothing that old is held: no scan
        old = [key for key, (booked, _) in self._held.items() if booked < horizon]
        for key in old:
            self._unindex(key)
            del self._held[key]
        self._oldest = min((booked for booked, _ in self._held.values()), default=None)
        self._whole = False
        self._covered = horizon if self._covered is None else max(self._covered, horizon)
