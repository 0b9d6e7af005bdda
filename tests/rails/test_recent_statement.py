"""rails.recent_statement: the account's transactions read incrementally — the bank is asked
only from the latest booking time seen (or the oldest pending transaction held), a pending
transaction booked later is seen booked, an earlier window is read once, old ones are
forgotten, and a read within MAX_AGE_S is not repeated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rails.recent_statement import OVERLAP, RecentStatement

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


class Bank:
    """A statement the test appends to; records the lower bound of every request."""

    def __init__(self) -> None:
        self.txns: dict[str, dict[str, Any]] = {}
        self.asked: list[datetime | None] = []

    def book(self, tid: str, at: datetime, status: str = "Booked") -> None:
        self.txns[tid] = {"TransactionId": tid, "BookingDateTime": at.isoformat(),
                          "Status": status}

    async def fetch(self, since: datetime | None) -> list[dict[str, Any]]:
        self.asked.append(since)
        return [dict(t) for t in self.txns.values()
                if since is None or datetime.fromisoformat(t["BookingDateTime"]) >= since]


def ids(txns: list[dict[str, Any]]) -> list[str]:
    return [t["TransactionId"] for t in txns]


async def test_the_bank_is_asked_only_for_what_may_be_new() -> None:
    bank, now = Bank(), [0.0]
    recent = RecentStatement(bank.fetch, datetime.fromisoformat, clock=lambda: now[0])
    for i in range(5):
        bank.book(f"t{i}", T0 + timedelta(minutes=i))
    bank.book("p", T0 + timedelta(minutes=2, seconds=30), status="Pending")
    assert ids(await recent.since(T0)) == ["t0", "t1", "t2", "p", "t3", "t4"]
    assert bank.asked == [T0]

    now[0] += 0.05  # within MAX_AGE_S: what is held is fresh enough, the bank is not asked
    assert ids(await recent.since(T0 + timedelta(minutes=3))) == ["t3", "t4"]
    assert bank.asked == [T0]

    now[0] += 1.0
    bank.book("t5", T0 + timedelta(minutes=5))
    bank.book("p", T0 + timedelta(minutes=2, seconds=30))  # the pending one is booked now
    got = await recent.since(T0 + timedelta(minutes=2))
    # asked from the pending transaction, not from the start, nor only from the latest
    assert bank.asked[-1] == T0 + timedelta(minutes=2, seconds=30)
    assert ids(got) == ["t2", "p", "t3", "t4", "t5"]
    assert next(t for t in got if t["TransactionId"] == "p")["Status"] == "Booked"

    now[0] += 1.0
    await recent.since(T0 + timedelta(minutes=4))  # nothing pending: from the latest only
    assert bank.asked[-1] == T0 + timedelta(minutes=5) - OVERLAP

    now[0] += 1.0
    earlier = T0 - timedelta(hours=1)
    bank.book("old", T0 - timedelta(minutes=30))
    assert ids(await recent.since(earlier))[0] == "old"  # an earlier window: read once
    assert bank.asked[-1] == earlier
    assert recent.reads == len(bank.asked) == 4


async def test_old_transactions_are_forgotten_and_read_again_when_asked_for() -> None:
    bank = Bank()
    recent = RecentStatement(bank.fetch, datetime.fromisoformat, retain=timedelta(days=1),
                             max_age_s=0)
    bank.book("old", T0 - timedelta(days=3))
    bank.book("new", T0)
    assert ids(await recent.since(None)) == ["old", "new"]  # all of it, as asked
    assert ids(await recent.since(T0)) == ["new"]  # "old" is past the retention: forgotten
    assert ids(await recent.since(T0 - timedelta(days=4))) == ["old", "new"]  # read again
    assert bank.asked == [None, T0 - OVERLAP, T0 - timedelta(days=4)]


async def test_a_booking_shown_late_under_an_earlier_time_is_found_by_a_whole_read() -> None:
    bank = Bank()
    recent = RecentStatement(bank.fetch, datetime.fromisoformat, max_age_s=0)
    bank.book("t1", T0 + timedelta(minutes=10))
    assert ids(await recent.since(T0)) == ["t1"]
    bank.book("late", T0 + timedelta(minutes=1))  # shown now, booked nine minutes earlier
    assert ids(await recent.since(T0)) == ["t1"]  # what is new only: not seen
    assert ids(await recent.since(T0, whole=True)) == ["late", "t1"]
    assert bank.asked == [T0, T0 + timedelta(minutes=10) - OVERLAP, T0]


def ref_of(txn: dict[str, Any]) -> str | None:
    value = txn.get("Ref")
    if value == "garbled":
        raise TypeError("not a reference")
    return value


async def test_a_payments_own_transactions_come_from_the_index_by_reference() -> None:
    bank, now = Bank(), [0.0]
    recent = RecentStatement(bank.fetch, datetime.fromisoformat, reference=ref_of,
                             clock=lambda: now[0], retain=timedelta(days=1))
    for i in range(1000):  # an account with a thousand other payments
        bank.book(f"t{i}", T0 + timedelta(seconds=i))
        bank.txns[f"t{i}"]["Ref"] = f"E2E{i}"
    bank.book("x", T0 + timedelta(seconds=5), status="Pending")
    bank.txns["x"]["Ref"] = "E2E7"
    assert ids(await recent.with_reference(T0, "E2E7")) == ["x", "t7"]
    assert ids(await recent.with_reference(T0, "NOSUCH")) == []
    assert bank.asked == [T0]  # one read serves every payment of the poll

    bank.book("new", T0 + timedelta(seconds=2000))
    bank.txns["new"]["Ref"] = "E2E-NEW"
    assert ids(await recent.with_reference(T0, "E2E-NEW")) == []  # held is fresh: not asked
    assert ids(await recent.with_reference(T0, "E2E-NEW", fresh=True)) == ["new"]
    assert bank.asked[-1] == T0 + timedelta(seconds=5)  # from the pending one, not the start

    bank.txns["x"]["Ref"] = "E2E8"  # the bank's answer replaces the copy held, index too
    bank.txns["x"]["Status"] = "Booked"
    await recent.with_reference(T0, "E2E8", fresh=True)
    assert ids(await recent.with_reference(T0, "E2E7")) == ["t7"]
    assert ids(await recent.with_reference(T0, "E2E8")) == ["x", "t8"]
    assert bank.asked[-1] == T0 + timedelta(seconds=5)  # x was still pending when asked
    await recent.with_reference(T0, "E2E8", fresh=True)
    assert bank.asked[-1] == T0 + timedelta(seconds=2000) - OVERLAP  # nothing pending now

    bank.book("bad", T0 + timedelta(seconds=2001))
    bank.txns["bad"]["Ref"] = "garbled"  # unreadable: given to every caller, to refuse
    assert ids(await recent.with_reference(T0, "E2E9", fresh=True)) == ["t9", "bad"]

    later = T0 + timedelta(days=3)
    bank.book("late", later)
    bank.txns["late"]["Ref"] = "E2E9"
    got = await recent.with_reference(later - timedelta(hours=1), "E2E9", fresh=True)
    assert ids(got) == ["late"]
    # what was booked more than a day before the latest is forgotten, index and all: asked
    # for again, it is read again from the bank
    reads = recent.reads
    assert ids(await recent.with_reference(T0, "E2E7")) == ["t7", "bad"]
    assert (recent.reads, bank.asked[-1]) == (reads + 1, T0)
