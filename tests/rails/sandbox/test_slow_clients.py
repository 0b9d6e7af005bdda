"""The sandbox bank's port keeps the same deadlines as a node's (rails.httpserver).

In-process: the bank's application served by :func:`rails.httpserver.serve` (what
``meterline bank start`` calls) with short timeouts, raw sockets as slow clients. One test
against the real ``meterline bank start`` process checks the default header timeout (10 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rails.httpserver import ServerTimeouts, serve
from rails.sandbox import BankConfig, create_app
from tests.support import free_port

from .conftest import Bank

TIMEOUTS = ServerTimeouts(header_ms=600, body_ms=900, idle_ms=1_200)
EARLY, MARGIN = 0.2, 1.5


@pytest.fixture
async def bank_port(tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(create_app(BankConfig(data_dir=tmp_path / "bank")),
                                     "127.0.0.1", port, timeouts=TIMEOUTS, stop=stop))
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        break
    yield port
    stop.set()
    await task


async def _talk(port: int, steps: list[tuple[float, bytes]], limit_s: float
                ) -> tuple[bytes, float]:
    """Send each (delay, bytes) step, read until the server closes; what it sent and when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def send() -> None:
        for delay, data in steps:
            await asyncio.sleep(delay)
            if writer.is_closing():
                return
            writer.write(data)

    sender = asyncio.create_task(send())
    received = b""
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        pytest.fail(f"still open after {limit_s} s, received {received[:80]!r}")
    except ConnectionResetError:
        pass
    finally:
        sender.cancel()
        writer.close()
    return received, time.monotonic() - started


GET = b"GET /_sandbox/bank-key HTTP/1.1\r\nHost: bank\r\n\r\n"


async def test_half_sent_headers_are_answered_408_and_closed(bank_port: int) -> None:
    answer, took = await _talk(bank_port, [(0, b"GET /_sandbox/bank-key HTTP/1.1\r\nHo")],
                               TIMEOUTS.header_ms / 1000 + MARGIN)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert took >= TIMEOUTS.header_ms / 1000 - EARLY


async def test_a_trickled_body_is_answered_408_and_closed(bank_port: int) -> None:
    head = (b"POST /_sandbox/accounts HTTP/1.1\r\nHost: bank\r\nContent-Type: application/json"
            b"\r\nContent-Length: 500\r\n\r\n{")
    answer, took = await _talk(bank_port, [(0, head)] + [(0.1, b" ")] * 30,
                               TIMEOUTS.body_ms / 1000 + MARGIN)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert took >= TIMEOUTS.body_ms / 1000 - EARLY


async def test_keep_alive_requests_are_served_and_idle_ones_closed(bank_port: int) -> None:
    """Two requests on one connection; the second begins just before the idle deadline and
    completes after it (it runs against the header deadline from its first byte, so it is not
    cut); then the idle connection is closed."""
    idle = TIMEOUTS.idle_ms / 1000
    answer, took = await _talk(bank_port, [
        (0, GET), (idle - 0.2, GET[:20]), (0.4, GET[20:])], 2 * idle + 1 + MARGIN)
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert took >= 2 * idle + 0.2 - EARLY


async def test_the_bank_process_closes_half_sent_headers_after_10_s(bank: Bank) -> None:
    """`meterline bank start` serves through rails.httpserver with the default timeouts."""
    answer, took = await _talk(bank.port, [(0, b"GET /_sandbox/bank-key HTTP/1.1\r\n")],
                               ServerTimeouts().header_ms / 1000 + MARGIN + 1)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert took >= ServerTimeouts().header_ms / 1000 - EARLY
