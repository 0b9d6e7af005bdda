"""Listening ports a slow client cannot hold: deadlines for request headers, bodies and idling.

aiohttp closes a kept-alive connection that stays idle for ``keepalive_timeout``, but it sets no
deadline for a request's headers or body: a socket that sends half its headers, or a body
trickled below its ``Content-Length``, is held for as long as the idle timeout (75 s by default)
or forever. :class:`BoundedAppRunner` serves an application with three deadlines
(:class:`ServerTimeouts`):

- **headers**: a request's headers are complete within `header_ms` of the connection opening
  (for its first request) or of the request's first byte (for a later one);
- **body**: a request's body is complete within `body_ms` of the end of its headers;
- **idle**: a kept-alive connection on which no new request has begun is closed `idle_ms` after
  its last response (aiohttp's own keep-alive timer).

A request that misses its deadline is answered ``408 Request Timeout`` (when nothing of a
response has been written yet) and its connection is closed. A connection upgraded to a
WebSocket has none of these deadlines (the stream's heartbeat watches it). Header size is
bounded by aiohttp (8190 bytes a line, 128 headers) and body size by the application's
``client_max_size``.

The handler hooks aiohttp's ``RequestHandler`` (``data_received``, its message queue and its
keep-alive handle), which aiohttp does not document as an extension point; the behaviour is
pinned by ``tests/node/test_slow_clients.py`` and ``tests/rails/sandbox/test_slow_clients.py``
(checked against aiohttp 3.14).

It lives in ``rails/`` so that the sandbox bank (``rails.sandbox``) and the node (``node.app``)
share it: ``node`` may import ``rails``, never the other way round.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                   b"Content-Type: text/plain\r\nContent-Length: 16\r\n\r\nrequest too slow")


@dataclass(frozen=True, slots=True)
class ServerTimeouts:
    """How long a client may take (milliseconds); see the module's docstring."""

    header_ms: int = 10_000
    body_ms: int = 30_000
    idle_ms: int = 20_000
    """Longer than aiohttp's client keep-alive (15 s): our own clients hang up first, so they
    never reuse a connection at the moment the server closes it."""


class BoundedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a header deadline and a body deadline.

    The header deadline runs from the connection's start, and again from the first byte of each
    later request, until the parser has produced the request; the body deadline runs from there
    until the request's payload has been fed to its end.
    """

    __slots__ = ("_awaiting_headers", "_body", "_body_timer", "_header_bytes", "_header_timer",
                 "_timeouts")

    def __init__(self, manager: web.Server, *, timeouts: ServerTimeouts, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._timeouts = timeouts
        self._awaiting_headers = False
        self._header_bytes = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not data or self._upgraded or self._payload_parser is not None:
            super().data_received(data)
            return
        if self._body is None or self._body.is_eof():
            # Bytes of a new request: its headers now run against the header deadline, not
            # against aiohttp's idle timer (which would cut a request begun just before it).
            if not self._awaiting_headers:
                self._await_headers()
            self._header_bytes = True
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
                self._keepalive_handle = None
        before = self._request_count
        super().data_received(data)
        if self._request_count != before and self._messages:
            self._headers_complete(self._messages[-1][1])

    def _await_headers(self) -> None:
        self._awaiting_headers = True
        self._header_bytes = False
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self._loop.call_later(self._timeouts.header_ms / 1000,
                                                   self._headers_late)

    def _headers_complete(self, payload: StreamReader) -> None:
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._body = payload
        if payload.is_eof():
            return
        if self._body_timer is not None:
            self._body_timer.cancel()
        timer = self._loop.call_later(self._timeouts.body_ms / 1000, self._body_late, payload)
        self._body_timer = timer
        payload.on_eof(timer.cancel)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self._force_close:
            # A connection that has sent nothing is simply closed; a started request is told.
            self._give_up(answer=self._header_bytes)

    def _body_late(self, payload: StreamReader) -> None:
        self._body_timer = None
        if payload.is_eof() or self._force_close:
            return
        # A handler waiting for the body is woken with the 408 (it passes through middleware
        # untouched); writing it fails quietly once the connection is gone.
        payload.set_exception(web.HTTPRequestTimeout(text="request body too slow"))
        request = self._current_request
        self._give_up(answer=request is None or request.writer.output_size == 0)

    def _give_up(self, *, answer: bool) -> None:
        transport = self.transport
        if answer and isinstance(transport, asyncio.WriteTransport) and \
                not transport.is_closing():
            transport.write(_TIMEOUT_ANSWER)
        self._cancel_timers()
        self.force_close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None


class BoundedServer(web.Server):
    """An application's low-level server whose connections are :class:`BoundedRequestHandler`."""

    def __init__(self, inner: web.Server, timeouts: ServerTimeouts) -> None:
        super().__init__(inner.request_handler, request_factory=inner.request_factory,
                         handler_cancellation=inner.handler_cancellation, loop=inner._loop,
                         **inner._kwargs)
        self.timeouts = timeouts

    def __call__(self) -> RequestHandler:
        return BoundedRequestHandler(self, loop=self._loop, timeouts=self.timeouts,
                                     **self._kwargs)


class BoundedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections keep :class:`ServerTimeouts`.

    Use it exactly like ``web.AppRunner`` (``setup()``, a ``web.TCPSite``, ``cleanup()``); the
    idle timeout replaces ``keepalive_timeout``.
    """

    def __init__(self, app: web.Application, timeouts: ServerTimeouts, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=timeouts.idle_ms / 1000, **kwargs)
        self.timeouts = timeouts

    async def _make_server(self) -> web.Server:
        return BoundedServer(await super()._make_server(), self.timeouts)


async def serve(app: web.Application, host: str, port: int, *,
                timeouts: ServerTimeouts | None = None, shutdown_timeout: float = 2.0,
                stop: asyncio.Event | None = None,
                ready: Callable[[], None] | None = None) -> None:
    """Serve `app` on ``host:port`` until `stop` is set (by default: until SIGINT or SIGTERM);
    `ready` is called once it listens."""
    runner = BoundedAppRunner(app, timeouts or ServerTimeouts(), access_log=None,
                              shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        if ready is not None:
            ready()
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
