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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def meterline_argv() -> list[str]:
    return [sys.executable, "-m", "node.cli"]


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
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        port = free_port()
        directory = self.root / "bank"
        self.bank = Daemon("bank", directory, port, argv=[
            *meterline_argv(), "bank", "start", "--data-dir", str(directory),
            "--listen", f"127.0.0.1:{port}", "--json-logs"])
        self.bank.start()
        return self.bank

    def add_node(self, name: str, *, role: str = "node", bank: dict[str, Any] | None,
                 allow: list[str] | None = None, db: str | None = None) -> NodeHandle:
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
        out = subprocess.run(argv, capture_output=True, check=False)
        if out.returncode != 0:
            raise ClusterError(f"init {name}: {out.stderr.decode()}")
        handle = NodeHandle(
            name, directory, port, admin_port=admin_port,
            argv=[*meterline_argv(), "node", "start", "--data-dir", str(directory),
                  "--json-logs"],
            token=(directory / "admin.token").read_text().strip(),
            node_id=json.loads(out.stdout)["node_id"])
        self.nodes[name] = handle
        return handle

    def stop(self) -> None:
        for handle in self.nodes.values():
            handle.stop()
        if self.bank is not None:
            self.bank.stop()
