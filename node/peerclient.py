"""Talking to other nodes and arbiters: signed msgpack messages over POST, proofs over WebSocket.

Messages carry their own signatures, so a request needs no other authentication. An answer is a
message, nothing (202/204), or a refusal: a `Refusal` signed by the refusing node over the exact
request bytes (raised as :class:`Refused`), or, from a GET or an older peer, an unsigned
`Error` (raised as `RemoteProtocolError`). Anything else — no connection, a timeout, a 5xx, an
answer that is not a message, an answer over `max_body_bytes` — is `PeerUnavailable`:
transient, worth retrying. Bodies and WebSocket frames are read bounded: never more than
`max_body_bytes` (+1) of an answer is held in memory (specs/0005 §2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

import aiohttp
import structlog

from node.errors import PeerNotAuthentic, PeerUnavailable
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import Error, NodeInfo, Refusal
from protocol.records import Message, decode_message

log = structlog.get_logger()
MSGPACK = "application/msgpack"
DEFAULT_MAX_BODY = 64 * 1024
"""The default `[limits] max_body_bytes`: the largest answer body or frame read."""
_CHUNK = 16 * 1024


class Refused(RemoteProtocolError):
    """The peer answered with a `Refusal`. Not yet checked: a delivery ends only when
    `refusal.verify_for(recipient, request_bytes)` accepts it (node.outbox.classify)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(_code(refusal.code), refusal.message)
        self.refusal = refusal


class PeerClient:
    """One client session for every peer: POST, GET and the WebSocket streams.

    `ssl_context` verifies https/wss peers (built once from ``[tls] ca_file`` or the system CAs,
    :func:`node.config.client_ssl_context`); without it aiohttp's default verification applies.
    Verification is never turned off. Every answer is read bounded (`max_body_bytes`).
    """

    def __init__(self, *, node_id: str, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"X-Meterline-Node": node_id}
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self.max_body_bytes = max_body_bytes

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No pool-wide connection cap (aiohttp's default is 100): the outbox bounds what is
            # in flight (lanes, dedup), and a shared cap would let connections held open by a
            # peer that never answers queue everybody else's deliveries behind them.
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers=self._headers,
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def identity(self, url: str, challenge: bytes) -> NodeInfo:
        """`GET {url}/p2p/identity?challenge=HEX`: the NodeInfo it answers, not yet checked
        (:func:`node.peers.check_identity` does). Unreachable or 5xx → PeerUnavailable; any other
        answer that is not a NodeInfo (an Error, HTML, over the limit) → PeerNotAuthentic."""
        target = f"{url.rstrip('/')}/p2p/identity"
        try:
            async with self.session.get(target, params={"challenge": challenge.hex()}) as resp:
                if resp.status >= 500:
                    raise PeerUnavailable(f"{url} answered HTTP {resp.status} to /p2p/identity")
                status = resp.status
                try:
                    body = await read_bounded(resp, self.max_body_bytes, url)
                except PeerUnavailable:
                    raise PeerNotAuthentic(f"{url} answered more than {self.max_body_bytes} "
                                           "bytes to /p2p/identity") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnavailable(f"cannot reach {url}: {exc}") from None
        answer = _decode(body)
        if answer is None:
            raise PeerNotAuthentic(f"{url} did not answer with a signed identity (HTTP {status}, "
                                   f"{len(body)} bytes that are no message): is it a meterline "
                                   "node?")
        if isinstance(answer, Error | Refusal):
            raise PeerNotAuthentic(f"{url} refused to prove its identity: {answer.message}")
        if not isinstance(answer, NodeInfo):
            raise PeerNotAuthentic(f"{url} answered {type(answer).__name__}, not NodeInfo")
        return answer

    async def fetch(self, url: str) -> Message | None:
        """GET one message (None for 204)."""
        return await self._exchange("GET", url, None)

    async def send(self, url: str, path: str, message: Message | bytes,
                   headers: dict[str, str] | None = None) -> Message | None:
        """POST one message (or its exact encoded bytes); return the answer message (None for
        an empty 202/204). Raises `Refused` for a `Refusal`, `RemoteProtocolError` for an
        unsigned `Error`, `PeerUnavailable` for anything transient."""
        data = message if isinstance(message, bytes) else message.encode()
        return await self._exchange("POST", f"{url.rstrip('/')}{path}", data, headers)

    async def _exchange(self, method: str, url: str, data: bytes | None,
                        headers: dict[str, str] | None = None) -> Message | None:
        """One request; its answer classified (see the module docstring)."""
        try:
            async with self.session.request(
                method, url, data=data, headers={"Content-Type": MSGPACK, **(headers or {})},
            ) as resp:
                if resp.status in (202, 204):
                    return None
                body = await read_bounded(resp, self.max_body_bytes, url)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnavailable(f"cannot reach {url}: {exc}") from None
        answer = _decode(body)
        if status >= 500 or answer is None:
            what = type(answer).__name__ if answer is not None else (
                "an empty body" if not body else "a body that is not a message")
            detail = f" ({answer.message})" if isinstance(answer, Error | Refusal) else ""
            raise PeerUnavailable(f"{url} answered HTTP {status} with {what}{detail}")
        if isinstance(answer, Refusal):
            raise Refused(answer)
        if isinstance(answer, Error):
            raise RemoteProtocolError(_code(answer.code), answer.message)
        if status != 200:
            raise PeerUnavailable(f"{url} answered HTTP {status} with a "
                                  f"{type(answer).__name__}")
        return answer


async def read_bounded(resp: aiohttp.ClientResponse, limit: int, url: str = "") -> bytes:
    """The body of `resp`, read in chunks; `PeerUnavailable` (and the connection closed) as
    soon as it is over `limit` bytes — a larger answer is never buffered."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        resp.close()
        raise PeerUnavailable(f"{url} announced a {declared}-byte answer (limit {limit})")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            resp.close()
            raise PeerUnavailable(f"{url} sent an answer over {limit} bytes")
    return bytes(body)


def _decode(body: bytes) -> Message | None:
    if not body:
        return None
    try:
        return decode_message(body)
    except ProtocolError:  # decoding maps every failure on hostile bytes to DecodeError
        return None


def _code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL


class OutboundStream:
    """One long-lived WebSocket per channel carrying our proofs; receipts come back on it.

    `resend` yields the proofs not yet acknowledged (from storage) each time the socket
    (re)connects, so a dropped connection or a restarted peer loses nothing. A frame over
    `max_msg_size` bytes is refused (the socket is closed with 1009) and never buffered whole.
    """

    def __init__(
        self,
        *,
        url: str,
        session: aiohttp.ClientSession,
        on_message: Callable[[Message], Awaitable[None]],
        resend: Callable[[int], Awaitable[list[tuple[int, bytes]]]],
        max_msg_size: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._url = url
        self._max_msg_size = max_msg_size
        self._session = session
        self._on_message = on_message
        self._resend = resend
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._missed = False
        self._last_sent = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"stream {self._url}")

    async def stop(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def send(self, nonce: int, data: bytes) -> None:
        """Send one committed proof; while the stream is down or catching up it is noted and
        picked up from storage instead (never lost, never sent twice)."""
        ws = self._ws
        if ws is None or ws.closed:
            self._missed = True
            return
        if nonce <= self._last_sent:
            return
        try:
            await ws.send_bytes(data)
            self._last_sent = nonce
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return  # the reader notices, reconnects and resends from storage

    async def _run(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                async with self._session.ws_connect(self._url, heartbeat=20,
                                                  max_msg_size=self._max_msg_size) as ws:
                    # Catch up before anyone else may send: what the peer lacks, in nonce order,
                    # until nothing newer is stored (a payment committed meanwhile is included).
                    after = 0
                    while True:
                        self._missed = False
                        batch = await self._resend(after)
                        for nonce, data in batch:
                            await ws.send_bytes(data)
                            after = nonce
                        if not batch and not self._missed:
                            break
                    # no await from the last look at storage to here: nothing slips between
                    self._last_sent = after
                    self._ws = ws
                    delay = 0.05
                    async for frame in ws:
                        if frame.type is aiohttp.WSMsgType.BINARY:
                            message = decode_message(frame.data)
                            if isinstance(message, Error):
                                # The peer refused a proof (not open yet, a gap after a race):
                                # reconnect, read its receipt, resend from there.
                                log.info("stream.refused", url=self._url, code=message.code,
                                         error=message.message)
                                break
                            await self._on_message(message)
                        elif frame.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
                    if ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER:
                        delay = 1.0  # the peer's storage is away (ADR 0250): not a hot loop
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it was, the stream must come back
                log.info("stream.reconnect", url=self._url, error=str(exc)[:300], delay_s=delay)
            finally:
                self._ws = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
