"""`node info`'s ingest line: what the operator reads when the broker refuses the node."""

from __future__ import annotations

from node.cli.node_cmd import mqtt_text

BASE = {"broker": "mqtts://broker.plant:8883", "topic": "meters/#", "channel": "c" * 64,
        "since_ms": 1_764_770_400_000, "acked": 0, "error": "", "code": None, "hint": None}


def test_subscribed_says_where_and_how_many() -> None:
    text = mqtt_text({**BASE, "state": "subscribed", "acked": 120})
    assert text == ("mqtt subscribed to meters/# at mqtts://broker.plant:8883 since "
                    "14:00:00 UTC, 120 messages acknowledged")


def test_refused_says_what_to_fix_and_the_brokers_words() -> None:
    text = mqtt_text({**BASE, "state": "refused", "code": "not_authorized",
                      "hint": "fix password_file", "error": "Not authorized"})
    assert text.startswith("mqtt REFUSED (not_authorized) by meters/# at mqtts://")
    assert "fix password_file" in text
    assert text.endswith("the broker said: Not authorized")


def test_reconnecting_carries_the_last_error() -> None:
    text = mqtt_text({**BASE, "state": "reconnecting", "error": "[Errno 111] refused"})
    assert text.endswith("since 14:00:00 UTC: [Errno 111] refused")
    assert mqtt_text({**BASE, "state": "connecting"}).endswith("since 14:00:00 UTC")
