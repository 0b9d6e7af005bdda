"""Usage events through the admin API, on real daemons (issue 11: "Usage events API").

A sandbox bank, an arbiter and two companies as ``meterline`` processes on loopback, one channel
opened through the bank, once for the module. The manufacturer meters events on the channel;
the carrier verifies, commits and receipts them. The tests run in file order (the last ones
restart the manufacturer).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.cluster import NodeHandle, meterline_argv
from protocol.usage_events import commitment, event_key
from tests.e2e.cluster import Companies, companies, wait_for

KM_PRICE = Decimal("0.0123")
HOUR_PRICE = Decimal("1.75")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Companies, str]]:
    with companies(tmp_path_factory.mktemp("events")) as c:
        yield c, c.open_channel()


def post(handle: NodeHandle, cid: str, body: Any, content_type: str = "application/json",
         timeout_s: float = 60.0) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{handle.admin_port}/api/channels/{cid}/events",
        data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {handle.token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def sent(handle: NodeHandle, cid: str) -> Decimal:
    return Decimal(handle.api("GET", f"/api/channels/{cid}")["sent"]["precise"])


def received(handle: NodeHandle, cid: str) -> Decimal:
    return Decimal(handle.api("GET", f"/api/channels/{cid}")["received"]["precise"])


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


NOW = iso(datetime.now(UTC))
"""One time for the module's events (a retry must repeat its event exactly)."""


def ev(event_id: str, units: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"id": event_id, "units": units, "time": NOW, **more}


def settled_equal(c: Companies, cid: str) -> Decimal:
    """What the manufacturer sent, once the carrier holds (and receipted) the same."""
    wait_for(lambda: sent(c.manufacturer, cid) == received(c.carrier, cid),
             "the carrier to hold what the manufacturer sent")
    return sent(c.manufacturer, cid)


def test_a_batch_with_duplicates_inside_and_across_retries_charges_each_event_once(
        cluster: tuple[Companies, str]) -> None:
    c, cid = cluster
    before = sent(c.manufacturer, cid)
    events = [ev("DN-1", {"km": "10"}, ref="SHIP-1"),
              ev("DN-2", {"container-hour": "2"}, ref="SHIP-2"),
              ev("DN-1", {"km": "10"}, ref="SHIP-1"),
              ev("DN-3", {"km": "1", "container-hour": "1"}),
              ev("DN-2", {"container-hour": "2"}, ref="SHIP-2")]
    status, answer = post(c.manufacturer, cid, {"events": events})
    assert status == 200, answer
    assert [e["status"] for e in answer["events"]] == [
        "accepted", "accepted", "duplicate", "accepted", "duplicate"]
    assert (answer["accepted"], answer["duplicate"], answer["refused"]) == (3, 2, 0)
    first = answer["events"]
    # one proof carries all three accepted events
    assert len({e["nonce"] for e in first}) == 1
    price = 11 * KM_PRICE + 3 * HOUR_PRICE
    assert sum(Decimal(e["amount"]["precise"]) for e in first if e["status"] == "accepted") \
        == price
    assert settled_equal(c, cid) - before == price
    # the retry: every event a duplicate with its original result, nothing charged
    status, again = post(c.manufacturer, cid, {"events": events})
    assert status == 200
    assert [e["status"] for e in again["events"]] == ["duplicate"] * 5
    assert [(e["nonce"], e["amount"]) for e in again["events"]] == [
        (e["nonce"], e["amount"]) for e in first]
    assert settled_equal(c, cid) - before == price
    # the statement groups the events' usage by their own references
    lines = json.dumps(c.manufacturer.api("GET", f"/api/channels/{cid}/statement"))
    assert "SHIP-1" in lines
    assert "SHIP-2" in lines
    assert "ev1:" not in lines


def test_the_same_batch_sent_by_racing_clients_charges_each_event_once(
        cluster: tuple[Companies, str]) -> None:
    """Eight clients send the same 40 events at once (coalesced into shared proofs under the
    channel's lock): each id is accepted exactly once, every other answer is its duplicate."""
    c, cid = cluster
    before = settled_equal(c, cid)
    batch = {"events": [ev(f"R-{i}", {"km": "1"}) for i in range(40)]}
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda: answers.append(post(c.manufacturer, cid, batch)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in answers] == [200] * 8
    for i in range(40):
        results = [answer["events"][i] for _, answer in answers]
        assert sorted(r["status"] for r in results) == ["accepted"] + ["duplicate"] * 7
        assert len({(r["nonce"], r["amount"]["precise"]) for r in results}) == 1
    assert settled_equal(c, cid) - before == 40 * KM_PRICE


def test_the_proof_reference_is_the_commitment_to_the_accepted_ids(
        cluster: tuple[Companies, str]) -> None:
    c, cid = cluster
    status, answer = post(c.manufacturer, cid, {"events": [
        ev("C-1", {"km": "2"}), ev("C-2", {"km": "3"})]})
    assert (status, answer["accepted"]) == (200, 2)
    nonce = answer["events"][0]["nonce"]
    db = c.manufacturer.directory / "meterline.sqlite"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, content, nonce FROM usage_event WHERE nonce = ?",
                            (nonce,)).fetchall()
    channel = bytes.fromhex(cid)
    assert {bytes(r[0]) for r in rows} == {event_key(channel, "C-1"), event_key(channel, "C-2")}
    # the carrier's usage aggregates carry the proofs as "events", not one row per commitment
    with sqlite3.connect(c.carrier.directory / "meterline.sqlite") as conn:
        refs = {r[0] for r in conn.execute("SELECT DISTINCT reference FROM usage")}
    assert "events" in refs
    assert not any(r.startswith("ev1:") for r in refs)
    assert commitment([("C-1", b"x" * 16)]) != commitment([("C-2", b"x" * 16)])


def test_the_same_id_with_other_content_is_refused_and_charges_nothing(
        cluster: tuple[Companies, str]) -> None:
    c, cid = cluster
    # the events as first sent (duplicates if the batch test ran first on this cluster; a
    # worker that took this test alone sends them here)
    status, _ = post(c.manufacturer, cid, {"events": [
        ev("DN-1", {"km": "10"}, ref="SHIP-1"), ev("DN-2", {"container-hour": "2"}, ref="SHIP-2")]})
    assert status == 200
    before = settled_equal(c, cid)
    status, answer = post(c.manufacturer, cid, {"events": [
        ev("DN-1", {"km": "11"}, ref="SHIP-1"),       # was 10 km
        ev("DN-2", {"container-hour": "2"}, ref="OTHER"),
        ev("NEW-1", {"km": "1"}),
        ev("NEW-1", {"km": "2"})]})                       # reused in the batch
    assert status == 200
    codes = [(e["status"], e.get("code")) for e in answer["events"]]
    assert codes == [("refused", "EVENT_ID_REUSED"), ("refused", "EVENT_ID_REUSED"),
                     ("accepted", None), ("refused", "EVENT_ID_REUSED")]
    assert settled_equal(c, cid) - before == KM_PRICE


def test_events_outside_the_window_are_refused(cluster: tuple[Companies, str]) -> None:
    c, cid = cluster
    before = settled_equal(c, cid)
    now = datetime.now(UTC)
    status, answer = post(c.manufacturer, cid, {"events": [
        ev("OLD-1", {"km": "1"}, time=iso(now - timedelta(hours=25))),
        ev("SOON-1", {"km": "1"}, time=iso(now + timedelta(hours=1))),
        ev("EDGE-1", {"km": "1"}, time=iso(now - timedelta(hours=23)))]})
    assert status == 200
    assert [(e["status"], e.get("code")) for e in answer["events"]] == [
        ("refused", "EVENT_TOO_OLD"), ("refused", "EVENT_IN_FUTURE"), ("accepted", None)]
    assert settled_equal(c, cid) - before == KM_PRICE


def test_cloudevents_one_and_a_batch(cluster: tuple[Companies, str]) -> None:
    c, cid = cluster
    before = settled_equal(c, cid)
    one = {"specversion": "1.0", "id": "ce-1", "source": "/truck/B-ML-417",
           "type": "com.example.distance", "time": iso(datetime.now(UTC)),
           "datacontenttype": "application/json", "data": {"units": {"km": "4"}, "ref": "T-1"}}
    status, answer = post(c.manufacturer, cid, one, "application/cloudevents+json")
    assert (status, answer["events"][0]["status"]) == (200, "accepted"), answer
    batch = [one, {**one, "id": "ce-2"}, {**one, "id": "ce-3", "specversion": "0.3"},
             {**one, "id": "ce-4", "source": "/truck/other"},
             {**one, "id": "ce-1", "source": "/truck/other"}]
    status, answer = post(c.manufacturer, cid, batch, "application/cloudevents-batch+json")
    assert status == 200
    assert [(e["status"], e.get("code")) for e in answer["events"]] == [
        ("duplicate", None), ("accepted", None), ("refused", "BAD_CLOUDEVENT"),
        ("accepted", None), ("refused", "EVENT_ID_REUSED")]
    # a CloudEvent inside a plain batch
    status, answer = post(c.manufacturer, cid, {"events": [{**one, "id": "ce-5"}]})
    assert (status, answer["accepted"]) == (200, 1)
    assert settled_equal(c, cid) - before == 4 * 4 * KM_PRICE


def test_meterline_pay_event_id_charges_once(cluster: tuple[Companies, str]) -> None:
    c, cid = cluster
    before = settled_equal(c, cid)

    def pay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*meterline_argv(), "pay", cid[:12], *args, "--event-id", "CLI-1",
             "--time", NOW, "--data-dir", str(c.manufacturer.directory)],
            capture_output=True, text=True, timeout=60, check=False)

    first = pay("--units", "km=2", "--ref", "CLI")
    assert first.returncode == 0, first.stderr
    assert "metered: event CLI-1" in first.stdout
    again = pay("--units", "km=2", "--ref", "CLI")
    assert again.returncode == 0, again.stderr
    assert "nothing charged" in again.stdout
    other = pay("--units", "km=3", "--ref", "CLI")
    assert other.returncode == 3
    assert "EVENT_ID_REUSED" in other.stderr or "other content" in other.stderr
    usage = pay("--units", "km=2", "--repeat", "2")
    assert usage.returncode == 2
    assert settled_equal(c, cid) - before == 2 * KM_PRICE


@pytest.mark.parametrize(("body", "content_type", "code"), [
    ({"events": []}, "application/json", "BAD_BATCH"),
    ({"events": [ev(f"x{i}", {"km": "1"}) for i in range(101)]},
     "application/json", "BAD_BATCH"),
    ({"events": [], "idempotency_key": "k"}, "application/json", "UNKNOWN_FIELD"),
    ([{"id": "x"}], "application/json", "BAD_JSON"),
    ({"id": "x"}, "application/cloudevents-batch+json", "BAD_JSON"),
])
def test_a_malformed_batch_is_refused_whole(cluster: tuple[Companies, str], body: Any,
                                            content_type: str, code: str) -> None:
    c, cid = cluster
    before = sent(c.manufacturer, cid)
    status, answer = post(c.manufacturer, cid, body, content_type)
    assert (status, answer["error"]["code"]) == (400, code)
    assert sent(c.manufacturer, cid) == before


def test_malformed_events_are_refused_alone(cluster: tuple[Companies, str]) -> None:
    c, cid = cluster
    status, answer = post(c.manufacturer, cid, {"events": [
        ev("bad id", {"km": "1"}), ev("M-1", {"litre": "1"}),
        ev("M-2", {"km": 1.5}), ev("M-3", {"km": "0"}),
        ev("M-4", {"km": "1"}, time="yesterday"),
        ev("M-5", {"km": "1"}, extra=1), ev("M-6", {"km": 2}),
        {"id": "M-7", "units": {"km": "1"}}]})
    assert status == 200
    assert [e.get("code") for e in answer["events"]] == [
        "BAD_EVENT_ID", "UNKNOWN_UNIT", "BAD_UNITS", "NOTHING_TO_PAY", "BAD_TIME",
        "UNKNOWN_FIELD", None, "BAD_TIME"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**25, 10**25) | st.text(max_size=20)
    | st.sampled_from(["1.0", "km", "2026-12-02T13:00:00Z", "12.5", "container-hour"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "units", "ref", "time", "specversion", "source", "type",
                         "data", "events", "wait", "km", "x"]), inner, max_size=5),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=JSON, content_type=st.sampled_from(
    ["application/json", "application/cloudevents+json", "application/cloudevents-batch+json"]))
def test_any_json_body_is_answered_without_a_server_error(
        cluster: tuple[Companies, str], body: Any, content_type: str) -> None:
    c, cid = cluster
    before = sent(c.manufacturer, cid)
    status, answer = post(c.manufacturer, cid, body, content_type)
    assert status in (200, 400), answer
    if status == 400:
        assert answer["error"]["code"]
        assert sent(c.manufacturer, cid) == before
    else:
        assert answer["accepted"] + answer["duplicate"] + answer["refused"] == len(
            answer["events"])


def _usage_event_rows(handle: NodeHandle) -> int:
    with sqlite3.connect(handle.directory / "meterline.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM usage_event").fetchone()[0])


def test_a_kill_between_commit_and_answer_never_charges_twice(
        cluster: tuple[Companies, str]) -> None:
    """The carrier is down, so the answer waits for a receipt: the events are committed but
    not answered when the manufacturer is killed (-9). After the restart the retry is answered
    "duplicate" and the carrier, back too, receives each event exactly once."""
    c, cid = cluster
    before = settled_equal(c, cid)
    rows_before = _usage_event_rows(c.manufacturer)
    c.carrier.stop()
    events = {"events": [ev(f"K-{i}", {"km": "1"}) for i in range(50)]}
    outcome: list[Any] = []
    thread = threading.Thread(
        target=lambda: outcome.append(_swallow(lambda: post(c.manufacturer, cid, events))),
        daemon=True)
    thread.start()
    wait_for(lambda: _usage_event_rows(c.manufacturer) == rows_before + 50,
             "the manufacturer to commit the events", timeout_s=30)
    c.manufacturer.stop(kill=True)
    thread.join(30)
    assert outcome
    assert not isinstance(outcome[0], tuple), "the request was answered"
    c.manufacturer.start()
    c.carrier.start()
    status, answer = post(c.manufacturer, cid, events)
    assert status == 200, answer
    assert [e["status"] for e in answer["events"]] == ["duplicate"] * 50
    assert settled_equal(c, cid) - before == 50 * KM_PRICE
    status, answer = post(c.manufacturer, cid, events)
    assert answer["duplicate"] == 50
    assert settled_equal(c, cid) - before == 50 * KM_PRICE


def _has_key(handle: NodeHandle, cid: str, event_id: str) -> bool:
    with sqlite3.connect(handle.directory / "meterline.sqlite") as conn:
        return conn.execute("SELECT 1 FROM usage_event WHERE key = ?",
                            (event_key(bytes.fromhex(cid), event_id),)).fetchone() is not None


def _swallow(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # the connection dies with the node
        return exc


def test_the_window_is_pruned_and_an_expired_retry_is_refused(
        cluster: tuple[Companies, str]) -> None:
    c, cid = cluster
    man = c.manufacturer
    config = man.directory / "config.toml"
    original = config.read_text()
    config.write_text(original + "\n[ingest]\nwindow_ms = 3000\nmax_ids = 2\n")
    try:
        man.stop()
        man.start()
        first = ev("W-1", {"km": "1"}, time=iso(datetime.now(UTC)))
        _, answer = post(man, cid, {"events": [first]})
        assert answer["accepted"] == 1
        held = _usage_event_rows(man)  # the first commit pruned the module's older events
        assert _has_key(man, cid, "W-1")
        _, answer = post(man, cid, {"events": [first]})
        assert answer["duplicate"] == 1  # within the window
        time.sleep(3.5)
        before = settled_equal(c, cid)
        _, answer = post(man, cid, {"events": [
            ev("W-2", {"km": "1"}, time=iso(datetime.now(UTC)))]})
        assert answer["accepted"] == 1  # its commit prunes everything older than 3 s
        assert _usage_event_rows(man) == held == 1  # W-1 left, W-2 came
        assert _has_key(man, cid, "W-2")
        assert not _has_key(man, cid, "W-1")
        _, answer = post(man, cid, {"events": [first]})  # the same event, too late
        assert answer["events"][0]["code"] == "EVENT_TOO_OLD"
        assert settled_equal(c, cid) - before == KM_PRICE
        # max_ids = 2 bounds the window: one id (W-2) is held, so one more fits
        stamp = iso(datetime.now(UTC))
        _, answer = post(man, cid, {"events": [ev(f"X-{i}", {"km": "1"}, time=stamp)
                                               for i in range(3)]})
        assert [(e["status"], e.get("code")) for e in answer["events"]] == [
            ("accepted", None), ("refused", "DEDUP_FULL"), ("refused", "DEDUP_FULL")]
        assert settled_equal(c, cid) - before == 2 * KM_PRICE
        time.sleep(3.5)  # W-2 and X-1 leave the window: room again
        _, answer = post(man, cid, {"events": [ev("X-1", {"km": "1"}, time=iso(
            datetime.now(UTC)))]})
        assert answer["accepted"] == 1
        assert settled_equal(c, cid) - before == 3 * KM_PRICE
    finally:
        config.write_text(original)
        man.stop()
        man.start()


def test_storage_per_id_is_what_the_settings_state(tmp_path: Path) -> None:
    """BYTES_PER_ID against a real SQLite file holding 20,000 ids of the migration's table."""
    from sqlalchemy import create_engine

    from node.ingest.settings import BYTES_PER_ID
    from node.storage.db import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'ids.sqlite'}"
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    engine.dispose()
    n = 20_000
    with sqlite3.connect(tmp_path / "ids.sqlite") as conn:
        empty = conn.execute("PRAGMA page_count").fetchone()[0]
        cid = bytes(32)
        conn.executemany(
            "INSERT INTO usage_event (key, content, time_ms, nonce, amount) "
            "VALUES (?, ?, ?, ?, ?)",
            [(event_key(cid, f"DN-{i}"), event_key(cid, f"c{i}"), 1_764_680_400_000 + i * 4,
              10_000 + i // 100, 12_300) for i in range(n)])
        conn.commit()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    per_id = (pages - empty) * size / n
    print(f"bytes per remembered id: {per_id:.1f}")
    assert per_id <= BYTES_PER_ID
