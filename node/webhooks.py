"""Webhooks: the event log (node.events) POSTed to the operator's receivers, signed, at least once.

Each endpoint has a cursor — the last event id its receiver acknowledged with a 2xx — stored in
``webhook_endpoint``: the durable queue is the event log itself, and what is owed to a receiver
is every event after its cursor that its filter takes, in id order. A failed delivery (no 2xx in
time, a redirect, a refused connection) waits its backoff (1 s, doubling, at most 10 min) and
is tried again; events behind it wait (order kept). A crash between the receiver's 2xx and the
cursor's write sends that event again, never loses it: receivers deduplicate by the event id
(``Meterline-Event-Id``). See ADR 0211 and docs/webhooks.md.

Every request is signed like Stripe's: ``Meterline-Signature: t=TIMESTAMP,v1=HEX`` where HEX
is HMAC-SHA256 of ``"TIMESTAMP." + body`` under the endpoint's secret; a receiver checks the MAC
and that TIMESTAMP is within its replay tolerance (:data:`TOLERANCE_S` by default). The secret is
shown once, when the endpoint is added, and kept as a private file (mode 0600) in the data
directory like the node's key and admin token; it is never logged or listed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from sqlalchemy import delete, func, select

from node.background import stop_tasks
from node.config_base import ConfigError, read_private, write_private
from node.context import Context, now_ms
from node.errors import Conflict, NodeError, NotFound
from node.events import event_json, matches, parse_types
from node.storage.models import Event, WebhookEndpoint

log = structlog.get_logger()

SIGNATURE_HEADER = "Meterline-Signature"
TOLERANCE_S = 300
"""The replay tolerance receivers are told to check (docs/webhooks.md): 5 minutes, as Stripe."""
TIMEOUT_S = 10.0
RETRY_FIRST_MS = 1_000
RETRY_CAP_MS = 600_000
MAX_ENDPOINTS = 16
MAX_URL = 300
BATCH = 100
"""Events read per endpoint per round."""
SECRETS_DIR = "webhooks"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Meterline-Signature`` header value of `body` sent at `timestamp` (Unix s)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class SignatureError(ValueError):
    pass


def verify(secret: str, header: str, body: bytes, *, now_s: int | None = None,
           tolerance_s: int = TOLERANCE_S) -> int:
    """What a receiver does (docs/webhooks.md): the header's timestamp when a `v1` MAC matches
    and the timestamp is within `tolerance_s` of now; SignatureError otherwise."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    macs = [v.strip() for k, _, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not macs:
        raise SignatureError("no t=… and v1=… in the signature header")
    timestamp = int(stamps[0])
    now = int(time.time()) if now_s is None else now_s
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp} is outside the tolerance of {tolerance_s} s")
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, mac) for mac in macs):
        raise SignatureError("no v1 signature matches")
    return timestamp


def check_url(url: str) -> str:
    """A receiver URL: https anywhere, http only on loopback; no credentials, no fragment."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise NodeError(f"the URL must be 1 to {MAX_URL} characters", code="BAD_URL")
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # a port that is not a number in range raises here
    except ValueError as exc:
        raise NodeError(f"{url[:60]!r} is not a URL: {exc}", code="BAD_URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeError(f"{url[:60]!r} is not an http(s) URL with a host", code="BAD_URL")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise NodeError("the URL must carry no credentials and no #fragment (the signature "
                        "authenticates the node to the receiver)", code="BAD_URL")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise NodeError("the URL must not contain spaces or control characters", code="BAD_URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise NodeError(f"http:// is only for a receiver on this machine; use https:// for "
                        f"{parts.hostname}", code="BAD_URL")
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def backoff_ms(attempts: int) -> int:
    return int(min(RETRY_CAP_MS, RETRY_FIRST_MS * 2 ** min(attempts - 1, 20)))


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None
    error: str


class Webhooks:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._secrets: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()

    # -- endpoints --------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self.ctx.config.data_dir / SECRETS_DIR

    def _secret_path(self, endpoint_id: int) -> Path:
        return self.directory / f"{endpoint_id}.secret"

    def secret(self, endpoint_id: int) -> str:
        if endpoint_id not in self._secrets:
            self._secrets[endpoint_id] = read_private(self._secret_path(endpoint_id),
                                                      "webhook secret")
        return self._secrets[endpoint_id]

    async def add(self, url: str, events: str = "*") -> tuple[WebhookEndpoint, str]:
        """A new endpoint, owed every event from now on; returns it and its secret."""
        check_url(url)
        try:
            patterns = parse_types(events)
        except ValueError as exc:
            raise NodeError(str(exc), code="UNKNOWN_EVENT_TYPE") from None
        secret = "whsec_" + secrets.token_urlsafe(32)
        async with self.ctx.repo.transaction() as session:
            count = await session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0
            if count >= MAX_ENDPOINTS:
                raise Conflict(f"at most {MAX_ENDPOINTS} webhook endpoints; remove one first",
                                code="TOO_MANY_WEBHOOKS")
            cursor = await session.scalar(select(func.max(Event.id))) or 0
            row = WebhookEndpoint(url=url, events=",".join(patterns), cursor=cursor,
                                  created_ms=now_ms(), attempts=0, next_attempt_ms=0,
                                  last_error="", delivered=0)
            session.add(row)
            await session.flush()
            self.directory.mkdir(mode=0o700, exist_ok=True)
            path = self._secret_path(row.id)
            path.unlink(missing_ok=True)  # a file left by a crash after an endpoint's removal
            write_private(path, secret.encode())
        self._secrets[row.id] = secret
        log.info("webhook.added", webhook=row.id, url=url, events=row.events)
        self._wake.set()
        return row, secret

    async def endpoints(self) -> list[WebhookEndpoint]:
        async with self.ctx.db() as session:
            return list((await session.scalars(
                select(WebhookEndpoint).order_by(WebhookEndpoint.id))).all())

    async def pending(self, row: WebhookEndpoint) -> tuple[int, int | None]:
        """Events owed to `row` (after its cursor, any type) and the oldest one's time."""
        async with self.ctx.db() as session:
            count, oldest = (await session.execute(
                select(func.count(), func.min(Event.created_ms))
                .where(Event.id > row.cursor))).one()
        return int(count or 0), None if oldest is None else int(oldest)

    async def get(self, endpoint_id: int) -> WebhookEndpoint:
        async with self.ctx.db() as session:
            row = await session.get(WebhookEndpoint, endpoint_id)
        if row is None:
            raise NotFound(f"no webhook {endpoint_id} (see `meterline webhook list`)",
                           code="UNKNOWN_WEBHOOK")
        return row

    async def remove(self, endpoint_id: int) -> None:
        async with self.ctx.repo.transaction() as session:
            done = await session.execute(
                delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
            if not getattr(done, "rowcount", 0):
                raise NotFound(f"no webhook {endpoint_id} (see `meterline webhook list`)",
                               code="UNKNOWN_WEBHOOK")
        self._secret_path(endpoint_id).unlink(missing_ok=True)
        self._secrets.pop(endpoint_id, None)
        log.info("webhook.removed", webhook=endpoint_id)

    async def test(self, endpoint_id: int) -> Outcome:
        """Send a signed ``webhook.test`` event now (not logged, the cursor unchanged)."""
        row = await self.get(endpoint_id)
        event = {"id": 0, "type": "webhook.test", "channel_id": None, "created_ms": now_ms(),
                 "data": {"webhook": row.id, "url": row.url}}
        return await self._post(row, event)

    # -- delivery ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        await stop_tasks(self._task)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            seen = self.ctx.events.generation
            try:
                wait_s = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # logged; the next round tries again
                log.warning("webhook.round_failed", error=str(exc)[:300])
                wait_s = 1.0
            self._wake.clear()
            events = asyncio.ensure_future(self.ctx.events.wait(wait_s, seen))
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({events, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                events.cancel()
                wake.cancel()

    async def deliver_due(self) -> float:
        """One round: every endpoint that is due gets what it is owed, in order, until one
        fails; returns how long to wait for the next retry (at most 30 s)."""
        rows = await self.endpoints()
        now = now_ms()
        due = [r for r in rows if r.next_attempt_ms <= now]
        await asyncio.gather(*(self._catch_up(r) for r in due))
        later = [r.next_attempt_ms for r in await self.endpoints() if r.next_attempt_ms > now]
        return max(0.05, min(30.0, (min(later) - now_ms()) / 1000)) if later else 30.0

    async def _catch_up(self, row: WebhookEndpoint) -> None:
        patterns = tuple(row.events.split(","))
        while True:
            page = await self.ctx.events.page(row.cursor, BATCH)
            if not page:
                return
            for event in page:
                if matches(patterns, event.type):
                    outcome = await self._post(row, event_json(event))
                    if not outcome.ok:
                        await self._save(row)  # what it skipped before this one
                        await self._failed(row, event.id, outcome)
                        return
                    row.delivered += 1
                    row.cursor = event.id
                    await self._save(row)
                else:
                    row.cursor = event.id  # not for this receiver: saved with the next write
            await self._save(row)
            if len(page) < BATCH:
                return

    async def _save(self, row: WebhookEndpoint) -> None:
        """The receiver's cursor (and a clean slate: it took the last one)."""
        async with self.ctx.repo.transaction() as session:
            stored = await session.get(WebhookEndpoint, row.id)
            if stored is None:  # removed meanwhile
                return
            stored.cursor = max(stored.cursor, row.cursor)
            stored.delivered = row.delivered
            stored.attempts = 0
            stored.next_attempt_ms = 0
            stored.last_error = ""

    async def _failed(self, row: WebhookEndpoint, event_id: int, outcome: Outcome) -> None:
        attempts = row.attempts + 1
        wait = backoff_ms(attempts)
        async with self.ctx.repo.transaction() as session:
            stored = await session.get(WebhookEndpoint, row.id)
            if stored is None:
                return
            stored.attempts = attempts
            stored.next_attempt_ms = now_ms() + wait
            stored.last_error = f"event {event_id}: {outcome.error}"[:300]
        log.warning("webhook.failed", webhook=row.id, event_id=event_id, attempts=attempts,
                    status=outcome.status, error=outcome.error[:200], retry_in_ms=wait)

    async def _post(self, row: WebhookEndpoint, event: dict[str, Any]) -> Outcome:
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        try:
            secret = self.secret(row.id)
        except ConfigError as exc:  # the file was removed or opened up: never sent unsigned
            return Outcome(False, None, str(exc))
        headers = {"Content-Type": "application/json", "User-Agent": "meterline-webhooks",
                   SIGNATURE_HEADER: sign(secret, int(time.time()), body),
                   "Meterline-Event-Id": str(event["id"]), "Meterline-Event-Type": event["type"]}
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        try:
            async with self._session.post(row.url, data=body, headers=headers,
                                          allow_redirects=False) as resp:
                await resp.content.read(64 * 1024)
                if 200 <= resp.status < 300:
                    return Outcome(True, resp.status, "")
                return Outcome(False, resp.status, f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {str(exc)[:200]}")
