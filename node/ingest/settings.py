"""The `[ingest]` section: the usage events' deduplication window, and `[ingest.mqtt]`.

    [ingest]
    window_ms = 86400000        # an event id is remembered (and an older event refused) 24 h
    max_ids = 10000000          # the deduplication table holds at most this many ids

    [ingest.mqtt]               # optional: meter each message of a topic as a usage event
    url = "mqtt://127.0.0.1:1883"          # or mqtts://host:8883 (TLS, verified)
    topic = "plant/+/usage"
    channel = "9f3c…"                      # the channel (id or unique prefix) it pays on
    client_id = "meterline-carrier"        # a persistent session: QoS 1 survives a reconnect
    username = ""
    password_file = ""                     # mode 0600, relative to the data directory
    ca_file = ""                           # PEM to verify an mqtts broker against
    reconnect_ms = 1000

Storage of the window is bounded: ``max_ids`` × ~``BYTES_PER_ID`` (specs/0003 §5.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config_base import ConfigError, check_keys, check_private, typed

BYTES_PER_ID = 100
"""What one remembered id costs in SQLite, row and time index: 88.5 bytes measured (by
tests/e2e/test_usage_events.py, which fails when it grows past this); PostgreSQL's
per-row header makes it more there, unmeasured."""
MAX_WINDOW_MS = 30 * 86_400_000
_URL = re.compile(r"(mqtts?)://([A-Za-z0-9.\-\[\]:]{1,253}?)(?::([0-9]{1,5}))?/?")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str = ""
    topic: str = ""
    channel: str = ""
    client_id: str = ""
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    reconnect_ms: int = 1000

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def host_port(self) -> tuple[str, int]:
        match = _URL.fullmatch(self.url)
        assert match is not None  # checked when read
        port = int(match.group(3)) if match.group(3) else (8883 if self.tls else 1883)
        return match.group(2), port


@dataclass(frozen=True, slots=True)
class IngestConfig:
    window_ms: int = 86_400_000
    max_ids: int = 10_000_000
    mqtt: MqttConfig | None = field(default=None)


def read_ingest(path: Path, data_dir: Path, raw: dict[str, Any], name: str) -> IngestConfig:
    """[ingest] strictly: unknown settings, wrong types, an impossible window are errors."""
    check_keys(path, "ingest", raw, {"window_ms", "max_ids", "mqtt"})
    plain = {k: v for k, v in raw.items() if k != "mqtt"}
    base: IngestConfig = typed(path, "ingest", plain, _Plain)
    if base.window_ms > MAX_WINDOW_MS:
        raise ConfigError(f"{path}: [ingest] window_ms must be at most {MAX_WINDOW_MS} (30 days)")
    mqtt = None
    if "mqtt" in raw:
        mqtt = _read_mqtt(path, data_dir, raw["mqtt"], name)
    return IngestConfig(base.window_ms, base.max_ids, mqtt)


@dataclass(frozen=True, slots=True)
class _Plain:
    window_ms: int = 86_400_000
    max_ids: int = 10_000_000


def _read_mqtt(path: Path, data_dir: Path, raw: Any, name: str) -> MqttConfig:
    check_keys(path, "ingest.mqtt", raw, MqttConfig.__dataclass_fields__)
    mqtt: MqttConfig = typed(path, "ingest.mqtt", raw, MqttConfig)
    where = f"{path}: [ingest.mqtt]"
    match = _URL.fullmatch(mqtt.url)
    if match is None or (match.group(3) and not 0 < int(match.group(3)) < 65536):
        raise ConfigError(f"{where} url must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], "
                          f"not {mqtt.url!r}")
    if not mqtt.topic or len(mqtt.topic) > 256 or "\x00" in mqtt.topic:
        raise ConfigError(f"{where} topic must be an MQTT topic filter such as plant/+/usage")
    if not re.fullmatch(r"[0-9a-fA-F]{1,64}", mqtt.channel):
        raise ConfigError(f"{where} channel must be a channel id or a unique prefix of it (hex)")
    if mqtt.password_file and not mqtt.username:
        raise ConfigError(f"{where} password_file needs a username")
    files = {}
    for setting in ("password_file", "ca_file"):
        value = getattr(mqtt, setting)
        if value:
            full = (data_dir / value).resolve()
            if not full.is_file():
                raise ConfigError(f"{where} {setting}: no file {full}")
            files[setting] = str(full)
    if "password_file" in files:
        check_private(Path(files["password_file"]))
    if mqtt.ca_file and not mqtt.tls:
        raise ConfigError(f"{where} ca_file is for an mqtts:// broker")
    return MqttConfig(mqtt.url, mqtt.topic, mqtt.channel.lower(),
                      mqtt.client_id or f"meterline-{name}"[:64], mqtt.username,
                      files.get("password_file", ""), files.get("ca_file", ""),
                      mqtt.reconnect_ms)


__all__ = ["BYTES_PER_ID", "IngestConfig", "MqttConfig", "read_ingest"]
