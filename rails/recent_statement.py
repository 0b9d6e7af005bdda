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
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

Fetch = Callable[[datetime | None], Awaitable[list[dict[str, Any]]]]
"""The bank's transactions booked at or after a time (None: all it keeps)."""
Parse = Callable[[Any], datetime]
"""A transaction's ``BookingDateTime`` as an aware datetime (raises ValueError if not one)."""

OVERLAP = timedelta(seconds=2)
"""Asked again before the latest booking time seen: a bank's clock and its ordering of
transactions booked in the same instant are not ours to trust to the microsecond."""
RETAIN = timedelta(days=35)
MAX_AGE_S = 0.2
"""Transactions read less than this long ago are fresh enough: a poll that settles many
payments at once reads the statement once, not once a payment."""


class RecentStatement:
    def __init__(self, fetch: Fetch, parse: Parse, *, overlap: timedelta = OVERLAP,
                 retain: timedelta = RETAIN, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._parse = parse
        self._overlap = overlap
        self._retain = retain
        self._max_age_s = max_age_s
        self._clock = clock
        self._held: dict[str, tuple[datetime, dict[str, Any]]] = {}
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
        if whole:
            await self._read(when, when)
        elif not self._holds(when):
            await self._read(when, when)
            self._whole = when is None
            self._covered = when if self._covered is None or when is None \
                else min(self._covered, when)
        elif self._read_at is None or self._clock() - self._read_at >= self._max_age_s:
            await self._read(self._resume_from(), when)
        return [t for booked, t in sorted(self._held.values(), key=lambda e: e[0])
                if when is None or booked >= when]

    def _holds(self, when: datetime | None) -> bool:
        if self._read_at is None:
            return False
        if when is None:
            return self._whole
        return self._whole or (self._covered is not None and when >= self._covered)

    def _resume_from(self) -> datetime | None:
        if not self._held:
            return self._covered
        latest = max(booked for booked, _ in self._held.values())
        start = latest - self._overlap
        pending = [booked for booked, t in self._held.values() if t.get("Status") != "Booked"]
        return min([start, *pending])

    async def _read(self, start: datetime | None, asked: datetime | None) -> None:
        txns = await self._fetch(start)
        self.reads += 1
        for t in txns:
            self._held[str(t["TransactionId"])] = (self._parse(t["BookingDateTime"]), t)
        self._read_at = self._clock()
        if asked is not None:  # never what this request asked for
            self._forget(asked)

    def _forget(self, asked: datetime) -> None:
        if not self._held:
            return
        latest = max(booked for booked, _ in self._held.values())
        horizon = min(latest - self._retain, asked)
        old = [key for key, (booked, _) in self._held.items() if booked < horizon]
        for key in old:
            del self._held[key]
        if old:
            self._whole = False
            self._covered = horizon if self._covered is None else max(self._covered, horizon)
