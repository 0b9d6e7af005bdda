"""The node's configuration: ``config.toml`` read strictly into one :class:`Config`.

``meterline init`` writes all three (key and token mode 0600) and refuses to overwrite a key.
``meterline node start`` refuses a key file that others can read. A config that does not parse or
names something impossible is a :class:`ConfigError` that says which setting and why.

The sections live beside this module, each in the file named for it: the strict readers and
private files (:mod:`node.config_base`), `[limits]`, `[policy]` and the allow-list
(:mod:`node.config_policy`), `[tls]` (:mod:`node.config_tls`), `[bank]` and `[rails]`
(:mod:`node.bank`), and ``meterline init`` (:mod:`node.datadir`). Their names are re-exported
here, so ``from node.config import …`` is the one import a caller needs.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.bank import BankConfig, read_bank
from node.config_base import (
    CONFIG_FILE,
    DB_FILE,
    KEY_FILE,
    LOOPBACK,
    TOKEN_FILE,
    ConfigError,
    check_keys,
    parse_hostport,
    read_private,
    typed,
    write_private,
)
from node.config_policy import (
    WATCHES_PER_WINDOW,
    Allowance,
    Limits,
    Policy,
    is_node_id,
    read_allowances,
    read_policy,
)
from node.config_tls import TlsConfig, client_ssl_context, read_tls, server_ssl_context
from node.datadir import init_data_dir, render_config
from node.ingest.settings import IngestConfig, read_ingest
from node.roles import Role
from protocol.crypto import Signer
from protocol.messages import URL, BankAccount
from rails.settings import RailConfigError

__all__ = [
    "CONFIG_FILE", "DB_FILE", "KEY_FILE", "TOKEN_FILE", "WATCHES_PER_WINDOW", "Allowance",
    "Config", "ConfigError", "Limits", "Policy", "TlsConfig", "client_ssl_context",
    "default_home", "init_data_dir", "load_config", "load_signer", "load_token",
    "parse_hostport", "read_private", "render_config", "server_ssl_context", "write_private",
]


def default_home() -> Path:
    return Path(os.environ.get("METERLINE_HOME") or Path.home() / ".meterline")


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path
    name: str
    role: Role
    listen: tuple[str, int]
    admin: tuple[str, int]
    public_url: str
    db_url: str
    bank: BankConfig = field(default_factory=BankConfig)
    allow: tuple[str, ...] = ()
    """Node ids (hex) whose channel proposals are accepted without the operator (within their
    allowance): the bare ``allow`` entries and the ``[[peers.allowed]]`` tables together."""
    limits: Limits = field(default_factory=Limits)
    dispute_window_ms: int = 86_400_000
    policy: Policy = field(default_factory=Policy)
    tls: TlsConfig = field(default_factory=TlsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    """[ingest]: the usage events' deduplication window and the MQTT subscriber."""
    allowances: tuple[Allowance, ...] = ()
    """The limits of each allow-listed opener; an id in `allow` without one has the defaults."""

    def allowance(self, node_id: str) -> Allowance | None:
        """The limits within which `node_id`'s proposals are accepted at once; None when it is
        not on the allow-list."""
        for allowance in self.allowances:
            if allowance.node_id == node_id:
                return allowance
        if node_id in self.allow:
            return Allowance(node_id, self.policy.min_dispute_window_ms,
                             self.policy.max_dispute_window_ms)
        return None

    def own_account(self) -> BankAccount | None:
        """The account this node names in channel terms (node) or as its escrow account
        (arbiter); None without a [bank] account."""
        if not self.bank.identification:
            return None
        return BankAccount(self.bank.scheme, self.bank.identification,
                           self.bank.name or self.name)

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def token_path(self) -> Path:
        return self.data_dir / TOKEN_FILE

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin[0]}:{self.admin[1]}"


NODE_KEYS = frozenset({"name", "role", "listen", "admin", "public_url", "db", "dispute_window_ms"})
SECTIONS = frozenset({"node", "bank", "rails", "peers", "limits", "policy", "tls", "ingest"})


def _str(path: Path, node: dict[str, Any], key: str, default: str) -> str:
    value = node.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: [node] {key} must be a string")
    return value


def load_config(data_dir: Path) -> Config:
    """Read config.toml strictly: unknown sections or settings and wrong types are errors."""
    path = data_dir / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"no {path}: run `meterline init --data-dir {data_dir}` first")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    check_keys(path, "top level", raw, SECTIONS)
    node = raw.get("node", {})
    check_keys(path, "node", node, NODE_KEYS)
    peers = raw.get("peers", {})
    check_keys(path, "peers", peers, {"allow", "allowed"})
    try:
        bank = read_bank(raw)
    except RailConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    limits = typed(path, "limits", raw.get("limits", {}), Limits)
    role = Role.parse(_str(path, node, "role", "node"))
    if role is None:
        raise ConfigError(f"{path}: [node] role must be node or arbiter")
    listen = parse_hostport(_str(path, node, "listen", "127.0.0.1:7801"), "[node] listen")
    admin = parse_hostport(_str(path, node, "admin", "127.0.0.1:7802"), "[node] admin")
    if admin[0] not in LOOPBACK:
        raise ConfigError(f"{path}: [node] admin must be a loopback address (the admin API is "
                          "local only)")
    allow_raw = peers.get("allow", [])
    if not isinstance(allow_raw, list) or not all(isinstance(a, str) for a in allow_raw):
        raise ConfigError(f"{path}: [peers] allow must be a list of node ids")
    allow = tuple(a.lower() for a in allow_raw)
    for node_id in allow:
        if not is_node_id(node_id):
            raise ConfigError(f"{path}: [peers] allow entry {node_id!r} is not a node id")
    policy = read_policy(path, raw.get("policy", {}))
    allowances = read_allowances(path, peers.get("allowed", []), policy)
    ids = [*allow, *(a.node_id for a in allowances)]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError(f"{path}: [peers] names {', '.join(twice)} more than once (allow and "
                          "[[peers.allowed]] together)")
    tls = read_tls(path, data_dir, raw.get("tls", {}))
    window = node.get("dispute_window_ms", 86_400_000)
    if not isinstance(window, int) or isinstance(window, bool) or not (
            policy.min_dispute_window_ms <= window <= policy.max_dispute_window_ms):
        raise ConfigError(
            f"{path}: [node] dispute_window_ms must be an integer within [policy] "
            f"{policy.min_dispute_window_ms}..{policy.max_dispute_window_ms}")
    scheme = "https" if tls.cert_file else "http"
    public_url = _str(path, node, "public_url", f"{scheme}://{listen[0]}:{listen[1]}")
    if len(public_url) > URL.max_len or URL.pattern is None or not URL.pattern.fullmatch(
            public_url):
        raise ConfigError(f"{path}: [node] public_url must be an http(s) URL such as "
                          f"https://carrier.example:7811 (at most {URL.max_len} characters: what "
                          f"peers accept in a signed identity), not {public_url[:60]!r}")
    if tls.cert_file and not public_url.startswith("https://"):
        raise ConfigError(f"{path}: [tls] serves the peer API over HTTPS, so [node] public_url "
                          f"must be https://…, not {public_url!r}")
    return Config(
        data_dir=data_dir,
        name=_str(path, node, "name", data_dir.name),
        role=role,
        listen=listen,
        admin=admin,
        public_url=public_url,
        db_url=_str(path, node, "db", f"sqlite+aiosqlite:///{(data_dir / DB_FILE).resolve()}"),
        bank=bank,
        allow=tuple(ids),
        limits=limits,
        dispute_window_ms=window,
        policy=policy,
        allowances=allowances,
        tls=tls,
        ingest=read_ingest(path, data_dir, raw.get("ingest", {}), _str(path, node, "name",
                                                                       data_dir.name)),
    )


def load_signer(config: Config) -> Signer:
    """Read the node's key file (mode 0600 only)."""
    text = read_private(config.key_path, "key file")
    try:
        return Signer(bytes.fromhex(text))
    except ValueError as exc:
        raise ConfigError(f"{config.key_path} does not hold a 32-byte hex key: {exc}") from None


def load_token(config: Config) -> str:
    """Read the admin token (mode 0600 only, like the key)."""
    return read_private(config.token_path, "admin token")
