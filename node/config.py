"""The node's data directory: ``config.toml``, the Ed25519 key file and the admin token file.

``meterline init`` writes all three (key and token mode 0600) and refuses to overwrite a key.
``meterline node start`` refuses a key file that others can read. A config that does not parse or
names something impossible is a :class:`ConfigError` that says which setting and why.

**The allow-list.** An opener on it has its proposals accepted, and our deposit paid, without the
operator — but only within limits (:class:`Allowance`)::

    [peers]
    allow = ["<node id>"]              # default limits (below)

    [[peers.allowed]]
    node_id = "<node id>"
    max_peer_deposit = "1000.00 EUR"   # the most it may ask US to deposit, per channel
    currencies = ["EUR"]               # optional; default: any
    min_dispute_window_ms = 3600000    # optional; default: the [policy] range
    max_dispute_window_ms = 1209600000

A bare ``allow`` entry (or a table without ``max_peer_deposit``) may ask us to deposit
**nothing**: an allow-list entry is written to save the operator a click on channels the opener
funds, and a key on it must not be able to make this node pay a deposit of any size into a
channel on its own. An operator who wants more says how much. A proposal outside the limits is
held for the operator (``meterline channel list`` says why), never refused for it; terms outside
``[policy]`` are refused from anyone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import stat
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.bank import BankConfig, bank_sections, read_bank
from node.roles import Role
from protocol.channel import TermsBounds
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import BankAccount
from protocol.money import currency_exponent, format_decimal, parse_rail_money
from protocol.types import MAX_AMOUNT, MAX_DISPUTE_WINDOW_MS
from rails.settings import RailConfigError

KEY_FILE = "node.key"
TOKEN_FILE = "admin.token"
CONFIG_FILE = "config.toml"
DB_FILE = "meterline.sqlite"


class ConfigError(Exception):
    """The data directory or config.toml is unusable; the message says how to fix it."""


def default_home() -> Path:
    return Path(os.environ.get("METERLINE_HOME") or Path.home() / ".meterline")


def parse_hostport(text: str, setting: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{setting}: {text!r} is not HOST:PORT")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Limits:
    max_inflight: int = 512
    """Unacknowledged proofs the stream keeps in flight before it waits."""
    max_body_bytes: int = 64 * 1024
    max_batch: int = 1024
    """Proofs committed together at most (one transaction)."""
    header_timeout_ms: int = 10_000
    """A request's headers are complete this soon after the connection opens (or after the
    request's first byte), or the connection is closed (specs/0005 "Timeouts and limits")."""
    body_timeout_ms: int = 30_000
    """A request's body is complete this soon after its headers, or the connection is closed."""
    idle_timeout_ms: int = 20_000
    """A kept-alive connection with no new request is closed this long after its last answer
    (longer than the 15 s our HTTP clients keep an idle connection, so they hang up first)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """What this node (or arbiter) accepts of any channel's terms, and how closely it watches.

    The dispute window must leave a node that only learns of a unilateral close by asking the
    arbiter (every `watch_interval_ms`) many chances to hand in its evidence: the minimum is at
    least ten watch intervals (specs/0005 §4).
    """

    min_dispute_window_ms: int = 3_600_000
    """1 h: the shortest dispute window accepted (proposed, accepted, or registered)."""
    max_dispute_window_ms: int = 14 * 86_400_000
    """14 days: the longest (money is locked at most this long by a vanished peer)."""
    watch_interval_ms: int = 30_000
    """How often a node asks the arbiter for the signed status of each unsettled channel."""

    def terms_bounds(self) -> TermsBounds:
        """The dispute windows this policy accepts, as the protocol checks them."""
        return TermsBounds(self.min_dispute_window_ms, self.max_dispute_window_ms)


WATCHES_PER_WINDOW = 10


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


@dataclass(frozen=True, slots=True)
class Allowance:
    """What an allow-listed opener may propose and still be accepted without the operator."""

    node_id: str
    min_dispute_window_ms: int
    max_dispute_window_ms: int
    max_peer_deposit: int = 0
    """The most the opener may ask us to deposit into one channel, in minor units of
    `deposit_currency`. 0 (the default, and what a bare ``allow`` entry gets): nothing."""
    deposit_currency: str = ""
    """The currency of `max_peer_deposit` ("" when it is 0: no deposit in any currency)."""
    currencies: frozenset[str] | None = None
    """The currencies it may propose; None: any."""

    def objection(self, currency: str, peer_deposit: int, dispute_window_ms: int) -> str | None:
        """Why terms with these values are outside the allowance; None when they are within."""
        if self.currencies is not None and currency not in self.currencies:
            return (f"the currency {currency} is not one this opener is allowed "
                    f"({', '.join(sorted(self.currencies))})")
        if peer_deposit and (currency != self.deposit_currency
                             or peer_deposit > self.max_peer_deposit):
            return (f"it asks us to deposit {_minor_text(peer_deposit, currency)}; this opener "
                    f"may ask at most {self.limit_text()}")
        if not self.min_dispute_window_ms <= dispute_window_ms <= self.max_dispute_window_ms:
            return (f"its dispute window of {dispute_window_ms} ms is outside this opener's "
                    f"{self.min_dispute_window_ms}..{self.max_dispute_window_ms} ms")
        return None

    def limit_text(self) -> str:
        if not self.max_peer_deposit:
            return "nothing (no max_peer_deposit is set)"
        return _minor_text(self.max_peer_deposit, self.deposit_currency)


def _minor_text(minor: int, currency: str) -> str:
    try:
        exponent = currency_exponent(currency)
    except ProtocolError:
        return f"{minor} minor units of {currency}"
    return f"{format_decimal(minor, exponent, min_places=exponent)} {currency}"


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


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


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
        (data_dir / CONFIG_FILE).write_text(text)
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
        try:
            load_config(Path(tmp))
        except ConfigError as exc:
            where = str(Path(tmp) / CONFIG_FILE) + ": "
            raise ConfigError("nothing was written: "
                              + str(exc).replace(where, "")) from None


def _tls_section(tls: dict[str, Path]) -> dict[str, str]:
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
        _check_private(Path(section["key_file"]))
    return section


NODE_KEYS = frozenset({"name", "role", "listen", "admin", "public_url", "db", "dispute_window_ms"})
SECTIONS = frozenset({"node", "bank", "rails", "peers", "limits", "policy", "tls"})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _check_keys(path: Path, section: str, raw: dict[str, Any], known: Any) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{path}: unknown [{section}] settings {sorted(unknown)}")


def _typed(path: Path, section: str, raw: dict[str, Any], cls: Any) -> Any:
    """Build `cls` from `raw`, every value of its field's type (ints positive)."""
    _check_keys(path, section, raw, cls.__dataclass_fields__)
    for key, value in raw.items():
        want = type(getattr(cls(), key))
        if want is int:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{path}: [{section}] {key} must be a positive integer")
        elif not isinstance(value, want):
            raise ConfigError(f"{path}: [{section}] {key} must be a {want.__name__}")
    return cls(**raw)


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
    _check_keys(path, "top level", raw, SECTIONS)
    node = raw.get("node", {})
    _check_keys(path, "node", node, NODE_KEYS)
    peers = raw.get("peers", {})
    _check_keys(path, "peers", peers, {"allow", "allowed"})
    try:
        bank = read_bank(raw)
    except RailConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    limits = _typed(path, "limits", raw.get("limits", {}), Limits)
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
        if not _is_node_id(node_id):
            raise ConfigError(f"{path}: [peers] allow entry {node_id!r} is not a node id")
    policy = _policy(path, raw.get("policy", {}))
    allowances = _allowances(path, peers.get("allowed", []), policy)
    ids = [*allow, *(a.node_id for a in allowances)]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError(f"{path}: [peers] names {', '.join(twice)} more than once (allow and "
                          "[[peers.allowed]] together)")
    tls = _tls(path, data_dir, raw.get("tls", {}))
    window = node.get("dispute_window_ms", 86_400_000)
    if not isinstance(window, int) or isinstance(window, bool) or not (
            policy.min_dispute_window_ms <= window <= policy.max_dispute_window_ms):
        raise ConfigError(
            f"{path}: [node] dispute_window_ms must be an integer within [policy] "
            f"{policy.min_dispute_window_ms}..{policy.max_dispute_window_ms}")
    scheme = "https" if tls.cert_file else "http"
    public_url = _str(path, node, "public_url", f"{scheme}://{listen[0]}:{listen[1]}")
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
    )


ALLOWED_KEYS = frozenset({"node_id", "max_peer_deposit", "currencies", "min_dispute_window_ms",
                          "max_dispute_window_ms"})


def _is_node_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _allowances(path: Path, raw: Any, policy: Policy) -> tuple[Allowance, ...]:
    """The ``[[peers.allowed]]`` tables, each checked strictly (ConfigError naming it)."""
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: [[peers.allowed]] must be an array of tables")
    return tuple(_allowance(path, i, entry, policy) for i, entry in enumerate(raw, 1))


def _allowance(path: Path, n: int, entry: Any, policy: Policy) -> Allowance:
    where = f"[[peers.allowed]] entry {n}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    unknown = set(entry) - ALLOWED_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown {where} settings {sorted(unknown)}")
    node_id = entry.get("node_id")
    if not isinstance(node_id, str) or not _is_node_id(node_id.lower()):
        raise ConfigError(f"{path}: {where} node_id must be a node id (64 hex digits)")
    node_id = node_id.lower()
    where = f"[[peers.allowed]] entry {n} ({node_id[:16]}…)"
    max_minor, deposit_currency = 0, ""
    if "max_peer_deposit" in entry:
        text = entry["max_peer_deposit"]
        if not isinstance(text, str):
            raise ConfigError(f"{path}: {where} max_peer_deposit must be an amount in whole "
                              f"minor units like \"1000.00 EUR\", not {text!r}")
        try:
            money = parse_rail_money(text)  # the money grammar, specs/0001 §2.1
        except ProtocolError as exc:
            raise ConfigError(f"{path}: {where} max_peer_deposit: {exc.message}") from None
        if money.amount > MAX_AMOUNT:
            raise ConfigError(f"{path}: {where} max_peer_deposit is above {MAX_AMOUNT}")
        max_minor, deposit_currency = money.amount, money.currency if money.amount else ""
    currencies: frozenset[str] | None = None
    if "currencies" in entry:
        listed = entry["currencies"]
        if not isinstance(listed, list) or not listed or not all(
                isinstance(c, str) for c in listed):
            raise ConfigError(f"{path}: {where} currencies must be a non-empty list of ISO 4217 "
                              "codes")
        for code in listed:
            try:
                currency_exponent(code)
            except ProtocolError as exc:
                raise ConfigError(f"{path}: {where} currencies: {exc.message}") from None
        currencies = frozenset(listed)
        if deposit_currency and deposit_currency not in currencies:
            raise ConfigError(f"{path}: {where} max_peer_deposit is in {deposit_currency}, "
                              "which is not in its currencies")
    windows = []
    for key in ("min_dispute_window_ms", "max_dispute_window_ms"):
        value = entry.get(key, getattr(policy, key))
        if not isinstance(value, int) or isinstance(value, bool) or not (
                policy.min_dispute_window_ms <= value <= policy.max_dispute_window_ms):
            raise ConfigError(
                f"{path}: {where} {key} must be an integer within [policy] "
                f"{policy.min_dispute_window_ms}..{policy.max_dispute_window_ms}")
        windows.append(value)
    if windows[0] > windows[1]:
        raise ConfigError(f"{path}: {where} min_dispute_window_ms is above max_dispute_window_ms")
    return Allowance(node_id, windows[0], windows[1], max_minor, deposit_currency, currencies)


def _tls(path: Path, data_dir: Path, raw: dict[str, Any]) -> TlsConfig:
    """[tls]: paths relative to the data directory become absolute; cert and key go together."""
    tls: TlsConfig = _typed(path, "tls", raw, TlsConfig)
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError(f"{path}: [tls] cert_file and key_file go together")
    return TlsConfig(**{name: str(data_dir / value) if value else ""
                        for name, value in (("cert_file", tls.cert_file),
                                            ("key_file", tls.key_file),
                                            ("ca_file", tls.ca_file))})


def _policy(path: Path, raw: dict[str, Any]) -> Policy:
    policy: Policy = _typed(path, "policy", raw, Policy)
    if policy.max_dispute_window_ms > MAX_DISPUTE_WINDOW_MS:
        raise ConfigError(f"{path}: [policy] max_dispute_window_ms is at most "
                          f"{MAX_DISPUTE_WINDOW_MS} (366 days)")
    if policy.min_dispute_window_ms > policy.max_dispute_window_ms:
        raise ConfigError(f"{path}: [policy] min_dispute_window_ms is above "
                          "max_dispute_window_ms")
    if policy.min_dispute_window_ms < WATCHES_PER_WINDOW * policy.watch_interval_ms:
        raise ConfigError(
            f"{path}: [policy] min_dispute_window_ms must be at least {WATCHES_PER_WINDOW} × "
            f"watch_interval_ms ({WATCHES_PER_WINDOW * policy.watch_interval_ms}): a node must "
            "have many chances to learn of a unilateral close in time")
    return policy


def read_private(path: Path, what: str) -> str:
    """A secret file's text; refused when missing or when group or others can read it."""
    if not path.exists():
        raise ConfigError(f"no {what} {path}: run `meterline init` first")
    _check_private(path)
    return path.read_text().strip()


def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by others (mode {mode:o}): run `chmod 600 {path}`"
        )


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
