"""A loopback TCP proxy that cuts the answer to one request: the request reaches the daemon
behind it, which acts on it and answers, and the caller sees the connection close instead —
what a kill -9 of the caller between its request and the answer looks like to the daemon.
With `duplicate`, the request is sent a second time at once on another connection instead
(an opener asking again while its first copy is being answered); `answers` are that copy's
HTTP status lines."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from node.cluster import free_port


class CuttingProxy:
    """Forward 127.0.0.1:`port` to `upstream`; cut the answer to the first `cut` requests
    whose request line starts with `prefix` (e.g. ``b"POST /p2p/proposal "``)."""

    def __init__(self, upstream_port: int, prefix: bytes, cut: int = 1, *,
                 duplicate: bool = False) -> None:
        self.duplicate = duplicate
        self.answers: list[bytes] = []
        self.upstream_port = upstream_port
        self.prefix = prefix
        self.remaining = cut
        self.cuts = 0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CuttingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        cutting = asyncio.Event()
        copy: list[asyncio.StreamWriter] = []
        pending: list[asyncio.Future[None]] = []

        async def answer(copy_reader: asyncio.StreamReader) -> None:
            self.answers.append((await copy_reader.readline()).strip())
            copy.pop().close()

        async def upwards() -> None:
            while data := await reader.read(65536):
                if data.startswith(self.prefix) and self.remaining > 0:
                    self.remaining -= 1
                    if self.duplicate:
                        copy_reader, copy_writer = await asyncio.open_connection(
                            "127.0.0.1", self.upstream_port)
                        copy.append(copy_writer)
                        pending.append(asyncio.ensure_future(answer(copy_reader)))
                    else:
                        cutting.set()
                for w in (up_writer, *copy):
                    w.write(data)
                await up_writer.drain()

        async def downwards() -> None:
            while data := await up_reader.read(65536):
                if cutting.is_set():  # the daemon answered: the caller never hears it
                    self.cuts += 1
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(upwards()), asyncio.ensure_future(downwards())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()
