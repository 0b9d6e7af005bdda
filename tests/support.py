"""Helpers shared by the integration suites: free ports and real child processes on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from node.cluster import free_port as free_port  # one allocator for the product and the tests

PG_URL = os.environ.get("METERLINE_TEST_PG_URL")
"""The PostgreSQL server the suites may use (SQLAlchemy URL); None: their PostgreSQL variants
skip, saying why."""

DAEMONS = ("arbiter", "manufacturer", "carrier")


def pg_execute(sql: str) -> None:
    """Run one statement on the server's maintenance database (CREATE/DROP DATABASE)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        assert PG_URL is not None
        conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def pg_databases(tag: str, roles: Sequence[str] = DAEMONS) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database per daemon role ({role: URL}), dropped afterwards."""
    assert PG_URL is not None
    base = PG_URL.rsplit("/", 1)[0]
    names = {role: f"meterline_{tag}_{role}_{os.urandom(4).hex()}" for role in roles}
    for name in names.values():
        pg_execute(f'CREATE DATABASE "{name}"')
    try:
        yield {role: f"{base}/{name}" for role, name in names.items()}
    finally:
        for name in names.values():
            pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_for_port(
    port: int,
    *,
    timeout: float = 20.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before listening:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def venv_bin(name: str) -> str:
    """A console script installed next to the running interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv`, wait until it listens on `port`, yield it, then stop it (TERM, then KILL)."""
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=full_env)
    try:
        wait_for_port(port, timeout=timeout, proc=proc, log=log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
