"""A hostile bank: 64 MB answers, JSON bombs and 5,000-digit numbers, against every rail.

A small aiohttp server in the test plays the bank (open banking, and the file bank that SEPA and
NACHA post to). Each rail call must fail with the rail's typed error — ``BankUnavailable`` for an
answer too long to read (after its retries), ``BankProtocolError`` for JSON that would blow up —
quickly, and without the process's memory growing by anything like the answer's size (sampled
from /proc while the call runs).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from rails.errors import BankProtocolError, BankUnavailable, RailError
from rails.http import JSON_ANSWER_LIMIT, STATEMENT_ANSWER_LIMIT, parse_json
from rails.iso20022 import SepaCreditTransferRail
from rails.nacha import AchCreditRail
from rails.openbanking import OpenBankingConfig, OpenBankingRail, generate_key_pair
from rails.port import Account, AccountScheme, PaymentInstruction
from tests.rails.iso20022 import sepa_data
from tests.rails.nacha import ach_data

MB = 1 << 20
HUGE = 64 * MB
CHUNK = b" " * MB


def _gzip_bomb() -> list[bytes]:
    """64 MiB of spaces, gzip-compressed (about 64 KB on the wire), built a MiB at a time."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [z.compress(CHUNK) for _ in range(HUGE // MB)]
    return [p for p in [*parts, z.flush()] if p]


GZIP_BOMB = _gzip_bomb()
NESTED = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECT = b'{"Data": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}"
BIG_INT = b'{"Data": {"Status": ' + b"9" * 5_000 + b"}}"
INT_4000 = b'{"Data": {"Status": ' + b"9" * 4_000 + b"}}"
"""Under Python's own 4,300-digit limit: refused by our parser, not by the interpreter."""
OVERFLOW = b'{"Data": {"Status": 1e999999}}'


class HostileBank:
    """Answers every request the way `mode` says; echoes the OB interaction id."""

    def __init__(self) -> None:
        self.mode = "huge-declared"
        self.requests = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        status = 201 if request.method == "POST" else 200
        headers = {"x-fapi-interaction-id": request.headers.get("x-fapi-interaction-id", ""),
                   "Content-Type": "application/json"}
        if self.mode in ("huge-declared", "huge-chunked", "gzip-bomb"):
            resp = web.StreamResponse(status=status, headers=headers)
            if self.mode == "huge-declared":
                resp.content_length = HUGE
            elif self.mode == "gzip-bomb":
                resp.headers["Content-Encoding"] = "gzip"
                resp.content_length = sum(len(p) for p in GZIP_BOMB)
            else:
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            parts = GZIP_BOMB if self.mode == "gzip-bomb" else [CHUNK] * (HUGE // MB)
            try:
                for part in parts:
                    await resp.write(part)
                await resp.write_eof()
            except (ConnectionError, RuntimeError):
                pass  # the rail hung up, as it should
            return resp
        body = {"nested": NESTED, "deep": DEEP_OBJECT, "bigint": BIG_INT, "int4000": INT_4000,
                "overflow": OVERFLOW}[self.mode]
        return web.Response(body=body, status=status, headers=headers)


@pytest.fixture
async def bank() -> AsyncIterator[tuple[HostileBank, str]]:
    hostile = HostileBank()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hostile.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield hostile, f"http://127.0.0.1:{port}"
    await runner.cleanup()


# -- the rails, each with two calls: one JSON answer, one statement-sized answer -------------

OB_DEBTOR = Account("Manufacturer Ltd", AccountScheme.SORT_CODE, "40000100000003")
OB_CREDITOR = Account("Carrier Ltd", AccountScheme.SORT_CODE, "40000100000011")


@dataclass
class RailCase:
    name: str
    build: Callable[[str, Path], Any]
    submit: Callable[[Any], Awaitable[Any]]
    statement: Callable[[Any], Awaitable[Any]]


def _ob(url: str, tmp: Path) -> OpenBankingRail:
    key = generate_key_pair(tmp / "tpp.pem")
    return OpenBankingRail(OpenBankingConfig(
        base_url=url, client_id="tpp", access_token="t", key_file=key.path, account_id="acc",
        store_path=tmp / "ob.sqlite", max_attempts=2, backoff_s=0.01, request_timeout_s=20))


def _ob_pay(rail: OpenBankingRail) -> Awaitable[Any]:
    return rail.submit(PaymentInstruction("k-1", OB_DEBTOR, OB_CREDITOR, 12_345, "GBP",
                                          "ML channel close"))


RAILS = [
    RailCase("openbanking", _ob, _ob_pay, lambda r: r.incoming_credits()),
    RailCase("sepa",
             lambda url, tmp: SepaCreditTransferRail(
                 base_url=url, account=sepa_data.ACME, store_path=tmp / "sepa.sqlite",
                 attempts=2, backoff_s=0.01, timeout_s=20, clock=sepa_data.bank_now),
             lambda r: r.submit(sepa_data.pay("k-1")), lambda r: r.incoming_credits()),
    RailCase("nacha",
             lambda url, tmp: AchCreditRail(
                 base_url=url, account=ach_data.ACME, originator=ach_data.ACME_ORIGIN,
                 store_path=tmp / "ach.sqlite",
                 attempts=2, backoff_s=0.01, timeout_s=20, clock=ach_data.bank_now),
             lambda r: r.submit(ach_data.pay("k-1")), lambda r: r.incoming_credits()),
]


@contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Sample this process's RSS every 2 ms while the block runs; yields [peak growth in bytes]
    (filled in at exit)."""
    page = 4096

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base = rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = [0]
    try:
        yield out
    finally:
        done.set()
        sampler.join()
        out[0] = max(peak[0], rss()) - base


async def _fails(call: Awaitable[Any]) -> tuple[RailError, float, int]:
    started = time.monotonic()
    with peak_rss_growth() as growth, pytest.raises(RailError) as caught:
        await call
    return caught.value, time.monotonic() - started, growth[0]


@pytest.mark.parametrize("case", RAILS, ids=lambda c: c.name)
@pytest.mark.parametrize("mode", ["huge-declared", "huge-chunked", "gzip-bomb"])
@pytest.mark.parametrize("call", ["submit", "statement"])
async def test_a_64_mb_answer_is_refused_unread(bank: tuple[HostileBank, str], tmp_path: Path,
                                                case: RailCase, mode: str, call: str) -> None:
    hostile, url = bank
    hostile.mode = mode
    rail = case.build(url, tmp_path)
    try:
        error, took, growth = await _fails(getattr(case, call)(rail))
    finally:
        await rail.aclose()
    assert isinstance(error, BankUnavailable), error
    assert error.retryable
    assert hostile.requests == 2  # retried like any transient failure, then given up
    assert took < 10
    limit = JSON_ANSWER_LIMIT if call == "submit" else STATEMENT_ANSWER_LIMIT
    assert growth < limit + 8 * MB, f"RSS grew by {growth / MB:.1f} MiB"


@pytest.mark.parametrize("case", RAILS, ids=lambda c: c.name)
@pytest.mark.parametrize("mode", ["nested", "deep", "bigint", "int4000", "overflow"])
@pytest.mark.parametrize("call", ["submit", "statement"])
async def test_a_json_bomb_is_a_protocol_error(bank: tuple[HostileBank, str], tmp_path: Path,
                                               case: RailCase, mode: str, call: str) -> None:
    hostile, url = bank
    hostile.mode = mode
    rail = case.build(url, tmp_path)
    try:
        error, took, _ = await _fails(getattr(case, call)(rail))
    finally:
        await rail.aclose()
    assert type(error) is BankProtocolError, error
    assert "JSON refused" in str(error) or "JSON nested" in str(error), error  # by the parser
    assert hostile.requests == 1  # not retried: the bank answered, and the answer is wrong
    assert took < 5


@pytest.mark.parametrize(("data", "ok"), [
    (b'{"a": [1, 2.5, "x", null, true]}', True),
    (b"[" * 32 + b"]" * 32, True),
    (b"[" * 33 + b"]" * 33, False),
    (b"9" * 40, True),
    (b"9" * 41, False),
    (b"-1.5e300", True),
    (b"1e400", False),
    (b"NaN", False),
    (b'{"a": Infinity}', False),
    (b"\xff", False),
])
def test_parse_json_limits(data: bytes, ok: bool) -> None:
    if ok:
        parse_json(data, "test")
    else:
        with pytest.raises(BankProtocolError):
            parse_json(data, "test")
