"""Publishing test messages to a real MQTT broker with paho, as a device would."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any

from paho.mqtt import client as paho


def publish_acked(port: int, topic: str, payloads: list[Any], *, ca: Path | None = None,
                  credentials: tuple[str, str] | None = None) -> None:
    """Publish each payload as JSON at QoS 1 and wait until the broker acknowledged every one;
    over TLS trusting `ca` when given, logging in with `credentials` when given."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    if ca is not None:
        client.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if credentials is not None:
        client.username_pw_set(*credentials)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, json.dumps(p), qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(15)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()
