"""TLS on the peer API, end to end: certificates made here, real daemons, https and wss only.

A CA and one server certificate per daemon (SAN IP 127.0.0.1) are generated with
``cryptography``; the arbiter and both companies are initialised with
``--tls-cert/--tls-key/--tls-ca`` and run as processes next to the sandbox bank. The companies
introduce themselves over https, open a channel (the arbiter's funding confirmation and payout
notices travel over https too), pay over the ``wss://`` stream and close until the bank books
the payouts. The peer port speaks nothing but TLS, and a client that does not trust the CA (a
plain aiohttp client on the system CAs, or a meterline node without ``--tls-ca``) is refused:
certificate verify failed.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.cluster import ClusterError
from node.config import Config, client_ssl_context, init_data_dir, load_config
from node.errors import PeerUnavailable
from node.peerclient import PeerClient
from protocol.crypto import Signer
from tests.e2e.cluster import CARRIER, ESCROW, MANUFACTURER, Companies, companies, wait_for
from tests.support import free_port


@dataclass(frozen=True)
class Pki:
    ca: Path
    files: dict[str, dict[str, Path]]
    """Per daemon: ``cert``, ``key`` and ``ca`` (what Cluster.add_node takes)."""


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(
        now + dt.timedelta(days=1))


def make_ca(directory: Path, common: str = "meterline test CA") -> tuple[
        Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _validity(x509.CertificateBuilder().subject_name(_name(common)).issuer_name(
        _name(common)).public_key(key.public_key()).serial_number(x509.random_serial_number())
    ).add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
        x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                      content_commitment=False, key_encipherment=False, data_encipherment=False,
                      key_agreement=False, encipher_only=False, decipher_only=False),
        critical=True).add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).sign(key, hashes.SHA256())
    path = directory / f"{common.replace(' ', '-')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_server_cert(directory: Path, name: str, issuer: x509.Certificate | None,
                     issuer_key: ec.EllipticCurvePrivateKey | None) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and localhost) signed by the CA, or self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _validity(x509.CertificateBuilder().subject_name(_name(name)).issuer_name(
        issuer.subject if issuer is not None else _name(name)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())).add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.DNSName("localhost")]), critical=False
    ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                    critical=False)
    if issuer is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                        critical=True)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key()), critical=False)  # type: ignore[arg-type]
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = make_ca(directory)
    files = {}
    for name in ("arbiter", "manufacturer", "carrier"):
        cert, key = make_server_cert(directory, name, ca_cert, ca_key)
        files[name] = {"cert": cert, "key": key, "ca": ca}
    return Pki(ca, files)


@pytest.fixture(scope="module")
def tls_companies(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Companies]:
    with companies(tmp_path_factory.mktemp("tls"), tls=pki.files) as c:
        yield c


def test_a_channel_runs_over_https_and_wss(tls_companies: Companies) -> None:
    c = tls_companies
    for handle in (c.arbiter, c.manufacturer, c.carrier):
        assert handle.url.startswith("https://127.0.0.1:")
        assert handle.api("GET", "/api/status")["public_url"] == handle.url
    known = {p["node_id"]: p for p in c.manufacturer.api("GET", "/api/peers")["peers"]}
    assert known[c.arbiter.node_id]["url"] == c.arbiter.url
    assert known[c.arbiter.node_id]["account"]["identification"] == "40000100000001"
    cid = c.open_channel()  # funding confirmations from the arbiter: https callbacks
    funded = c.balances()
    c.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                       {"units": {"km": "1"}, "reference": "SHIP-1", "repeat": 300})
    paid = c.manufacturer.api("GET", f"/api/channels/{cid}")
    assert (paid["nonce_sent"], paid["acked_nonce_sent"]) == (300, 300)  # receipts came back
    assert c.carrier.api("GET", f"/api/channels/{cid}")["units"]["received"]["km"] == "300"
    c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
    wait_for(lambda: all(h.api("GET", f"/api/channels/{cid}")["phase"] == "settled"
                         for h in (c.manufacturer, c.carrier)), "the payouts over TLS")
    final = c.balances()
    assert final[CARRIER] - funded[CARRIER] == 10_000 + 369  # 300 km × 0.0123 EUR
    assert final[MANUFACTURER] - funded[MANUFACTURER] == 500_000 - 369
    assert final[ESCROW] == 0


def test_the_peer_port_speaks_only_tls(tls_companies: Companies) -> None:
    port = tls_companies.arbiter.port
    with pytest.raises((http.client.HTTPException, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/p2p/info", timeout=10)
    # nor does a raw plain-HTTP request get any HTTP answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /p2p/info HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(4096)
        except ConnectionError:
            answer = b""
    assert not answer.startswith(b"HTTP/")


async def test_a_client_without_the_ca_is_refused(tls_companies: Companies, pki: Pki) -> None:
    url = f"{tls_companies.arbiter.url}/p2p/identity?challenge={'00' * 16}"
    async with aiohttp.ClientSession() as http_:  # the system CAs: ours is not among them
        with pytest.raises(aiohttp.ClientConnectorCertificateError,
                           match="certificate verify failed"):
            await http_.get(url)
    trusting = ssl.create_default_context(cafile=str(pki.ca))
    async with aiohttp.ClientSession() as http_, http_.get(url, ssl=trusting) as resp:
        assert resp.status == 200


def test_a_node_without_the_ca_cannot_add_a_tls_peer(tls_companies: Companies) -> None:
    outsider = tls_companies.cluster.add_node("outsider", bank=None)
    outsider.start()
    with pytest.raises(ClusterError, match=r"PEER_UNAVAILABLE.*certificate verify failed"):
        outsider.api("POST", "/api/peers", {"url": tls_companies.arbiter.url})
    assert outsider.api("GET", "/api/peers")["peers"] == []
    outsider.stop()


async def test_a_pinned_self_signed_certificate(tmp_path: Path) -> None:
    """`[tls] ca_file` may be one peer's self-signed certificate: that peer verifies, a peer
    with another self-signed certificate (same address) does not."""
    from node.app import running

    pinned_cert, pinned_key = make_server_cert(tmp_path, "pinned", None, None)
    other_cert, other_key = make_server_cert(tmp_path, "other", None, None)
    signer = Signer.from_label("pinned-peer")

    def config(name: str, tls: dict[str, Path]) -> Config:
        init_data_dir(tmp_path / name, name=name, listen=f"127.0.0.1:{free_port()}",
                      admin=f"127.0.0.1:{free_port()}", seed=signer.seed(), tls=tls)
        return load_config(tmp_path / name)

    server = config("server", {"cert": pinned_cert, "key": pinned_key})
    imposter = config("imposter", {"cert": other_cert, "key": other_key})
    client = config("client", {"ca": pinned_cert})
    for cfg in (server, imposter):
        assert cfg.public_url.startswith("https://")
    peers = PeerClient(node_id="00" * 32, ssl_context=client_ssl_context(client))
    try:
        async with running(server) as node:
            info = await peers.identity(node.config.public_url, b"\x01" * 16)
            assert info.node_id == signer.node_id
        async with running(imposter) as node:
            with pytest.raises(PeerUnavailable, match="certificate verify failed"):
                await peers.identity(node.config.public_url, b"\x01" * 16)
    finally:
        await peers.close()


# -- configuration -------------------------------------------------------------------------------


def test_init_stores_absolute_paths_and_an_https_url(tmp_path: Path) -> None:
    import subprocess
    import sys
    import tomllib

    cert, key = make_server_cert(tmp_path, "node", None, None)
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "init", "--data-dir", "home", "--listen",
         "127.0.0.1:7811", "--tls-cert", cert.name, "--tls-key", key.name, "--tls-ca",
         cert.name], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    raw = tomllib.loads((tmp_path / "home" / "config.toml").read_text())
    assert raw["node"]["public_url"] == "https://127.0.0.1:7811"
    assert raw["tls"] == {"cert_file": str(cert), "key_file": str(key), "ca_file": str(cert)}
    assert load_config(tmp_path / "home").tls.cert_file == str(cert)


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    from node.config import ConfigError, server_ssl_context

    cert, key = make_server_cert(tmp_path, "node", None, None)
    with pytest.raises(ConfigError, match="go together"):
        init_data_dir(tmp_path / "a", name="a", tls={"cert": cert})
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        init_data_dir(tmp_path / "b", name="b", tls={"cert": cert, "key": key})
    key.chmod(0o600)
    init_data_dir(tmp_path / "c", name="c", tls={"cert": cert, "key": key})
    config = load_config(tmp_path / "c")
    assert server_ssl_context(config) is not None
    key.chmod(0o640)  # the daemon refuses a key others can read, like the node key
    with pytest.raises(ConfigError, match="readable by others"):
        server_ssl_context(config)
    key.chmod(0o600)
    path = tmp_path / "c" / "config.toml"
    text = path.read_text()
    path.write_text(text.replace("https://", "http://"))
    with pytest.raises(ConfigError, match="public_url must be https"):
        load_config(tmp_path / "c")
    path.write_text(text.replace(f'key_file = "{key}"\n', ""))
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_config(tmp_path / "c")
    path.write_text(text + 'verify = false\n')
    with pytest.raises(ConfigError, match="unknown \\[tls\\] settings"):
        load_config(tmp_path / "c")
