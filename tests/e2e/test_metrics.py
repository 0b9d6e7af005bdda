"""``GET /metrics`` on real daemons: it parses with prometheus-client's own text parser, it is
behind the admin token, and after real payments its counters are the channel's numbers."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.cluster import NodeHandle
from node.metrics import Metrics
from tests.e2e.cluster import Companies, companies
from tests.support import PG_URL
from tests.support import pg_databases as per_daemon_databases

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: NodeHandle, *, token: str | None = None) -> tuple[str, Samples]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.admin_port}/metrics",
        headers={"Authorization": f"Bearer {node.token if token is None else token}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        content_type = resp.headers["Content-Type"]
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return content_type, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Companies, str]]:
    with companies(tmp_path_factory.mktemp("metrics")) as c:
        cid = c.open_channel()
        c.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                           {"units": {"km": "1.5"}, "reference": "TRIP-1", "repeat": 25})
        c.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                           {"units": {"container-hour": "2"}, "repeat": 5})
        c.carrier.api("POST", f"/api/channels/{cid}/pay",
                      {"amount": "0.50 EUR", "reference": "CREDIT", "repeat": 3})
        yield c, cid


def test_metrics_parse_and_match_the_payer_channel(paid: tuple[Companies, str]) -> None:
    c, cid = paid
    detail: dict[str, Any] = c.manufacturer.api("GET", f"/api/channels/{cid}")
    content_type, m = scrape(c.manufacturer)
    assert content_type.startswith("text/plain")
    assert detail["nonce_sent"] == 30
    assert value(m, "meterline_updates_sent_total") == detail["nonce_sent"]
    assert value(m, "meterline_updates_received_total") == detail["nonce_received"] == 3
    assert value(m, "meterline_receipts_sent_total") >= 1
    # every group of updates committed together was covered by a receipt and timed once
    assert detail["acked_nonce_sent"] == 30
    groups = value(m, "meterline_update_latency_seconds_count")
    assert 2 <= groups <= 30  # two pay calls at least: two commits at least
    assert 0 < value(m, "meterline_update_latency_seconds_sum") < groups * 30
    assert value(m, "meterline_update_latency_seconds_bucket", le="+Inf") == groups
    assert 1 <= value(m, "meterline_receipts_received_total") <= 30
    assert value(m, "meterline_channels", phase="open") == 1
    assert value(m, "meterline_channels", phase="settled") == 0
    balance = value(m, "meterline_channel_balance", channel=cid, currency="EUR")
    assert Decimal(str(balance)) == Decimal(detail["balance"]["precise"])
    assert value(m, "meterline_channel_capacity", channel=cid, currency="EUR") == 5100.0
    # the deposit went to the bank through the counted rail
    assert value(m, "meterline_bank_requests_total", operation="submit") >= 1
    assert not [k for k in m if k[0] == "meterline_bank_errors_total"]
    for outcome in ("accepted", "duplicate", "refused"):
        assert value(m, "meterline_usage_events_total", outcome=outcome) == 0
    assert value(m, "meterline_deliveries_total", outcome="delivered") >= 1
    assert value(m, "meterline_delivery_queue_depth") >= 0
    assert value(m, "meterline_delivery_queue_oldest_age_seconds") >= 0


def test_metrics_match_the_payee_channel(paid: tuple[Companies, str]) -> None:
    c, cid = paid
    detail: dict[str, Any] = c.carrier.api("GET", f"/api/channels/{cid}")
    _, m = scrape(c.carrier)
    assert value(m, "meterline_updates_received_total") == detail["nonce_received"] == 30
    assert value(m, "meterline_updates_sent_total") == detail["nonce_sent"] == 3
    assert 1 <= value(m, "meterline_update_latency_seconds_count") <= 3
    balance = value(m, "meterline_channel_balance", channel=cid, currency="EUR")
    assert Decimal(str(balance)) == Decimal(detail["balance"]["precise"])


def test_arbiter_metrics_show_the_escrow(paid: tuple[Companies, str]) -> None:
    c, cid = paid
    _, m = scrape(c.arbiter)
    assert value(m, "meterline_escrows", phase="open") == 1
    assert value(m, "meterline_escrow_held", channel=cid, currency="EUR") == 5100.0
    assert value(m, "meterline_bank_requests_total", operation="incoming_credits") >= 1
    assert not [k for k in m if k[0] == "meterline_channels"]


def test_metrics_need_the_admin_token(paid: tuple[Companies, str]) -> None:
    c, _ = paid
    with pytest.raises(urllib.error.HTTPError) as caught:
        scrape(c.manufacturer, token="not-the-token")
    assert caught.value.code == 401


def test_an_unknown_event_outcome_is_refused() -> None:
    metrics = Metrics()
    metrics.usage_event("duplicate", 2)
    with pytest.raises(ValueError, match="unknown usage event outcome"):
        metrics.usage_event("maybe")
    text = metrics.render().decode()
    assert 'meterline_usage_events_total{outcome="duplicate"} 2.0' in text


def test_two_nodes_in_one_process_have_their_own_registries() -> None:
    a, b = Metrics(), Metrics()
    a.updates_sent.inc(7)
    assert "meterline_updates_sent_total 7.0" in a.render().decode()
    assert "meterline_updates_sent_total 0.0" in b.render().decode()


def test_the_sample_grafana_dashboard_names_only_real_series() -> None:
    """docs/grafana-meterline.json is valid JSON and every series it queries is exposed."""
    import json
    import re
    from pathlib import Path

    document = json.loads((Path(__file__).parents[2] / "docs" / "grafana-meterline.json")
                          .read_text())
    exposed: set[str] = set()
    for line in Metrics().render().decode().splitlines():  # every family, labelled or not
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            exposed |= {name + suffix for suffix in suffixes}
    queried = {name for panel in document["panels"] for target in panel["targets"]
               for name in re.findall(r"meterline_[a-z_]+", target["expr"])}
    assert len(queried) >= 12
    assert queried <= exposed, queried - exposed


def test_bank_errors_are_counted_by_code(paid: tuple[Companies, str]) -> None:
    """Last in the module: the bank goes away; the arbiter's credit polls fail and each failure
    is counted under the rail's own error code."""
    c, _ = paid
    assert c.cluster.bank is not None
    c.cluster.bank.stop()
    deadline = time.monotonic() + 90
    errors: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline and not errors:
        _, m = scrape(c.arbiter)
        errors = {(dict(labels)["operation"], dict(labels)["code"]): v
                  for (name, labels), v in m.items() if name == "meterline_bank_errors_total"}
        time.sleep(0.5)
    assert errors, "no bank error counted within 90 s of the bank stopping"
    assert ("incoming_credits", "BANK_UNAVAILABLE") in errors, errors
    _, m = scrape(c.arbiter)
    assert value(m, "meterline_bank_requests_total", operation="incoming_credits") >= sum(
        v for (op, _), v in errors.items() if op == "incoming_credits")


@pytest.fixture
def pg_databases() -> Iterator[dict[str, str]]:
    if not PG_URL:
        pytest.skip("METERLINE_TEST_PG_URL is not set: the metrics test on PostgreSQL skipped")
    with per_daemon_databases("metrics") as urls:
        yield urls


def test_queue_gauges_and_a_restart_on_postgresql(tmp_path: Path,
                                                  pg_databases: dict[str, str]) -> None:
    """On PostgreSQL: a delivery the arbiter cannot take shows in the queue depth and age until
    it is delivered; a restart starts the counters at zero while the channel keeps its nonces."""
    with companies(tmp_path, databases=pg_databases) as c:
        cid = c.open_channel()
        man = c.manufacturer
        man.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "1"}, "repeat": 4})
        man.stop()
        man.start()
        _, m = scrape(man)
        assert value(m, "meterline_updates_sent_total") == 0  # a counter restarts with the node
        man.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "1"}, "repeat": 2})
        _, m = scrape(man)
        assert value(m, "meterline_updates_sent_total") == 2
        assert man.api("GET", f"/api/channels/{cid}")["nonce_sent"] == 6  # the durable total

        c.arbiter.stop()
        man.api("POST", f"/api/channels/{cid}/close", {"force": True})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, m = scrape(man)
            if value(m, "meterline_deliveries_total", outcome="retry") >= 1 and value(
                    m, "meterline_delivery_queue_oldest_age_seconds") > 0:
                break
            time.sleep(0.3)
        assert value(m, "meterline_delivery_queue_depth") >= 1
        assert value(m, "meterline_delivery_queue_oldest_age_seconds") > 0
        assert value(m, "meterline_channels", phase="disputed") == 1
        c.arbiter.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, m = scrape(man)
            if value(m, "meterline_delivery_queue_depth") == 0:
                break
            time.sleep(0.3)
        assert value(m, "meterline_delivery_queue_depth") == 0
        assert value(m, "meterline_delivery_queue_oldest_age_seconds") == 0
        assert value(m, "meterline_deliveries_total", outcome="delivered") >= 1


def test_usage_events_are_counted_by_outcome(paid: tuple[Companies, str]) -> None:
    """One batch: an event, the same event again (a duplicate), one older than the window
    (refused): /metrics counts each outcome as the answer gave it."""
    c, cid = paid
    _, before = scrape(c.manufacturer)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {"id": "metrics-1", "units": {"km": "1"}, "time": now}
    old = {"id": "metrics-2", "units": {"km": "1"}, "time": "2020-01-01T00:00:00Z"}
    answer = c.manufacturer.api("POST", f"/api/channels/{cid}/events",
                                {"events": [event, dict(event), old]})
    said = Counter(e["status"] for e in answer["events"])
    assert said == {"accepted": 1, "duplicate": 1, "refused": 1}, answer
    _, after = scrape(c.manufacturer)
    for outcome in ("accepted", "duplicate", "refused"):
        grew = (value(after, "meterline_usage_events_total", outcome=outcome)
                - value(before, "meterline_usage_events_total", outcome=outcome))
        assert grew == said[outcome], outcome

