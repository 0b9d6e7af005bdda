"""Events out (issue 11): the event log of real daemons, read as JSON pages and as server-sent
events resumed with ``after`` and ``Last-Event-ID``; payments received aggregated per interval."""

from __future__ import annotations

import itertools
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from node.cluster import Companies, NodeHandle, start_companies, wait_for
from tests.support import PG_URL, pg_databases

INTERVAL_MS = 400
SETTINGS = {"limits": {"payment_event_interval_ms": INTERVAL_MS}}





@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """SQLite (each daemon's default), or a PostgreSQL database per daemon (the event ids'
    commit order rests on an advisory lock there)."""
    if request.param == "sqlite":
        yield {}
        return
    if not PG_URL:
        pytest.skip("METERLINE_TEST_PG_URL is not set: the PostgreSQL event log is not tested")
    with pg_databases("events") as urls:
        yield urls


@pytest.fixture(scope="module")
def companies(tmp_path_factory: pytest.TempPathFactory,
              databases: dict[str, str]) -> Iterator[Companies]:
    c = start_companies(tmp_path_factory.mktemp("events-out"), settings=SETTINGS,
                        databases=databases)
    try:
        yield c
    finally:
        c.cluster.stop()


@pytest.fixture(scope="module")
def settled(companies: Companies) -> str:
    """A channel opened, paid 60 times in bursts, closed and settled."""
    man = companies.manufacturer
    cid = companies.open_channel(deposit="100.00 EUR")
    for _ in range(3):
        man.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "10"}, "repeat": 20})
    man.api("POST", f"/api/channels/{cid}/close", {})
    wait_for(lambda: man.api("GET", f"/api/channels/{cid}")["phase"] == "settled"
             and companies.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
             "the channel to settle on both sides")
    return cid


def all_events(node: NodeHandle, after: int = 0, **query: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        page = node.api("GET", f"/api/events?after={after}&limit=7{extra}")
        out += page["events"]
        assert page["last_id"] == (page["events"][-1]["id"] if page["events"] else after)
        after = page["last_id"]
        if not page["more"]:
            return out


def of(events: list[dict[str, Any]], cid: str) -> list[str]:
    return [e["type"] for e in events if e["channel_id"] == cid]


def test_each_party_logs_the_lifecycle_in_order(companies: Companies, settled: str) -> None:
    man = of(all_events(companies.manufacturer), settled)
    car = of(all_events(companies.carrier), settled)
    arb = of(all_events(companies.arbiter), settled)
    assert man[0] == car[0] == arb[0] == "channel.proposed"
    for types in (man, car):
        order = [t for t in types if t.startswith("channel.")]
        assert order == ["channel.proposed", "channel.opened", *(
            ["channel.closing"] if "channel.closing" in order else []),
            "channel.closed", "channel.settled"], types
        assert types.count("deposit.confirmed") == 2  # both deposits, as the arbiter signed
    assert arb.count("deposit.confirmed") == 2
    assert arb.count("payout.booked") == 2
    assert arb[-1] == "channel.settled"
    assert "payment.received" in car
    assert "payment.received" not in man


def test_ids_are_stable_and_monotonic(companies: Companies, settled: str) -> None:
    first = all_events(companies.carrier)
    again = all_events(companies.carrier)
    ids = [e["id"] for e in first]
    assert ids == sorted(set(ids))
    assert again[: len(first)] == first


def test_payments_received_are_aggregated_and_add_up(companies: Companies, settled: str) -> None:
    car = companies.carrier
    got = [e for e in all_events(car, types="payment.received") if e["channel_id"] == settled]
    channel = car.api("GET", f"/api/channels/{settled}")
    assert sum(e["data"]["updates"] for e in got) == 60  # every proof, once
    assert 1 <= len(got) < 60  # not one event per proof
    assert sum(Decimal(e["data"]["amount"]) for e in got) == Decimal(
        channel["received"]["precise"])
    assert sum(Decimal(e["data"]["units"]["km"]) for e in got) == 600
    nonces = [(e["data"]["from_nonce"], e["data"]["to_nonce"]) for e in got]
    assert nonces[0][0] == 1
    assert nonces[-1][1] == 60
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(nonces))


def test_the_interval_is_kept_and_the_rest_reported_without_new_payments(
        companies: Companies) -> None:
    man, car = companies.manufacturer, companies.carrier
    cid = companies.open_channel(deposit="100.00 EUR")
    start = car.api("GET", "/api/events?limit=1&types=payment.received")  # warm
    del start
    last = max([0, *(e["id"] for e in all_events(car))])
    began = time.monotonic()
    for _ in range(10):
        man.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "1"}, "wait": False})
    took_ms = (time.monotonic() - began) * 1000
    # the first goes out at once, the other nine once the interval passed — with no new payment
    wait_for(lambda: sum(e["data"]["updates"] for e in all_events(
        car, last, types="payment.received")) == 10, "all ten payments reported", 10)
    got = all_events(car, last, types="payment.received")
    assert 2 <= len(got) <= 2 + took_ms // INTERVAL_MS  # one per interval, and the rest
    stamps = [e["data"]["until_ms"] for e in got]
    assert all(b - a >= INTERVAL_MS for a, b in itertools.pairwise(stamps))


# -- server-sent events --------------------------------------------------------------------------


class Stream:
    """A raw text/event-stream reader over a plain socket (so a test can cut it anywhere)."""

    def __init__(self, node: NodeHandle, query: str = "", last_id: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", node.admin_port or 0), timeout=10)
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
        self.sock.sendall((f"GET /api/events{query} HTTP/1.1\r\nHost: x\r\n"
                           f"Authorization: Bearer {node.token}\r\n"
                           f"Accept: text/event-stream\r\n{extra}\r\n").encode())
        self.raw = b""
        while b"\r\n\r\n" not in self.raw:
            self._read()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"text/event-stream" in head
        assert b"chunked" in head.lower()
        self.body = b""
        self.queue: list[dict[str, Any]] = []
        self.comments = 0

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the stream ended")
        self.raw += data

    def _parse(self) -> None:
        while True:  # HTTP/1.1 chunks → body
            size_line, sep, rest = self.raw.partition(b"\r\n")
            if not sep or len(rest) < int(size_line, 16) + 2:
                break
            size = int(size_line, 16)
            self.body += rest[:size]
            self.raw = rest[size + 2:]
        while b"\n\n" in self.body:  # body → server-sent events
            frame, self.body = self.body.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in frame.decode().splitlines()
                          if ": " in line and not line.startswith(":"))
            self.comments += frame.startswith(b":")
            if "data" in fields:
                event = json.loads(fields["data"])
                assert int(fields["id"]) == event["id"]
                assert fields["event"] == event["type"]
                self.queue.append(event)

    def events(self, n: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The next `n` events."""
        deadline = time.monotonic() + timeout_s
        self._parse()
        while len(self.queue) < n:
            assert time.monotonic() < deadline, self.queue
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            self._read()
            self._parse()
        out, self.queue = self.queue[:n], self.queue[n:]
        return out

    def close(self) -> None:
        self.sock.close()


def test_a_stream_resumed_with_last_event_id_or_after_loses_nothing(
        companies: Companies, settled: str) -> None:
    car, man = companies.carrier, companies.manufacturer
    history = all_events(car)
    stream = Stream(car)
    first = stream.events(5)
    stream.close()  # cut mid-history
    assert first == history[:5]
    resumed = Stream(car, last_id=first[-1]["id"])
    rest = resumed.events(len(history) - 5)
    assert first + rest == history
    # live: a new channel's events arrive on the open stream as they commit
    cid = companies.open_channel(deposit="100.00 EUR")
    man.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "1"}})
    live = resumed.events(4)
    resumed.close()
    assert live[0]["type"] == "channel.proposed"
    assert all(e["channel_id"] == cid for e in live)
    # `after` resumes too, and wins over a Last-Event-ID
    by_after = Stream(car, f"?after={history[-4]['id']}", last_id=0)
    again = by_after.events(3 + len(live))
    by_after.close()
    assert again[:3] == history[-3:]
    assert again[3:] == live


def test_a_json_client_gets_a_page_not_a_stream(companies: Companies) -> None:
    car = companies.carrier
    request = urllib.request.Request(
        f"http://127.0.0.1:{car.admin_port}/api/events?limit=2",
        headers={"Authorization": f"Bearer {car.token}", "Accept": "*/*"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        page = json.loads(resp.read())
    assert set(page) == {"events", "last_id", "more"}
    assert len(page["events"]) <= 2


@pytest.mark.parametrize(("query", "code"), [
    ("?after=-1", "BAD_QUERY"), ("?after=x", "BAD_QUERY"), ("?after=" + "9" * 30, "BAD_QUERY"),
    ("?limit=0", "BAD_QUERY"), ("?limit=501", "BAD_QUERY"), ("?colour=red", "UNKNOWN_FIELD"),
    ("?types=channel.exploded", "UNKNOWN_EVENT_TYPE"), ("?types=nothing.*", "UNKNOWN_EVENT_TYPE"),
    ("?types=", "UNKNOWN_EVENT_TYPE"),
])
def test_bad_queries_are_refused_with_a_code(companies: Companies, query: str, code: str) -> None:
    car = companies.carrier
    request = urllib.request.Request(f"http://127.0.0.1:{car.admin_port}/api/events{query}",
                                     headers={"Authorization": f"Bearer {car.token}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 400
    assert json.loads(err.value.read())["error"]["code"] == code


def test_a_bad_last_event_id_is_refused(companies: Companies) -> None:
    car = companies.carrier
    request = urllib.request.Request(
        f"http://127.0.0.1:{car.admin_port}/api/events",
        headers={"Authorization": f"Bearer {car.token}", "Last-Event-ID": "abc"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 400


def test_event_types_are_listed(companies: Companies) -> None:
    types = [t["type"] for t in companies.carrier.api("GET", "/api/events/types")["types"]]
    assert "payment.received" in types
    assert "channel.settled" in types


def test_a_sigterm_ends_open_streams_at_once_and_they_resume(companies: Companies,
                                                             settled: str) -> None:
    car = companies.carrier
    history = all_events(car)
    stream = Stream(car, last_id=history[-2]["id"])
    assert stream.events(1) == history[-1:]
    began = time.monotonic()
    car.stop()  # SIGTERM: the open stream must not hold the shutdown up
    assert car.process is not None
    assert car.process.returncode == 0
    assert time.monotonic() - began < 4.5  # below the 5 s the server would wait for it
    with pytest.raises((EOFError, OSError)):
        stream.events(1, timeout_s=2)
    stream.close()
    car.start()
    resumed = Stream(car, last_id=history[-2]["id"])
    assert resumed.events(1) == history[-1:]
    resumed.close()
