"""Talking to other nodes and arbiters: signed msgpack messages over POST, proofs over WebSocket.

Messages carry their own signatures, so a request needs no other authentication; the answer is
either a message or an :class:`~protocol.messages.Error` with the spec's code.
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
from protocol.messages import Error, NodeInfo
from protocol.records import Message, decode_message

log = structlog.get_logger()
MSGPACK = "application/msgpack"
MAX_IDENTITY_BYTES = 64 * 1024
"""The most of an identity answer read (a NodeInfo is well under 1 KiB)."""


class PeerClient:
    """One client session for every peer: POST, GET and the WebSocket streams.

    `ssl_context` verifies https/wss peers (built once from ``[tls] ca_file`` or the system CAs,
    :func:`node.config.client_ssl_context`); without it aiohttp's default verification applies.
    Verification is never turned off.
    """

    def __init__(self, *, node_id: str, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"X-Meterline-Node": node_id}
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers=self._headers,
                connector=aiohttp.TCPConnector(ssl=self._ssl))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def identity(self, url: str, challenge: bytes) -> NodeInfo:
        """`GET {url}/p2p/identity?challenge=HEX`: the NodeInfo it answers, not yet checked
        (:func:`node.peers.check_identity` does). Unreachable or 5xx → PeerUnavailable; any other
        answer that is not a NodeInfo (an Error, HTML, over 64 KiB) → PeerNotAuthentic."""
        target = f"{url.rstrip('/')}/p2p/identity"
        try:
            async with self.session.get(target, params={"challenge": challenge.hex()}) as resp:
                if resp.status >= 500:
                    raise PeerUnavailable(f"{url} answered HTTP {resp.status} to /p2p/identity")
                body = await _read_at_most(resp, MAX_IDENTITY_BYTES)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnavailable(f"cannot reach {url}: {exc}") from None
        if body is None:
            raise PeerNotAuthentic(f"{url} answered more than {MAX_IDENTITY_BYTES} bytes to "
                                   "/p2p/identity")
        try:
            answer = decode_message(body)
        except ProtocolError:
            raise PeerNotAuthentic(f"{url} did not answer with a signed identity (HTTP {status}, "
                                   f"{len(body)} bytes that are no message): is it a meterline "
                                   "node?") from None
        if isinstance(answer, Error):
            raise PeerNotAuthentic(f"{url} refused to prove its identity: {answer.message}")
        if not isinstance(answer, NodeInfo):
            raise PeerNotAuthentic(f"{url} answered {type(answer).__name__}, not NodeInfo")
        return answer

    async def fetch(self, url: str) -> Message | None:
        """GET one message (None for 204)."""
        return await self._exchange("GET", url, None)

    async def send(self, url: str, path: str, message: Message,
                   headers: dict[str, str] | None = None) -> Message | None:
        """POST one message; return the answer message (None for an empty 202/204)."""
        return await self._exchange("POST", f"{url.rstrip('/')}{path}", message, headers)

    async def _exchange(self, method: str, url: str, message: Message | None,
                        headers: dict[str, str] | None = None) -> Message | None:
        """One request; the answer is a message, nothing, or an Error raised as typed error."""
        try:
            async with self.session.request(
                method,
                url,
                data=None if message is None else message.encode(),
                headers={"Content-Type": MSGPACK, **(headers or {})},
            ) as resp:
                body = await resp.read()
                if resp.status in (202, 204) or not body:
                    return None
                answer = decode_message(body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnavailable(f"cannot reach {url}: {exc}") from None
        if isinstance(answer, Error):
            raise RemoteProtocolError(_code(answer.code), answer.message)
        return answer


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None as soon as it runs over `limit` (the rest is never buffered)."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL


class OutboundStream:
    """One long-lived WebSocket per channel carrying our proofs; receipts come back on it.

    `resend` yields the proofs not yet acknowledged (from storage) each time the socket
    (re)connects, so a dropped connection or a restarted peer loses nothing.
    """

    def __init__(
        self,
        *,
        url: str,
        session: aiohttp.ClientSession,
        on_message: Callable[[Message], Awaitable[None]],
        resend: Callable[[int], Awaitable[list[tuple[int, bytes]]]],
    ) -> None:
        self._url = url
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
                async with self._session.ws_connect(self._url, heartbeat=20, max_msg_size=0) as ws:
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
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it was, the stream must come back
                log.info("stream.reconnect", url=self._url, error=str(exc)[:300], delay_s=delay)
            finally:
                self._ws = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
