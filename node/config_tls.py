"""TLS on the peer API: the `[tls]` section and the server and client contexts built from it."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.config_base import ConfigError, check_private, read_private, typed

if TYPE_CHECKING:
    from node.config import Config


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS on the peer API (the admin API stays plain HTTP on loopback).

    `cert_file` and `key_file` (PEM, the key mode 0600 like the node key) make the peer API serve
    HTTPS; `public_url` must then be ``https://``. `ca_file` (PEM: a CA bundle, or a peer's
    self-signed certificate to pin) is what this node verifies https peers against instead of
    the system CAs. Verification is always on.
    """

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""



def tls_section(tls: dict[str, Path]) -> dict[str, str]:
    unknown = set(tls) - {"cert", "key", "ca"}
    if unknown:
        raise ConfigError(f"unknown TLS settings {sorted(unknown)}")
    if ("cert" in tls) != ("key" in tls):
        raise ConfigError("--tls-cert and --tls-key go together (the peer API's certificate "
                          "and its private key)")
    section = {}
    for name, setting in (("cert", "cert_file"), ("key", "key_file"), ("ca", "ca_file")):
        if name in tls:
            path = Path(tls[name]).resolve()
            if not path.is_file():
                raise ConfigError(f"--tls-{name}: no file {path}")
            section[setting] = str(path)
    if "key_file" in section:
        check_private(Path(section["key_file"]))
    return section


def read_tls(path: Path, data_dir: Path, raw: dict[str, Any]) -> TlsConfig:
    """[tls]: paths relative to the data directory become absolute; cert and key go together."""
    tls: TlsConfig = typed(path, "tls", raw, TlsConfig)
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError(f"{path}: [tls] cert_file and key_file go together")
    return TlsConfig(**{name: str(data_dir / value) if value else ""
                        for name, value in (("cert_file", tls.cert_file),
                                            ("key_file", tls.key_file),
                                            ("ca_file", tls.ca_file))})


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The peer API's TLS context from [tls] cert_file and key_file (None: plain HTTP).

    The key file must be private (mode 0600), like the node key."""
    tls = config.tls
    if not tls.cert_file:
        return None
    for setting, value in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if not Path(value).is_file():
            raise ConfigError(f"[tls] {setting}: no file {value}")
    read_private(Path(tls.key_file), "TLS key file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"[tls] cannot use {tls.cert_file} with {tls.key_file}: {exc}") from None
    return context


def client_ssl_context(config: Config) -> ssl.SSLContext:
    """How this node verifies https peers: [tls] ca_file when set (a CA bundle or a pinned
    self-signed certificate, nothing else trusted), else the system CAs. Hostnames are checked."""
    ca_file = config.tls.ca_file or None
    if ca_file is not None and not Path(ca_file).is_file():
        raise ConfigError(f"[tls] ca_file: no file {ca_file}")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"[tls] ca_file {ca_file} holds no usable certificate: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
