"""[ingest] and [ingest.mqtt] in config.toml: read strictly, refused with the setting named."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_config
from protocol.crypto import Signer

from .conftest import make_config


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    make_config(tmp_path / "carrier", Signer.from_label("carrier"))
    return tmp_path / "carrier"


def with_section(directory: Path, text: str) -> Path:
    config = directory / "config.toml"
    config.write_text(config.read_text() + "\n" + text + "\n")
    return directory


def test_the_defaults(directory: Path) -> None:
    ingest = load_config(directory).ingest
    assert (ingest.window_ms, ingest.max_ids, ingest.mqtt) == (86_400_000, 10_000_000, None)


def test_a_subscriber(directory: Path) -> None:
    with_section(directory, '[ingest]\nwindow_ms = 3600000\n[ingest.mqtt]\n'
                 'url = "mqtts://broker.example:8884"\ntopic = "plant/+/usage"\n'
                 'channel = "AB12"\n')
    ingest = load_config(directory).ingest
    assert ingest.window_ms == 3_600_000
    assert ingest.mqtt is not None
    assert ingest.mqtt.host_port == ("broker.example", 8884)
    assert ingest.mqtt.tls
    assert ingest.mqtt.channel == "ab12"
    assert ingest.mqtt.client_id == "meterline-carrier"


@pytest.mark.parametrize(("text", "says"), [
    ("[ingest]\nwindow_ms = 0", "window_ms must be a positive integer"),
    ("[ingest]\nwindow_ms = 2592000001", "at most"),
    ("[ingest]\nwindow = \"24h\"", "unknown [ingest] settings"),
    ("[ingest]\nmax_ids = true", "max_ids must be a positive integer"),
    ('[ingest.mqtt]\nurl = "http://broker:1883"\ntopic = "t"\nchannel = "ab"', "url must be"),
    ('[ingest.mqtt]\nurl = "mqtt://broker:70000"\ntopic = "t"\nchannel = "ab"', "url must be"),
    ('[ingest.mqtt]\nurl = "mqtt://broker"\ntopic = ""\nchannel = "ab"', "topic must be"),
    ('[ingest.mqtt]\nurl = "mqtt://broker"\ntopic = "t"\nchannel = "xyz"', "channel must be"),
    ('[ingest.mqtt]\nurl = "mqtt://broker"\ntopic = "t"\nchannel = "ab"\nqos = 0',
     "unknown [ingest.mqtt] settings"),
    ('[ingest.mqtt]\nurl = "mqtt://broker"\ntopic = "t"\nchannel = "ab"\n'
     'password_file = "pw"', "needs a username"),
    ('[ingest.mqtt]\nurl = "mqtt://broker"\ntopic = "t"\nchannel = "ab"\nusername = "u"\n'
     'password_file = "missing"', "no file"),
])
def test_refused(directory: Path, text: str, says: str) -> None:
    with_section(directory, text)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(directory)
    assert says in str(info.value)


def test_a_password_file_others_can_read_is_refused(directory: Path) -> None:
    (directory / "mqtt.pw").write_text("secret")
    (directory / "mqtt.pw").chmod(0o644)
    with_section(directory, '[ingest.mqtt]\nurl = "mqtt://broker"\ntopic = "t"\n'
                 'channel = "ab"\nusername = "u"\npassword_file = "mqtt.pw"')
    with pytest.raises(ConfigError, match="readable by others"):
        load_config(directory)
    (directory / "mqtt.pw").chmod(0o600)
    assert load_config(directory).ingest.mqtt is not None


def test_a_ca_file_needs_mqtts(directory: Path) -> None:
    (directory / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    with_section(directory, '[ingest.mqtt]\nurl = "mqtt://broker"\ntopic = "t"\n'
                 'channel = "ab"\nca_file = "ca.pem"')
    with pytest.raises(ConfigError, match="mqtts"):
        load_config(directory)
