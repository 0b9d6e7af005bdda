"""The test transport: mock-bank's HTTP door as a :class:`rails.transport.FileTransport`.

mock-bank lets a test post a payment file (``POST /payments``) and read what it released from its
control plane (``/_mock/...``). No real bank has that door, so this module is the only one in
``rails/`` that names it; production file channels use
:class:`rails.transport_directory.DirectoryTransport`.

It knows nothing of idempotency keys; what it guarantees is narrower and is what the adapters
build on: a retry re-posts the *same bytes*, timeouts, refused
connections, 5xx answers and answers longer than the read limit (:mod:`rails.http`: 1 MiB, 16 MiB
for the message listing, which carries statement files) are retried with exponential backoff and
then raised as :class:`~rails.errors.BankUnavailable`, and every other failure is a typed
:class:`~rails.errors.RailError`. Reading messages uses ``GET /_mock/messages``, which takes
nothing from the mailbox, so a restarted adapter (or a second reader) sees everything again.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp

from rails.errors import AnswerTooLarge, BankProtocolError, BankRejected, BankUnavailable
from rails.http import JSON_ANSWER_LIMIT, STATEMENT_ANSWER_LIMIT, parse_json, read_bounded
from rails.transport import BankMessage, PostAnswer


class MockBankHttpTransport:
    """aiohttp client for one mock-bank; the session is created lazily and owned here."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._auth = aiohttp.BasicAuth(*auth) if auth else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = max(1, attempts)
        self._backoff = backoff_s
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auth=self._auth)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def _request(
        self, method: str, path: str, *, data: bytes | None = None,
        content_type: str | None = None, limit: int = JSON_ANSWER_LIMIT,
    ) -> tuple[int, bytes]:
        """One logical request: retried on timeouts, connection errors, 5xx and answers longer
        than `limit` only."""
        headers = {"Content-Type": content_type} if content_type else {}
        last = "no attempt made"
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                async with self._http().request(
                    method, self._base + path, data=data, headers=headers
                ) as resp:
                    if resp.status >= 500:
                        last = f"HTTP {resp.status}"
                        continue
                    return resp.status, await read_bounded(resp, limit)
            except TimeoutError:
                last = "timed out"
            except AnswerTooLarge as exc:
                last = str(exc)
            except aiohttp.ClientError as exc:
                last = f"{type(exc).__name__}: {exc}"
        raise BankUnavailable(f"{method} {path}: {last} after {self._attempts} attempts")

    @staticmethod
    def _json(status: int, body: bytes, what: str) -> Any:
        return parse_json(body, f"{what} (HTTP {status})")

    async def send(self, name: str, data: bytes, content_type: str) -> PostAnswer:
        """``POST /payments`` (`name` is the file's name, which HTTP does not carry); a 202 or
        422 answer is returned (422 is the bank's refusal)."""
        status, body = await self._request("POST", "/payments", data=data,
                                           content_type=content_type)
        if status not in (200, 201, 202, 422):
            raise BankRejected(f"POST /payments answered HTTP {status}: "
                               f"{body[:200].decode(errors='replace')}")
        answer = self._json(status, body, "POST /payments")
        if not isinstance(answer, dict):
            raise BankProtocolError("POST /payments answered something other than an object")
        return PostAnswer(status, answer)

    async def payment(self, end_to_end_id: str) -> dict[str, Any] | None:
        """The bank's newest payment with this EndToEndId, or None when it has none."""
        status, body = await self._request(
            "GET", "/_mock/payments/" + quote(end_to_end_id, safe=""))
        if status == 404:
            return None
        if status != 200:
            raise BankProtocolError(f"payment lookup answered HTTP {status}")
        found = self._json(status, body, "payment lookup")
        if not isinstance(found, dict):
            raise BankProtocolError("payment lookup answered something other than an object")
        return found

    async def messages(self, type_prefix: str, after_id: int = 0) -> list[BankMessage]:
        """Every released message whose type starts with `type_prefix`, oldest first."""
        status, body = await self._request(
            "GET", "/_mock/messages?type=" + quote(type_prefix, safe=""),
            limit=STATEMENT_ANSWER_LIMIT)
        if status != 200:
            raise BankProtocolError(f"message listing answered HTTP {status}")
        listing = self._json(status, body, "message listing")
        if not isinstance(listing, list):
            raise BankProtocolError("message listing is not a list")
        out = []
        for item in listing:
            try:
                msg = BankMessage(
                    id=int(item["id"]), type=str(item["type"]),
                    account=item.get("account"), body=str(item["body"]).encode("utf-8"))
            except (KeyError, TypeError, ValueError) as exc:
                raise BankProtocolError(f"message listing entry malformed: {exc}") from exc
            if msg.id > after_id:
                out.append(msg)
        out.sort(key=lambda m: m.id)
        return out

    async def validate(self, data: bytes, content_type: str) -> tuple[int, str]:
        """``POST /_mock/validate``: the bank's own findings, as prose (tests use it)."""
        status, body = await self._request("POST", "/_mock/validate", data=data,
                                           content_type=content_type)
        return status, body.decode("utf-8", errors="replace")
