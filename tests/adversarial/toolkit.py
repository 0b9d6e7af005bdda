"""The attacker's kit: its own key, its own stored state, messages it crafts and signs itself,
and the servers it runs (a black hole, a recording or flooding peer, proxies on the path).

The attacker is one of the companies: it reads its key from its own data directory
(``load_config`` + ``load_signer``) and its channel state from its own database, builds messages
with :mod:`protocol.messages` / :mod:`protocol.channel`, and POSTs raw msgpack to the victim's
or the arbiter's peer port. The attacker never touches the victim's storage or key (the tests
read a node's stored state only to check an outcome, :func:`stored_state`).

The servers run on one asyncio loop in a background thread (:class:`Loop`) so that the tests
can stay synchronous while the daemons they attack are separate processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

import protocol.messages  # noqa: F401  (registers every message type with the decoder)
from node.cluster import NodeHandle, free_port
from node.config import Config, load_config, load_signer
from node.storage.codec import decode_channel
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    BankAccount,
    CallbackAddress,
    ChannelAcceptance,
    ChannelProposal,
    ChannelRegistration,
    ChannelTerms,
    CooperativeClose,
    Error,
    Receipt,
    UnilateralClose,
)
from protocol.records import Message, decode_message
from protocol.tariff import TariffLine, TariffTier
from protocol.types import Amount, MinorUnits, Quantity

T = TypeVar("T")
MSGPACK = "application/msgpack"
MB = 1024 * 1024
FLOOD_BYTES = 64 * MB
"""What a hostile peer answers: 64 MB, 4,000 times the 16 KiB message limit."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------------------------
# Talking raw msgpack to a peer port


@dataclass(frozen=True)
class Answer:
    """What a peer port answered: the HTTP status, the body, and the message in it (if any)."""

    status: int
    body: bytes

    @property
    def message(self) -> Message | None:
        if not self.body:
            return None
        try:
            return decode_message(self.body)
        except ProtocolError:
            return None

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.message!r:.200})"


def request(method: str, url: str, body: Message | bytes | None = None, *,
            headers: dict[str, str] | None = None, timeout_s: float = 15.0) -> Answer:
    data = body.encode() if isinstance(body, Message) else body
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": MSGPACK, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return Answer(resp.status, resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read())


def info(url: str) -> dict[str, Any]:
    import json

    with urllib.request.urlopen(f"{url}/p2p/info", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def account_of(url: str) -> BankAccount:
    """The bank account a node's /p2p/info names (what an attacker can read of anyone)."""
    acct = info(url)["account"]
    return BankAccount(acct["scheme"], acct["identification"], acct["name"])


# ---------------------------------------------------------------------------------------------
# The attacker: a company's own key and stored state


def stored_state(config: Config, cid: str) -> ch.ChannelState:
    """A node's channel state as its SQLite database holds it (read-only)."""
    prefix = "sqlite+aiosqlite:///"
    assert config.db_url.startswith(prefix), config.db_url
    with contextlib.closing(sqlite3.connect(config.db_url[len(prefix):])) as db:
        row = db.execute("SELECT state FROM channel WHERE id = ?", (cid,)).fetchone()
    assert row is not None, f"no channel {cid} in {config.name}'s database"
    return decode_channel(bytes(row[0]))


@dataclass
class Attacker:
    handle: NodeHandle
    config: Config
    signer: Signer
    node_id: str

    @classmethod
    def of(cls, handle: NodeHandle) -> Attacker:
        """The company behind `handle`, using only what is in its own data directory."""
        config = load_config(handle.directory)
        signer = load_signer(config)
        return cls(handle, config, signer, signer.node_id.hex())

    def stored_state(self, cid: str) -> ch.ChannelState:
        """Our own channel state, read from our own database."""
        return stored_state(self.config, cid)

    def post(self, url: str, path: str, body: Message | bytes, *,
             headers: dict[str, str] | None = None, timeout_s: float = 15.0) -> Answer:
        return request("POST", f"{url}{path}", body, timeout_s=timeout_s,
                       headers={"X-Meterline-Node": self.node_id, **(headers or {})})

    # -- messages it crafts and signs -----------------------------------------------------

    def pay(self, state: ch.ChannelState, quantities: tuple[int, ...],
            direct: int = 0) -> tuple[ch.ChannelState, BalanceProof]:
        """Our next balance proof, built by the protocol machine on our own state."""
        t = ch.step(state, ch.ActionPay(self.signer, tuple(Quantity(q) for q in quantities),
                                        Amount(direct), "ATTACK"), now_ms=now_ms())
        (effect,) = t.effects
        assert isinstance(effect, ch.SendProof)
        return t.state, effect.proof

    def close_request(self, state: ch.ChannelState, *, opener: tuple[int, int],
                      peer: tuple[int, int]) -> CooperativeClose:
        """A close of any body we like, signed in our own field."""
        body = CooperativeClose(state.channel_id, opener[0], opener[1],  # type: ignore[arg-type]
                                peer[0], peer[1], EMPTY_SIGNATURE, EMPTY_SIGNATURE)
        return self.sign_close(body, state.us)

    def sign_close(self, close: CooperativeClose, us: int) -> CooperativeClose:
        return close.signed_by(self.signer, CooperativeClose.SIGNATURE_FIELDS[us])

    def unilateral(self, channel_id: bytes,
                   proof: BalanceProof | None = None) -> UnilateralClose:
        """Our claim that the channel close on `proof` (the latest we admit to holding)."""
        return UnilateralClose(channel_id, self.signer.node_id, proof,  # type: ignore[arg-type]
                               EMPTY_SIGNATURE).signed_by(self.signer)

    def registration(self, state: ch.ChannelState, callback_url: str,
                     issued_ms: int) -> tuple[ChannelRegistration, dict[str, str]]:
        """A re-registration naming our own callback, signed both ways an arbiter may read it:
        the signed `CallbackAddress` inside the message, and the headers of the form before it
        (specs/0005 §2 as it was: domain ``callback`` over ``<channel id hex>\\n<url>``)."""
        cid = state.channel_id
        callback = CallbackAddress(cid, self.signer.node_id, callback_url, issued_ms,
                                   EMPTY_SIGNATURE).signed_by(self.signer)
        reg = ChannelRegistration(
            ChannelProposal(state.terms, state.opener_signature),  # type: ignore[arg-type]
            ChannelAcceptance(cid, state.peer_signature),  # type: ignore[arg-type]
            callback)
        header_body = f"{cid.hex()}\n{callback_url}".encode()
        headers = {"X-Meterline-Callback": callback_url,
                   "X-Meterline-Callback-Signature": self.signer.sign(
                       "callback", header_body).hex()}
        return reg, headers

    def proposal(self, terms: ChannelTerms) -> ChannelProposal:
        return ChannelProposal(terms, EMPTY_SIGNATURE).signed_by(self.signer)


KM_LINE = TariffLine("km", 3, (TariffTier(None, Amount(12_300)),))
"""km=0.0123 EUR at scale 6, quantities at 10⁻³ km."""


def terms(*, opener: Signer, peer: bytes, arbiter: bytes, opener_deposit: int,
          peer_deposit: int, window_ms: int, opener_account: BankAccount,
          peer_account: BankAccount, escrow_account: BankAccount) -> ChannelTerms:
    """Channel terms in EUR at scale 6 with one km line; any values, unchecked."""
    return ChannelTerms(opener.node_id, peer, arbiter, "EUR", 6,  # type: ignore[arg-type]
                        MinorUnits(opener_deposit), MinorUnits(peer_deposit), (KM_LINE,),
                        window_ms, opener_account, peer_account, escrow_account,
                        secrets.token_bytes(16))


def signed_by(message: Any, party: bytes, field_name: str = "signature") -> bool:
    try:
        message.verify_signature(party, field_name)
    except ProtocolError:
        return False
    return True


def receipts_in(answers: list[Answer], cid: bytes, receiver: bytes) -> list[Receipt]:
    """The receipts among `answers` that `receiver` really signed for channel `cid`."""
    out = []
    for answer in answers:
        msg = answer.message
        if (isinstance(msg, Receipt) and msg.channel_id == cid and msg.receiver == receiver
                and signed_by(msg, receiver)):
            out.append(msg)
    return out


def closes_signed_by(messages: list[Message], cid: bytes, party: bytes,
                     index: int) -> list[CooperativeClose]:
    """The close bodies (without signatures) that `party` (party index `index`) signed."""
    field_name = CooperativeClose.SIGNATURE_FIELDS[index]
    out: list[CooperativeClose] = []
    for msg in messages:
        if (isinstance(msg, CooperativeClose) and msg.channel_id == cid
                and signed_by(msg, party, field_name)):
            bare = replace(msg, opener_signature=EMPTY_SIGNATURE, peer_signature=EMPTY_SIGNATURE)
            if bare not in out:
                out.append(bare)
    return out


# ---------------------------------------------------------------------------------------------
# Processes: memory and liveness


def rss_kb(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: ``echo 5 > /proc/PID/clear_refs``)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peer_port_serves(url: str) -> bool:
    try:
        info(url)
    except OSError:
        return False
    return True


def seconds_until_closed(port: int, partial: bytes, *, limit_s: float) -> float | None:
    """Send `partial` (half a request) and wait for the server to close; None if it held the
    socket longer than `limit_s`."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(partial)
        sock.settimeout(0.25)
        while time.monotonic() - start < limit_s:
            try:
                if not sock.recv(65536):
                    return time.monotonic() - start
            except TimeoutError:
                continue
            except OSError:  # reset counts as closed
                return time.monotonic() - start
    return None


# ---------------------------------------------------------------------------------------------
# The attacker's servers, on one loop in a background thread


class Loop:
    """An asyncio loop in a daemon thread for the servers a test runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="attacker-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return fn()
        return self.run(wrapped())

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class BlackHole:
    """Accepts every connection, reads whatever comes, never answers a byte."""

    def __init__(self, loop: Loop, port: int = 0) -> None:
        self.loop = loop
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self.server = loop.run(asyncio.start_server(self._hold, "127.0.0.1", port))
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass
        self._writers.discard(writer)
        writer.close()

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            for w in list(self._writers):
                w.close()
        self.loop.run(shut())


class _Carries:
    """A recorded request body, decoded on demand (None when it is no message)."""

    body: bytes

    @property
    def message(self) -> Message | None:
        try:
            return decode_message(self.body) if self.body else None
        except ProtocolError:
            return None


@dataclass
class Seen(_Carries):
    """One request an attacker's server received."""

    method: str
    path: str
    sender: str
    body: bytes
    at: float = field(default_factory=time.monotonic)


Responder = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


async def answer_nothing(request: web.Request, body: bytes) -> web.StreamResponse:
    return web.Response(status=204)


async def answer_flood(request: web.Request, body: bytes) -> web.StreamResponse:
    """64 MB of a 'message', written as fast as the reader takes it."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": MSGPACK})
    resp.content_length = FLOOD_BYTES
    await resp.prepare(request)
    chunk = b"\x00" * MB
    with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
        for _ in range(FLOOD_BYTES // MB):
            await resp.write(chunk)
    return resp


class PeerServer:
    """An aiohttp server on a chosen port playing the attacker's own node: it records every
    request, answers with `responder`, and answers a WebSocket stream with `ws_frame` bytes."""

    def __init__(self, loop: Loop, port: int, responder: Responder = answer_nothing,
                 ws_frame: bytes | None = None) -> None:
        self.loop = loop
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.responder = responder
        self.ws_frame = ws_frame
        self.seen: list[Seen] = []
        self.ws_sent: list[int] = []
        app = web.Application(client_max_size=FLOOD_BYTES * 2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)

        async def start() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", port).start()

        loop.run(start())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/stream") and request.headers.get("Upgrade", "").lower() \
                == "websocket":
            self.seen.append(Seen("WS", request.path, request.headers.get(
                "X-Meterline-Node", ""), b""))
            ws = web.WebSocketResponse(max_msg_size=0)
            await ws.prepare(request)
            if self.ws_frame is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_bytes(self.ws_frame)
                    self.ws_sent.append(len(self.ws_frame))
            with contextlib.suppress(Exception):
                async for _ in ws:
                    pass
            return ws
        body = await request.read()
        self.seen.append(Seen(request.method, request.path,
                              request.headers.get("X-Meterline-Node", ""), body))
        return await self.responder(request, body)

    def messages(self, path: str | None = None) -> list[Message]:
        out = []
        for s in list(self.seen):
            if path is None or s.path == path:
                msg = s.message
                if msg is not None:
                    out.append(msg)
        return out

    def close(self) -> None:
        self.loop.run(self.runner.cleanup())


class TcpProxy:
    """A byte pipe to `target_port` (HTTP and WebSocket alike) that can be cut: once cut, every
    connection, open or new, is held without an answer (a network path that went dark)."""

    def __init__(self, loop: Loop, target_port: int) -> None:
        self.loop = loop
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cut = False
        self._open: set[asyncio.StreamWriter] = set()
        self.server = loop.run(asyncio.start_server(self._serve, "127.0.0.1", self.port))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            await self._hold(reader, writer)
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._open.update((writer, up_w))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._open.difference_update((writer, up_w))

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass
        writer.close()

    def go_dark(self) -> None:
        def cut() -> None:
            self.cut = True
            for w in list(self._open):
                w.close()
            self._open.clear()
        self.loop.call(cut)

    def close(self) -> None:
        self.loop.call(self.server.close)


HTML_502 = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
            b"Gateway</h1></center><hr><center>nginx</center></body></html>")
FAILURES = ("html-502", "empty-503", "garbage-200", "unsigned-error")
"""What a proxy on the path answers instead of the arbiter, in this order (issue 8, attack 5)."""


def failure_response(kind: str) -> web.Response:
    if kind == "html-502":
        return web.Response(status=502, body=HTML_502, content_type="text/html")
    if kind == "empty-503":
        return web.Response(status=503)
    if kind == "garbage-200":
        return web.Response(status=200, body=b"\xc1\xffnot msgpack at all", content_type=MSGPACK)
    if kind == "unsigned-error":
        # Looks like a final refusal from the arbiter, but anyone can write it.
        return web.Response(status=400, content_type=MSGPACK, body=Error.make(
            int(ErrorCode.CLOSE_MISMATCH), "payouts were already decided").encode())
    if kind == "blocked":
        return web.Response(status=503, body=b"<html>Service Unavailable</html>",
                            content_type="text/html")
    raise AssertionError(kind)


@dataclass
class Passed(_Carries):
    """One request through the proxy and what became of it."""

    method: str
    path: str
    sender: str
    outcome: str
    """``forwarded:<status>`` or the failure kind the proxy answered instead."""
    body: bytes
    at: float = field(default_factory=time.monotonic)


class HttpProxy:
    """An HTTP proxy in front of the arbiter's peer port. Per path it can answer the next
    requests with transient failures (:data:`FAILURES`) or block the path, then forwards."""

    def __init__(self, loop: Loop, target_port: int) -> None:
        self.loop = loop
        self.target = f"http://127.0.0.1:{target_port}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.failures: dict[tuple[str, str], deque[str]] = {}
        """(path, sender node id) → what to answer its next requests with."""
        self.blocked: set[str] = set()
        self.log: list[Passed] = []
        self._session: aiohttp.ClientSession | None = None
        app = web.Application(client_max_size=1 * MB)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)

        async def start() -> None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        loop.run(start())

    def fail_next(self, path: str, senders: list[str], kinds: tuple[str, ...] = FAILURES) -> None:
        """Answer each sender's next requests to `path` with `kinds`, one each, in order."""
        def add() -> None:
            for sender in senders:
                self.failures.setdefault((path, sender), deque()).extend(kinds)
        self.loop.call(add)

    def block(self, path: str) -> None:
        self.loop.call(lambda: self.blocked.add(path))

    def unblock(self, path: str) -> None:
        self.loop.call(lambda: self.blocked.discard(path))

    def reset(self) -> None:
        def clear() -> None:
            self.failures.clear()
            self.blocked.clear()
        self.loop.call(clear)

    def passed(self, path: str, *, sender: str | None = None,
               since: float = 0.0) -> list[Passed]:
        return [p for p in list(self.log) if p.path == path and p.at >= since
                and (sender is None or p.sender == sender)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        sender = request.headers.get("X-Meterline-Node", "")
        queue = self.failures.get((request.path, sender))
        kind = "blocked" if request.path in self.blocked else (
            queue.popleft() if queue else None)
        if kind is not None:
            self.log.append(Passed(request.method, request.path, sender, kind, body))
            return failure_response(kind)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        try:
            async with self._session.request(request.method, self.target + request.path_qs,
                                             data=body, headers=headers) as resp:
                data = await resp.read()
                self.log.append(Passed(request.method, request.path, sender,
                                       f"forwarded:{resp.status}", body))
                return web.Response(status=resp.status, body=data, headers={
                    k: v for k, v in resp.headers.items()
                    if k.lower() in ("content-type",)})
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.append(Passed(request.method, request.path, sender, f"unreachable:{exc}",
                                   body))
            return web.Response(status=504)

    def close(self) -> None:
        async def shut() -> None:
            await self.runner.cleanup()
            if self._session is not None:
                await self._session.close()
        self.loop.run(shut())
