"""MQTT ingest on real daemons and a real Mosquitto (issue 11: "IoT over MQTT").

A private Mosquitto (persistent, on a free loopback port) for the module, so the test can
restart it; the manufacturer subscribes through ``[ingest.mqtt]`` and meters each message on
its channel; the carrier receipts. Messages are published with paho at QoS 1, some twice.
Skips, saying why, when no ``mosquitto`` binary is installed (.ci/services.sh installs one).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node.cluster import free_port, wait_port
from tests.e2e.cluster import Companies, companies, wait_for
from tests.e2e.mqtt_publish import publish_acked

MOSQUITTO = os.environ.get("METERLINE_MOSQUITTO") or shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="no mosquitto binary (apt-get install mosquitto, or source "
    ".ci/services.sh): the MQTT ingest tests need a real broker")
KM = Decimal("0.0123")
TOPIC = "plant/line-3/usage"
NOW = datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Broker:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {directory}/\nautosave_interval 1\n"
            f"log_dest file {directory}/mosquitto.log\n"
            # as root mosquitto drops to user `mosquitto`, who cannot write the test's directory
            + ("user root\n" if os.geteuid() == 0 else ""))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 15)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its sessions and queues
            self.process.wait(15)
        self.process = None


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Companies, str, Broker]]:
    root = tmp_path_factory.mktemp("mqtt")
    broker = Broker(root / "broker")
    broker.start()
    try:
        with companies(root / "cluster") as c:
            cid = c.open_channel()
            man = c.manufacturer
            config = man.directory / "config.toml"
            config.write_text(config.read_text() + (
                f"\n[ingest.mqtt]\nurl = \"mqtt://127.0.0.1:{broker.port}\"\n"
                f"topic = \"plant/+/usage\"\nchannel = \"{cid[:16]}\"\n"
                "client_id = \"meterline-test-ingest\"\nreconnect_ms = 300\n"))
            man.stop()
            man.start()
            yield c, cid, broker
    finally:
        broker.stop()


def publish(broker: Broker, payloads: list[Any]) -> None:
    """Publish at QoS 1 and wait until the broker acknowledged every message."""
    publish_acked(broker.port, TOPIC, payloads)


def event(event_id: str, km: str = "1") -> dict[str, Any]:
    return {"id": event_id, "units": {"km": km}, "ref": "LINE-3", "time": NOW}


def metered(c: Companies, cid: str) -> Decimal:
    return Decimal(c.manufacturer.api("GET", f"/api/channels/{cid}")["sent"]["precise"])


def rows(c: Companies) -> int:
    with sqlite3.connect(c.manufacturer.directory / "meterline.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM usage_event").fetchone()[0])


def settles_at(c: Companies, cid: str, amount: Decimal, what: str) -> None:
    wait_for(lambda: metered(c, cid) >= amount, what, timeout_s=60)
    time.sleep(1.5)  # anything delivered again lands within this; it must charge nothing
    assert metered(c, cid) == amount
    wait_for(lambda: Decimal(c.carrier.api("GET", f"/api/channels/{cid}")["received"][
        "precise"]) == amount, "the carrier to receipt it", timeout_s=30)


def test_messages_are_metered_exactly_once_across_a_broker_restart(
        setup: tuple[Companies, str, Broker]) -> None:
    c, cid, broker = setup
    base = metered(c, cid)
    first = [event(f"A-{i}") for i in range(20)]
    publish(broker, first + first[:5])  # five published twice
    settles_at(c, cid, base + 20 * KM, "the first 20 events to be metered")
    broker.stop()
    broker.start()
    # published while the node reconnects: queued in its persistent session
    publish(broker, [event(f"B-{i}") for i in range(20)] + first[5:10])
    settles_at(c, cid, base + 40 * KM, "the next 20 events after the broker's restart")
    # an array of events in one message; a malformed message is acknowledged and dropped
    publish(broker, [[event("C-1", "2"), event("C-2", "3"), event("A-0")], {"id": "bad"},
                     "not an event"])
    settles_at(c, cid, base + 45 * KM, "the batch message")
    assert rows(c) >= 42


def test_a_node_killed_while_metering_charges_each_message_once(
        setup: tuple[Companies, str, Broker]) -> None:
    """Messages delivered but not yet acknowledged when the node dies (-9) come again from the
    broker after the restart; those already committed are duplicates."""
    c, cid, broker = setup
    base, held = metered(c, cid), rows(c)
    publish(broker, [event(f"K-{i}") for i in range(150)])
    wait_for(lambda: rows(c) > held, "the node to commit some of them", timeout_s=30)
    c.manufacturer.stop(kill=True)
    c.manufacturer.start()
    settles_at(c, cid, base + 150 * KM, "all 150 events after the restart")
    assert rows(c) == held + 150
