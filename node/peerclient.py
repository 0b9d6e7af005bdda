"""Talking to other nodes and arbiters: signed msgpack messages over POST, proofs over WebSocket.

Messages carry their own signatures, so a request needs no other authentication; the answer is
either a message or an :class:`~protocol.messages.Error` with the spec's code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog

from node.errors import PeerUnavailable
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import Error
from protocol.records import Message, decode_message

log = structlog.get_logger()
MSGPACK = "application/msgpack"


class PeerClient:
    def __init__(self, *, node_id: str, timeout_s: float = 10.0) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"X-Meterline-Node": node_id}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def info(self, url: str) -> dict[str, Any]:
        try:
            async with self.session.get(f"{url.rstrip('/')}/p2p/info") as resp:
                if resp.status != 200:
                    raise PeerUnavailable(f"{url} answered {resp.status} to /p2p/info")
                data: dict[str, Any] = await resp.json()
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerUnavailable(f"cannot reach {url}: {exc}") from None

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
