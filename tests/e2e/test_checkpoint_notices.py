"""Both nodes learn every checkpoint payout's outcome from the arbiter (ADR 0320), even when no
push reaches them: real daemons on loopback and the sandbox bank; each company's callback
address (`public_url`) is a small TCP proxy in this test that forwards everything to the node
except the arbiter's `POST /p2p/transfer-notice`, which it cuts. The nodes then learn the
booking from the arbiter's signed status on their watch, show it in `channel show` and
`statement`, and emit `checkpoint.paid` once each.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cluster import NodeHandle, free_port, meterline_argv
from tests.e2e.cluster import CARRIER, Companies, companies, wait_for
from tests.e2e.test_checkpoint_settlement import pay_km, wait_balance
from tests.e2e.test_events_out import all_events

DROPPED = b"POST /p2p/transfer-notice"


class DroppingProxy:
    """127.0.0.1:port → `target`, byte for byte, but a connection on which the client sends
    a transfer notice is cut before the request reaches the node (counted in `dropped`)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.dropped = 0
        self.forwarded = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def upstream() -> None:
            tail = b""
            while data := await reader.read(65536):
                if DROPPED in tail + data:  # a request line split across reads too
                    self.dropped += 1
                    return
                self.forwarded += (tail + data).count(b"POST /p2p/")
                tail = data[-len(DROPPED):]
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for w in (writer, up_writer):
                w.close()

    def stop(self) -> None:
        async def shut() -> None:
            self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def behind_proxy(handle: NodeHandle, proxy: DroppingProxy) -> None:
    """Restart `handle` with its public_url (the callback it registers) on the proxy."""
    handle.stop()
    config = handle.directory / "config.toml"
    text = config.read_text()
    line = f'public_url = "{proxy.url}"'
    if re.search(r"^public_url\s*=.*$", text, re.M):
        text = re.sub(r"^public_url\s*=.*$", line, text, count=1, flags=re.M)
    else:
        text = text.replace("[node]\n", f"[node]\n{line}\n", 1)
    config.write_text(text)
    handle.start()


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Companies, dict[str, DroppingProxy]]]:
    with companies(tmp_path, settings={"policy": {"watch_interval_ms": 500}}) as c:
        proxies = {h.name: DroppingProxy(h.port) for h in (c.manufacturer, c.carrier)}
        try:
            for handle in (c.manufacturer, c.carrier):
                behind_proxy(handle, proxies[handle.name])
            yield c, proxies
        finally:
            for proxy in proxies.values():
                proxy.stop()


def cli(node: NodeHandle, *args: str) -> str:
    done = subprocess.run([*meterline_argv(), *args, "--data-dir", str(node.directory)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def settlements(node: NodeHandle, cid: str) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = node.api("GET", f"/api/channels/{cid}")["settlements"]
    return shown


def test_checkpoint_notices_lost_in_push_are_learnt_from_the_watch(
    proxied: tuple[Companies, dict[str, DroppingProxy]],
) -> None:
    c, proxies = proxied
    cid = c.open_channel()
    funded = c.balances()
    assert all(p.forwarded for p in proxies.values()), "the arbiter calls back via the proxy"
    for n in (1, 2):
        pay_km(c, cid, 100)  # 1.23 EUR owed to the carrier
        c.manufacturer.api("POST", f"/api/channels/{cid}/settle", {"wait": True})
        wait_balance(c, CARRIER, funded[CARRIER] + 123 * n, f"checkpoint {n}'s 1.23 EUR")
    for node in (c.manufacturer, c.carrier):
        wait_for(lambda node=node: [s["status"] for s in settlements(node, cid)] == [
            "booked", "booked"], f"{node.name} to learn both bookings from the watch", 60)
        shown = settlements(node, cid)
        assert [(s["checkpoint"], s["party"], s["amount"]["amount"], s["attempt"],
                 s["reason"]) for s in shown] == [(1, "peer", "1.23", 0, None),
                                                  (2, "peer", "1.23", 0, None)]
        assert all(s["changed"] for s in shown)
    # every push of a notice was cut: the nodes learnt it only from the arbiter's status
    assert all(p.dropped >= 2 for p in proxies.values()), {
        k: p.dropped for k, p in proxies.items()}
    arbiter_rows = [r for r in c.arbiter.api("GET", "/api/outbox")["outbox"]
                    if r["purpose"].startswith("transfer:")]
    assert arbiter_rows, "the arbiter still tries to push them (at least once, for ever)"
    # once each per node, whatever the watch read again and again
    for node in (c.manufacturer, c.carrier):
        paid = [e for e in all_events(node, types="checkpoint.paid") if e["channel_id"] == cid]
        assert [(e["data"]["checkpoint"], e["data"]["ours"]) for e in paid] == [
            (1, node is c.carrier), (2, node is c.carrier)], paid
    # shown: channel show and the statement, on both nodes
    for node in (c.manufacturer, c.carrier):
        show = cli(node, "channel", "show", cid[:12])
        assert re.search(r"#1\s+peer\s+.*1\.23.*booked", show), show
        assert re.search(r"#2\s+peer\s+.*1\.23.*booked", show), show
        statement = cli(node, "statement", cid[:12], "--format", "csv")
        assert statement.count(",booked") >= 2, statement
