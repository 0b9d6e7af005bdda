"""A bank, an arbiter and two companies as real processes on loopback.

``meterline demo`` and the end-to-end tests both use this: every daemon is a separate
``meterline`` process with its own data directory, SQLite database and key, exactly as an
operator would run them; this module only starts them and talks to their admin APIs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ports are handed out from below the kernel's ephemeral range (32768+ on Linux): a port the
# kernel picked with bind(0) can be taken again by any outgoing connection's source port before
# the daemon that was meant to listen on it has started. Each process starts at a random point of
# its own slice (the pytest-xdist worker number picks the slice), walks forward, never hands the
# same port out twice, and skips any port something is already bound to.
_PORT_LOW, _PORT_HIGH = 20000, 32000
_PORT_SLICES = 8
_handed_out: set[int] = set()
_next_port: list[int] = []


def _port_slice() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % _PORT_SLICES if worker.isdigit() else 0
    width = (_PORT_HIGH - _PORT_LOW) // _PORT_SLICES
    return _PORT_LOW + index * width, _PORT_LOW + (index + 1) * width


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nothing listens on, never handed out before by this process."""
    low, high = _port_slice()
    if not _next_port:
        _next_port.append(low + (os.getpid() * 7919 + time.monotonic_ns()) % (high - low))
    for _ in range(high - low):
        port = _next_port[0]
        _next_port[0] = low if port + 1 >= high else port + 1
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise ClusterError(f"no free loopback port in {low}..{high - 1}")


def meterline_argv() -> list[str]:
    return [sys.executable, "-m", "node.cli"]


def daemon_env() -> dict[str, str]:
    """A daemon's environment: ours, unbuffered, and with Python's bytecode cache on. A node
    runs as installed, from compiled modules (pip compiles them at install); without the cache
    (``PYTHONDONTWRITEBYTECODE`` in the caller's environment) every start compiles about a
    hundred modules again, some 0.5 s of the restart the bench times (issue 13)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class ClusterError(Exception):
    pass


@dataclass
class Daemon:
    name: str
    directory: Path
    port: int
    admin_port: int | None = None
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, *, timeout_s: float = 30.0) -> None:
        self.log_path = self.directory.parent / f"{self.name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=daemon_env())
        wait_port(self.admin_port or self.port, timeout_s, self)

    def stop(self, *, kill: bool = False) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def wait_port(port: int, timeout_s: float, daemon: Daemon | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon is not None and daemon.process is not None and daemon.process.poll() is not None:
            raise ClusterError(f"{daemon.name} exited ({daemon.process.returncode}):\n"
                               f"{daemon.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ClusterError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


@dataclass
class NodeHandle(Daemon):
    token: str = ""
    node_id: str = ""
    scheme: str = "http"
    """``https`` when the peer API serves TLS."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            *, timeout_s: float = 120.0) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ClusterError(f"{self.name} {method} {path}: {exc.code} "
                               f"{exc.read().decode(errors='replace')}") from None


@dataclass
class Cluster:
    root: Path
    bank: Daemon | None = None
    nodes: dict[str, NodeHandle] = field(default_factory=dict)

    @property
    def bank_url(self) -> str:
        assert self.bank is not None
        return f"http://127.0.0.1:{self.bank.port}"

    def start_bank(self) -> Daemon:
        self.root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        directory = self.root / "bank"
        self.bank = Daemon("bank", directory, port, argv=[
            *meterline_argv(), "bank", "start", "--data-dir", str(directory),
            "--listen", f"127.0.0.1:{port}", "--json-logs"])
        self.bank.start()
        return self.bank

    def add_node(self, name: str, *, role: str = "node", bank: dict[str, Any] | None,
                 allow: list[str] | None = None, db: str | None = None,
                 settings: dict[str, dict[str, Any]] | None = None,
                 tls: dict[str, Path] | None = None,
                 allowed: list[dict[str, Any]] | None = None) -> NodeHandle:
        """Init a node's data directory; `settings` adds config.toml sections (``policy``…);
        `tls` (``cert``, ``key``, ``ca``) goes to ``init --tls-cert/--tls-key/--tls-ca``.

        `allow` are bare allow-list ids (their proposals may not ask us to deposit anything);
        `allowed` are ``[[peers.allowed]]`` entries with limits (``{"node_id": …,
        "max_peer_deposit": "100.00 EUR"}``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        directory = self.root / name
        port, admin_port = free_port(), free_port()
        argv = [*meterline_argv(), "init", "--data-dir", str(directory), "--name", name,
                "--role", role, "--listen", f"127.0.0.1:{port}",
                "--admin", f"127.0.0.1:{admin_port}", "--json"]
        if bank is not None:
            bank_file = self.root / f"{name}-bank.json"
            bank_file.write_text(json.dumps(bank))
            argv += ["--bank-config", str(bank_file)]
        if db:
            argv += ["--db", db]
        for node_id in allow or []:
            argv += ["--allow", node_id]
        for name_, path in (tls or {}).items():
            argv += [f"--tls-{name_}", str(path)]
        out = subprocess.run(argv, capture_output=True, check=False)
        if out.returncode != 0:
            raise ClusterError(f"init {name}: {out.stderr.decode()}")
        if settings or allowed:
            from node.config import CONFIG_FILE, render_config

            config = directory / CONFIG_FILE
            sections: dict[str, Any] = dict(settings or {})
            if allowed:
                sections["peers.allowed"] = allowed
            extra = render_config(sections).split("\n", 1)[1]  # without the header comment
            config.write_text(config.read_text() + extra)
        handle = NodeHandle(
            name, directory, port, admin_port=admin_port,
            argv=[*meterline_argv(), "node", "start", "--data-dir", str(directory),
                  "--json-logs"],
            token=(directory / "admin.token").read_text().strip(),
            node_id=json.loads(out.stdout)["node_id"],
            scheme="https" if tls and "cert" in tls else "http")
        self.nodes[name] = handle
        return handle

    def stop(self) -> None:
        for handle in self.nodes.values():
            handle.stop()
        if self.bank is not None:
            self.bank.stop()


ESCROW, MANUFACTURER, CARRIER = "escrow", "manufacturer", "carrier"


@dataclass
class Companies:
    """The demo topology: a sandbox bank, an arbiter, a manufacturer and a carrier."""

    cluster: Cluster
    arbiter: NodeHandle
    manufacturer: NodeHandle
    carrier: NodeHandle

    def balances(self) -> dict[str, int]:
        import asyncio

        from node.provision import balances

        return asyncio.run(balances(self.cluster.bank_url))

    def open_channel(self, **extra: Any) -> str:
        body = {"peer": self.carrier.node_id, "arbiter": self.arbiter.node_id,
                "deposit": "5000.00 EUR", "peer_deposit": "100.00 EUR",
                "tariff": ["km=0.0123", "container-hour=1.75"], **extra}
        cid: str = self.manufacturer.api("POST", "/api/channels", body)["id"]
        wait_for(lambda: self.manufacturer.api("GET", f"/api/channels/{cid}")["phase"] == "open"
                 and self.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "open",
                 "the channel to open on both sides")
        return cid


def wait_for(check: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise ClusterError(f"timed out waiting for {what}")


def start_companies(root: Path, *, manufacturer_balance: int = 1_000_000,
                    carrier_balance: int = 50_000, say: Any = None,
                    databases: dict[str, str] | None = None,
                    settings: dict[str, dict[str, Any]] | None = None,
                    tls: dict[str, dict[str, Path]] | None = None) -> Companies:
    """Start the bank, open three accounts, start the arbiter and both companies, introduce
    them to each other. The caller stops ``result.cluster`` when done.

    `tls` maps a daemon's name (``arbiter``, ``manufacturer``, ``carrier``) to its TLS files
    (see :meth:`Cluster.add_node`)."""
    import asyncio

    from node.provision import open_sandbox_account

    def step(text: str) -> None:
        if say is not None:
            say(text)

    cluster = Cluster(root)
    try:
        cluster.start_bank()
        step(f"sandbox bank (UK Open Banking v3.1.11) at {cluster.bank_url}")

        async def provision() -> list[dict[str, Any]]:
            specs = [(ESCROW, "Escrow Agent", "40000100000001", 0),
                     (MANUFACTURER, "Manufacturer GmbH", "40000100000002",
                      manufacturer_balance),
                     (CARRIER, "Carrier Ltd", "40000100000003", carrier_balance)]
            return [await open_sandbox_account(
                bank_url=cluster.bank_url, directory=root / f"bank-keys-{acct}",
                account_id=acct, name=name, identification=ident,
                opening_balance_minor=balance) for acct, name, ident, balance in specs]

        escrow_bank, man_bank, car_bank = asyncio.run(provision())
        dbs, files = databases or {}, tls or {}
        arbiter = cluster.add_node("arbiter", role="arbiter", bank=escrow_bank,
                                   db=dbs.get("arbiter"), settings=settings,
                                   tls=files.get("arbiter"))
        manufacturer = cluster.add_node("manufacturer", bank=man_bank,
                                        db=dbs.get("manufacturer"), settings=settings,
                                        tls=files.get("manufacturer"))
        # the carrier takes the manufacturer's proposals at once, up to open_channel's 100.00 EUR
        carrier = cluster.add_node("carrier", bank=car_bank, db=dbs.get("carrier"),
                                   settings=settings, tls=files.get("carrier"),
                                   allowed=[{"node_id": manufacturer.node_id,
                                             "max_peer_deposit": "100.00 EUR"}])
        for handle in (arbiter, manufacturer, carrier):
            handle.start()
            step(f"{handle.name:<12} {handle.node_id[:16]}…  peer API {handle.url}")
        for handle in (manufacturer, carrier):
            handle.api("POST", "/api/peers", {"url": arbiter.url})
        manufacturer.api("POST", "/api/peers", {"url": carrier.url})
        carrier.api("POST", "/api/peers", {"url": manufacturer.url})
    except BaseException:
        cluster.stop()
        raise
    return Companies(cluster, arbiter, manufacturer, carrier)
