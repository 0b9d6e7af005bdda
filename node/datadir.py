"""``meterline init``: a data directory with config.toml, the node key and the admin token.

All three files or none are written (key and token mode 0600), an existing key is never
overwritten, and the config is read back as ``node start`` will read it before anything is
written.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from node.bank import bank_sections
from node.config_base import (
    CONFIG_FILE,
    DB_FILE,
    KEY_FILE,
    LOOPBACK,
    TOKEN_FILE,
    ConfigError,
    parse_hostport,
    write_private,
)
from node.config_tls import tls_section as _tls_section
from node.roles import Role
from protocol.crypto import Signer
from rails.settings import RailConfigError


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_config(
    sections: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]],
) -> str:
    """TOML for `sections`: a mapping is a ``[table]``, a list of mappings an array of tables
    (``[[peers.allowed]]``)."""
    lines = ["# meterline node configuration (written by `meterline init`)"]
    for section, values in sections.items():
        tables = [values] if isinstance(values, Mapping) else list(values)
        header = f"[{section}]" if isinstance(values, Mapping) else f"[[{section}]]"
        for table in tables:
            lines.append(f"\n{header}")
            lines += [f"{key} = {_toml_value(v)}" for key, v in table.items()]
    return "\n".join(lines) + "\n"


def init_data_dir(
    data_dir: Path,
    *,
    name: str,
    role: str = "node",
    listen: str = "127.0.0.1:7801",
    admin: str = "127.0.0.1:7802",
    db: str | None = None,
    bank: dict[str, Any] | None = None,
    allow: list[str] | None = None,
    allowed: Sequence[Mapping[str, Any]] | None = None,
    seed: bytes | None = None,
    tls: dict[str, Path] | None = None,
) -> Signer:
    """Write config.toml, the key and the token. Refuses to overwrite an existing key.

    `allow` are bare allow-list ids (default limits); `allowed` are ``[[peers.allowed]]`` tables
    (``{"node_id": …, "max_peer_deposit": "100.00 EUR"}``). `tls` (``cert``, ``key``, ``ca``;
    paths stored absolute): with a certificate and key the peer API serves HTTPS and
    `public_url` is ``https://HOST:PORT``.
    """
    if Role.parse(role) is None:
        raise ConfigError(f"role must be node or arbiter, not {role!r}")
    host, port = parse_hostport(listen, "--listen")
    admin_host, _ = parse_hostport(admin, "--admin")
    if admin_host not in LOOPBACK:
        raise ConfigError("--admin must be a loopback address: the admin API is local only")
    key_path = data_dir / KEY_FILE
    if key_path.exists():
        raise ConfigError(f"{key_path} already exists: refusing to overwrite a node key")
    tls_section = _tls_section(tls or {})
    try:
        bank_tables = bank_sections(bank or {})
    except RailConfigError as exc:
        raise ConfigError(f"bank settings: {exc}") from None
    scheme = "https" if "cert_file" in tls_section else "http"
    sections: dict[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]] = {
        "node": {
            "name": name,
            "role": role,
            "listen": listen,
            "admin": admin,
            "public_url": f"{scheme}://{host}:{port}",
            "db": db or f"sqlite+aiosqlite:///{(data_dir / DB_FILE).resolve()}",
        },
        **bank_tables,
        "peers": {"allow": list(allow or [])},
    }
    if allowed:
        sections["peers.allowed"] = list(allowed)
    if tls_section:
        sections["tls"] = tls_section
    text = render_config(sections)
    _check_rendered(text)
    created = not data_dir.exists()
    written: list[Path] = []
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = Signer(seed if seed is not None else secrets.token_bytes(32))
        write_private(key_path, signer.seed().hex().encode() + b"\n")
        written.append(key_path)
        token_path = data_dir / TOKEN_FILE
        token_path.unlink(missing_ok=True)
        write_private(token_path, secrets.token_urlsafe(32).encode() + b"\n")
        written.append(token_path)
        written.append(data_dir / CONFIG_FILE)
        (data_dir / CONFIG_FILE).unlink(missing_ok=True)
        write_private(data_dir / CONFIG_FILE, text.encode())  # [node] db may hold a password
    except BaseException:
        for path in written:  # no half-initialised directory: all three files or none
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return signer


def _check_rendered(text: str) -> None:
    """Read `text` back as `load_config` will before anything is written: a setting it would
    refuse at start (an unknown [bank] key, a wrong type) is refused by `init` instead."""
    with tempfile.TemporaryDirectory(prefix="meterline-init-") as tmp:
        (Path(tmp) / CONFIG_FILE).write_text(text)
        from node.config import load_config  # config.py re-exports this module's functions

        try:
            load_config(Path(tmp))
        except ConfigError as exc:
            where = str(Path(tmp) / CONFIG_FILE) + ": "
            raise ConfigError("nothing was written: "
                              + str(exc).replace(where, "")) from None
