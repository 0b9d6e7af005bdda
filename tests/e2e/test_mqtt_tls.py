"""MQTT ingest over TLS with a username and password, against a real Mosquitto (issue 11).

The test makes a CA and a server certificate for 127.0.0.1 with ``cryptography`` (and a
self-signed "rogue" one), a Mosquitto password file with ``mosquitto_passwd -b``, and starts
its own Mosquitto on free loopback ports: one TLS listener with the CA's certificate, one with
the rogue certificate, no anonymous clients on either. The manufacturer's ``[ingest.mqtt]`` is
rewritten (and the node restarted) per case:

* the right CA and credentials: messages are metered;
* a wrong password: the node logs ``ingest.mqtt.not_authorized`` and meters nothing;
* the rogue listener (a certificate the configured CA did not sign): the node logs
  ``ingest.mqtt.tls_refused`` (certificate verify failed) and meters nothing — and the messages
  published meanwhile wait in the broker for the right session, which meters them afterwards.

Skips, saying why, without ``mosquitto`` or ``mosquitto_passwd``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node.cluster import NodeHandle, free_port, wait_port
from tests.e2e.cluster import Companies, companies, wait_for
from tests.e2e.mqtt_publish import publish_acked
from tests.e2e.test_tls import make_ca, make_server_cert

MOSQUITTO = os.environ.get("METERLINE_MOSQUITTO") or shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
PASSWD = shutil.which("mosquitto_passwd")
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or PASSWD is None,
    reason="no mosquitto / mosquitto_passwd binary (apt-get install mosquitto mosquitto-clients,"
    " or source .ci/services.sh): the MQTT TLS tests need a real broker")
KM = Decimal("0.0123")
TOPIC = "plant/line-7/usage"
USER, PASSWORD = "plant-7", "s3cret-for-the-test"
NOW = datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Broker:
    directory: Path
    ca: Path
    port: int
    """The TLS listener whose certificate the CA signed."""
    rogue_port: int
    """The TLS listener with a self-signed certificate."""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.directory / "mosquitto.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 15)
        wait_port(self.rogue_port, 15)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


def make_broker(directory: Path) -> Broker:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = make_ca(directory, "mqtt test CA")
    good_cert, good_key = make_server_cert(directory, "broker", ca_cert, ca_key)
    rogue_cert, rogue_key = make_server_cert(directory, "rogue-broker", None, None)
    passwd = directory / "passwd"
    assert PASSWD is not None
    subprocess.run([PASSWD, "-c", "-b", str(passwd), USER, PASSWORD], check=True,
                   capture_output=True)
    broker = Broker(directory, ca, free_port(), free_port())
    (directory / "mosquitto.conf").write_text(
        "per_listener_settings false\nallow_anonymous false\n"
        f"password_file {passwd}\npersistence true\npersistence_location {directory}/\n"
        f"log_dest file {directory}/mosquitto.log\n"
        f"listener {broker.port} 127.0.0.1\ncertfile {good_cert}\nkeyfile {good_key}\n"
        f"listener {broker.rogue_port} 127.0.0.1\ncertfile {rogue_cert}\nkeyfile {rogue_key}\n"
        # as root mosquitto drops to user `mosquitto`, who cannot read the test's files
        + ("user root\n" if os.geteuid() == 0 else ""))
    return broker


@dataclass
class Setup:
    companies: Companies
    cid: str
    broker: Broker
    config: str
    """The manufacturer's config.toml as init wrote it (each case appends its section)."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("mqtt-tls")
    broker = make_broker(root / "broker")
    broker.start()
    try:
        with companies(root / "cluster") as c:
            cid = c.open_channel()
            config = (c.manufacturer.directory / "config.toml").read_text()
            yield Setup(c, cid, broker, config)
    finally:
        broker.stop()


def ingest(s: Setup, *, port: int, password: str, client_id: str) -> int:
    """Restart the manufacturer with this [ingest.mqtt]; the log offset where it starts."""
    man = s.companies.manufacturer
    secret = man.directory / "mqtt.password"
    secret.unlink(missing_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    man.stop()
    (man.directory / "config.toml").write_text(s.config + (
        f"\n[ingest.mqtt]\nurl = \"mqtts://127.0.0.1:{port}\"\ntopic = \"plant/+/usage\"\n"
        f"channel = \"{s.cid[:16]}\"\nclient_id = \"{client_id}\"\nusername = \"{USER}\"\n"
        f"password_file = \"mqtt.password\"\nca_file = \"{s.broker.ca}\"\n"
        "reconnect_ms = 300\n"))
    offset = log_size(man)
    man.start()
    return offset


def log_size(man: NodeHandle) -> int:
    path = man.directory.parent / f"{man.name}.log"
    return path.stat().st_size if path.exists() else 0


def logged(man: NodeHandle, offset: int, event: str) -> list[dict[str, Any]]:
    assert man.log_path is not None
    text = man.log_path.read_bytes()[offset:].decode(errors="replace")
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            out.append(entry)
    return out


def publish(broker: Broker, payloads: list[Any]) -> None:
    """Publish over TLS (trusting the CA) with the right credentials, at QoS 1, acknowledged."""
    publish_acked(broker.port, TOPIC, payloads, ca=broker.ca, credentials=(USER, PASSWORD))


def events(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i}", "units": {"km": "1"}, "ref": "LINE-7", "time": NOW}
            for i in range(n)]


def metered(s: Setup) -> Decimal:
    return Decimal(s.companies.manufacturer.api("GET", f"/api/channels/{s.cid}")["sent"][
        "precise"])


def test_the_right_ca_and_credentials_meter_messages(setup: Setup) -> None:
    base = metered(setup)
    offset = ingest(setup, port=setup.broker.port, password=PASSWORD, client_id="tls-right")
    man = setup.companies.manufacturer
    wait_for(lambda: logged(man, offset, "ingest.mqtt.subscribed"), "the TLS subscription",
             timeout_s=30)
    publish(setup.broker, events("RIGHT", 5))
    wait_for(lambda: metered(setup) == base + 5 * KM, "5 messages metered over TLS",
             timeout_s=60)
    assert not logged(man, offset, "ingest.mqtt.not_authorized")
    assert not logged(man, offset, "ingest.mqtt.tls_refused")
    mqtt = man.api("GET", "/api/info")["ingest"]["mqtt"]
    assert mqtt["state"] == "subscribed", mqtt
    assert mqtt["code"] is None, mqtt
    assert mqtt["acked"] >= 5, mqtt


def test_a_wrong_password_is_a_clear_error_and_meters_nothing(setup: Setup) -> None:
    base = metered(setup)
    offset = ingest(setup, port=setup.broker.port, password="not-the-password",
                    client_id="tls-wrong-password")
    man = setup.companies.manufacturer
    wait_for(lambda: logged(man, offset, "ingest.mqtt.not_authorized"),
             "the broker's refusal in the node's log", timeout_s=30)
    publish(setup.broker, events("WRONG", 5))
    time.sleep(2.0)  # several reconnect attempts (reconnect_ms = 300), each refused
    refusals = logged(man, offset, "ingest.mqtt.not_authorized")
    assert refusals[0]["level"] == "error"
    assert refusals[0]["username"] == USER
    assert "password_file" in refusals[0]["hint"]
    assert "not authori" in refusals[0]["error"].lower() or "password" in refusals[0][
        "error"].lower()
    assert not logged(man, offset, "ingest.mqtt.subscribed")
    assert metered(setup) == base
    # the operator sees it without reading logs: GET /api/info (what `node info` prints)
    mqtt = man.api("GET", "/api/info")["ingest"]["mqtt"]
    assert mqtt["state"] == "refused", mqtt
    assert mqtt["code"] == "not_authorized", mqtt
    assert "password_file" in mqtt["hint"], mqtt
    assert mqtt["acked"] == 0, mqtt
    assert "not-the-password" not in json.dumps(mqtt)


def test_a_certificate_the_ca_did_not_sign_is_refused(setup: Setup) -> None:
    man = setup.companies.manufacturer
    # this test's own persistent session at the broker (not another test's: under xdist the
    # module's tests may run on different workers, each with its own broker)
    offset = ingest(setup, port=setup.broker.port, password=PASSWORD, client_id="tls-queue")
    wait_for(lambda: logged(man, offset, "ingest.mqtt.subscribed"), "the TLS subscription",
             timeout_s=30)
    base = metered(setup)
    offset = ingest(setup, port=setup.broker.rogue_port, password=PASSWORD,
                    client_id="tls-rogue")
    wait_for(lambda: logged(man, offset, "ingest.mqtt.tls_refused"),
             "the TLS refusal in the node's log", timeout_s=30)
    publish(setup.broker, events("ROGUE", 5))  # through the genuine listener, same topics
    time.sleep(2.0)
    refusal = logged(man, offset, "ingest.mqtt.tls_refused")[0]
    assert refusal["level"] == "error"
    assert "CERTIFICATE_VERIFY_FAILED" in refusal["error"]
    assert not logged(man, offset, "ingest.mqtt.subscribed")
    mqtt = man.api("GET", "/api/info")["ingest"]["mqtt"]
    assert mqtt["state"] == "refused", mqtt
    assert mqtt["code"] == "tls_refused", mqtt
    assert "CERTIFICATE_VERIFY_FAILED" in mqtt["error"], mqtt
    assert metered(setup) == base
    # the session subscribed above was kept by the broker: it queued the 5 ROGUE messages, and
    # the right configuration under the same client id meters them exactly once
    ingest(setup, port=setup.broker.port, password=PASSWORD, client_id="tls-queue")
    wait_for(lambda: metered(setup) == base + 5 * KM, "the 5 queued messages metered",
             timeout_s=60)
    time.sleep(1.0)
    assert metered(setup) == base + 5 * KM
