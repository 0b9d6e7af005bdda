"""Daemons in their own network namespaces, joined by a bridge, with faults on their links.

Topology (one per test): a bridge in the root namespace holds ``10.213.S.1`` (the sandbox bank)
and ``10.213.S.10`` (the arbiter, also in the root namespace); each company node runs in its own
namespace (``ip netns``) behind a veth pair, at ``10.213.S.2``, ``.3``. A node's admin API stays
on its namespace's loopback (config refuses anything else), so the test reaches it from a
thread that has entered that namespace (``setns(2)``).

Faults on a node's link (its namespace's end of the veth):
- `partition(ip)`: a blackhole route in the namespace — nothing reaches `ip`, nor do answers
  from it come back (a one-host partition; the other links keep working);
- `shape(rate, latency_ms, limit)`: ``tc tbf`` — a slow link whose queue adds delay, and with a
  short queue drops packets under load. ``tc netem`` is used when the kernel has it; where it
  does not (``sch_netem`` missing), tbf stands in, and the test says so;
- `link(up)`: the veth down and up again.

Needs root, ``ip`` and ``tc``; :func:`netns_available` says why not, for the skip.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from node.cluster import ClusterError, free_port, meterline_argv

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise ClusterError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    name = f"mlf-probe-{secrets.token_hex(3)}"
    out = sh("ip", "netns", "add", name, check=False)
    if out.returncode != 0:
        return f"`ip netns add` failed: {out.stderr.strip()}"
    sh("ip", "netns", "del", name, check=False)
    return None


def netem_available(ns: str) -> bool:
    out = sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
             "delay", "1ms", check=False)
    if out.returncode == 0:
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lo", "root", check=False)
    return out.returncode == 0


class Namespace:
    """One network namespace with a veth to the bridge, and a thread inside it."""

    def __init__(self, name: str, address: str, bridge: str, index: int) -> None:
        self.name, self.address = name, address
        self.dev, self.peer_dev = f"mlf{index}{bridge[3:9]}", f"mlb{index}{bridge[3:9]}"
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", self.dev, "type", "veth", "peer", "name", self.peer_dev)
        sh("ip", "link", "set", self.dev, "netns", name)
        sh("ip", "link", "set", self.peer_dev, "master", bridge, "up")
        self.exec("ip", "link", "set", "lo", "up")
        self.exec("ip", "addr", "add", f"{address}/24", "dev", self.dev)
        self.exec("ip", "link", "set", self.dev, "up")
        self._pool = concurrent.futures.ThreadPoolExecutor(1, initializer=self._enter)

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
        finally:
            os.close(fd)

    def inside(self, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread inside this namespace (its sockets are made there)."""
        return self._pool.submit(fn).result()

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *argv, check=check)

    def partition(self, address: str) -> None:
        self.exec("ip", "route", "add", "blackhole", f"{address}/32")

    def heal(self, address: str) -> None:
        self.exec("ip", "route", "del", "blackhole", f"{address}/32", check=False)

    def shape(self, *, rate: str, latency_ms: int, limit_bytes: int | None = None,
              loss_pct: float = 0.0, netem: bool = False) -> None:
        if netem:
            args = ["netem", "delay", f"{latency_ms}ms", "loss", f"{loss_pct}%", "rate", rate]
        else:
            args = ["tbf", "rate", rate, "burst", "16kb"]
            args += ["limit", str(limit_bytes)] if limit_bytes else ["latency", f"{latency_ms}ms"]
        self.exec("tc", "qdisc", "replace", "dev", self.dev, "root", *args)

    def unshape(self) -> None:
        self.exec("tc", "qdisc", "del", "dev", self.dev, "root", check=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        sh("ip", "netns", "del", self.name, check=False)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    wait: Callable[[], None]
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 40.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise ClusterError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                self.wait()
                time.sleep(0.3)  # the port may be another process's: this one must stay up
                if self.process.poll() is not None:
                    raise ClusterError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _connect(host: str, port: int) -> Callable[[], None]:
    def probe() -> None:
        socket.create_connection((host, port), 0.3).close()
    return probe


@dataclass
class NetNode:
    """A meterline node: peer API at `host:port`, admin API on its namespace's loopback."""

    name: str
    directory: Path
    host: str
    port: int
    admin_port: int
    ns: Namespace | None
    proc: Proc
    token: str = ""
    node_id: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            *, timeout_s: float = 60.0) -> Any:
        def call() -> Any:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.admin_port}{path}",
                data=None if body is None else json.dumps(body).encode(), method=method,
                headers={"Authorization": f"Bearer {self.token}",
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                raise ClusterError(f"{self.name} {method} {path}: {exc.code} "
                                   f"{exc.read().decode(errors='replace')}") from None
        return self.ns.inside(call) if self.ns is not None else call()

    def tail(self, n: int = 30) -> str:
        lines = self.proc.log.read_text(errors="replace").splitlines() if \
            self.proc.log.exists() else []
        return "\n".join(lines[-n:])


@dataclass
class Net:
    root: Path
    subnet: int = field(default_factory=lambda: 100 + secrets.randbelow(150))
    bridge: str = field(default_factory=lambda: f"mlf{secrets.token_hex(3)}br")
    namespaces: list[Namespace] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)

    def ip(self, host: int) -> str:
        return f"10.213.{self.subnet}.{host}"

    def __post_init__(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        for host in (1, 10):
            sh("ip", "addr", "add", f"{self.ip(host)}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def namespace(self, label: str, host: int) -> Namespace:
        ns = Namespace(f"mlf-{self.bridge[3:9]}-{label}", self.ip(host), self.bridge,
                       len(self.namespaces))
        self.namespaces.append(ns)
        return ns

    def start_bank(self) -> str:
        port = free_port()
        host = self.ip(1)
        proc = Proc("bank", [*meterline_argv(), "bank", "start", "--data-dir",
                             str(self.root / "bank"), "--listen", f"{host}:{port}",
                             "--json-logs"], self.root / "bank.log", _connect(host, port))
        self.procs.append(proc)
        proc.start()
        return f"http://{host}:{port}"

    def add_node(self, name: str, *, host: int, ns: Namespace | None, role: str = "node",
                 bank: dict[str, Any] | None, settings: dict[str, Any] | None = None,
                 allowed: list[dict[str, Any]] | None = None) -> NetNode:
        directory = self.root / name
        port, admin_port = free_port(), free_port()
        address = self.ip(host)
        argv = [*meterline_argv(), "init", "--data-dir", str(directory), "--name", name,
                "--role", role, "--listen", f"{address}:{port}",
                "--admin", f"127.0.0.1:{admin_port}", "--json"]
        if bank is not None:
            bank_file = self.root / f"{name}-bank.json"
            bank_file.write_text(json.dumps(bank))
            argv += ["--bank-config", str(bank_file)]
        out = subprocess.run(argv, capture_output=True, check=False)
        if out.returncode != 0:
            raise ClusterError(f"init {name}: {out.stderr.decode()}")
        if settings or allowed:
            from node.config import CONFIG_FILE, render_config

            sections: dict[str, Any] = dict(settings or {})
            if allowed:
                sections["peers.allowed"] = allowed
            config = directory / CONFIG_FILE
            config.write_text(config.read_text() + render_config(sections).split("\n", 1)[1])
        start = [*meterline_argv(), "node", "start", "--data-dir", str(directory), "--json-logs"]
        if ns is not None:
            start = ["ip", "netns", "exec", ns.name, *start]
            namespace = ns

            def probe() -> None:
                namespace.inside(_connect("127.0.0.1", admin_port))
        else:
            probe = _connect("127.0.0.1", admin_port)
        proc = Proc(name, start, self.root / f"{name}.log", probe)
        self.procs.append(proc)
        return NetNode(name, directory, address, port, admin_port, ns, proc,
                       token=(directory / "admin.token").read_text().strip(),
                       node_id=json.loads(out.stdout)["node_id"])

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        for ns in self.namespaces:
            ns.close()
        sh("ip", "link", "del", self.bridge, check=False)


@contextlib.contextmanager
def network(root: Path) -> Iterator[Net]:
    root.mkdir(parents=True, exist_ok=True)
    net = Net(root)
    try:
        yield net
    finally:
        net.close()
