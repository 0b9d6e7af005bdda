"""`[ingest.mqtt]`: meter every message of an MQTT topic as a usage event (QoS 1, at least once).

The subscriber keeps a persistent session (``clean_session = false`` under a fixed client id)
and acknowledges a message (PUBACK) only after its event is durably in the channel: decided by
node.usage_events and committed with the proof that carries it — or refused for good, or not an
event at all (logged, then acknowledged, since a redelivery could only be refused again). When
the submission fails (the channel is not open, the database is away), the message is NOT
acknowledged and the connection is dropped, so the broker delivers it again after the reconnect.
A message delivered again after a reconnect, or published twice, is a duplicate by its event id
and charges nothing (specs/0003 §5.4).

A message is one event (plain ``{id, units, ref, time}`` or a CloudEvent, JSON) or a JSON array
of up to 100. aiomqtt has no manual acknowledgement yet (aiomqtt issue #345, PR #346): its paho
client's ``manual_ack_set`` and ``ack`` are used, as that issue describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from node.api.events_in import EventReader, EventRefused
from node.channels import ChannelService
from node.config_base import read_private
from node.ingest.settings import MqttConfig
from node.usage_events import UsageEvents
from protocol.usage_events import MAX_BATCH, Outcome, UsageEvent
from rails import jsonsafe

if TYPE_CHECKING:  # imported when a subscriber runs: a node without [ingest.mqtt] starts
    import aiomqtt  # without aiomqtt and paho (about 30 ms of every start, issue 13)

log = structlog.get_logger()
MAX_MESSAGE_BYTES = 512 * 1024
IN_FLIGHT = 200
"""Messages being metered at once (their events are coalesced into shared proofs)."""


class Resubscribe(Exception):
    """A message could not be metered now: reconnect, and the broker delivers it again."""


class MqttIngest:
    def __init__(self, settings: MqttConfig, events: UsageEvents,
                 channels: ChannelService) -> None:
        self.settings = settings
        self.events = events
        self.channels = channels
        self.acked = 0
        """Messages acknowledged to the broker (each metered, refused or not an event)."""
        self.connected = asyncio.Event()
        self.last_error = ""
        """Why the last session ended ("" until one did)."""
        self.state = "connecting"
        """``connecting`` (never subscribed yet), ``subscribed``, ``reconnecting`` (a passing
        outage) or ``refused`` (credentials or certificate: the operator must act)."""
        self.since_ms = _now_ms()
        self.refusal: tuple[str, str] | None = None
        """(code, hint) while the broker refuses us for good."""

    def status(self) -> dict[str, Any]:
        """What `node info` and GET /api/info show of the subscription (never the password)."""
        s = self.settings
        return {"broker": s.url, "topic": s.topic, "channel": s.channel, "state": self.state,
                "since_ms": self.since_ms, "acked": self.acked, "error": self.last_error,
                "code": self.refusal[0] if self.refusal else None,
                "hint": self.refusal[1] if self.refusal else None}

    def _enter(self, state: str, refusal: tuple[str, str] | None = None) -> None:
        if state != self.state or refusal != self.refusal:
            self.state, self.refusal, self.since_ms = state, refusal, _now_ms()

    def _client(self) -> aiomqtt.Client:
        import aiomqtt

        s = self.settings
        host, port = s.host_port
        password = read_private(Path(s.password_file), "MQTT password file") if (
            s.password_file) else None
        tls = None
        if s.tls:
            tls = ssl.create_default_context(cafile=s.ca_file or None)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
        client = aiomqtt.Client(
            host, port, identifier=s.client_id, clean_session=False,
            username=s.username or None, password=password, tls_context=tls,
            protocol=aiomqtt.ProtocolVersion.V311, max_inflight_messages=IN_FLIGHT,
            keepalive=30)
        client._client.manual_ack_set(True)  # aiomqtt #345: ack after the commit
        return client

    async def run(self) -> None:
        """Subscribe and meter until cancelled; reconnect after any broker or metering error."""
        import aiomqtt

        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, Resubscribe, OSError) as exc:
                self.last_error = str(exc)[:200]
                refusal = refused_by(exc)
                if refusal is not None:  # not a passing outage: the operator must act
                    event, hint = refusal
                    self._enter("refused", (event.rsplit(".", 1)[1], hint))
                    log.error(event, broker=self.settings.url, username=self.settings.username,
                              error=self.last_error, hint=hint,
                              after_ms=self.settings.reconnect_ms)
                else:
                    self._enter("reconnecting")
                    log.warning("ingest.mqtt.reconnect", error=self.last_error,
                                after_ms=self.settings.reconnect_ms)
            except Exception as exc:
                self.last_error = repr(exc)[:200]
                self._enter("reconnecting")
                log.error("ingest.mqtt.failed", error=self.last_error)
            self.connected.clear()
            await asyncio.sleep(self.settings.reconnect_ms / 1000)

    async def _session(self) -> None:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        async with self._client() as client:
            await client.subscribe(self.settings.topic, qos=1)
            self.connected.set()
            self._enter("subscribed")
            log.info("ingest.mqtt.subscribed", topic=self.settings.topic)
            messages = client.messages.__aiter__()
            try:
                while True:
                    next_message = asyncio.ensure_future(messages.__anext__())
                    either: set[asyncio.Future[Any]] = {next_message, failed}
                    done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if failed in done:
                        next_message.cancel()
                        failed.result()
                    message = next_message.result()
                    await slots.acquire()
                    task = asyncio.create_task(self._meter(client, message, failed))
                    tasks.add(task)
                    task.add_done_callback(_finished(tasks, slots))
            finally:
                for task in list(tasks):
                    task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.gather(*tasks, return_exceptions=True)

    async def _meter(self, client: aiomqtt.Client, message: aiomqtt.Message,
                     failed: asyncio.Future[None]) -> None:
        try:
            await self.meter(message.payload)
        except Resubscribe as exc:
            if not failed.done():
                failed.set_exception(exc)
            return
        if message.qos > 0:
            client._client.ack(message.mid, message.qos)
        self.acked += 1

    async def meter(self, payload: Any) -> None:
        """Meter one message's events; returns when it may be acknowledged (Resubscribe when
        it must be delivered again)."""
        channels = self.channels
        try:
            cid = channels.resolve(self.settings.channel)
            state = channels.get(cid)
        except Exception as exc:
            raise Resubscribe(f"[ingest.mqtt] channel: {exc}") from None
        try:
            events = self._events(payload, state.terms.tariff)
        except EventRefused as exc:
            log.warning("ingest.mqtt.refused", code=exc.code, message=exc.message)
            self.events.count_refused([exc.code])
            return
        if not events:
            return
        try:
            decisions = await self.events.submit(cid, events, wait=False)
        except Exception as exc:  # not open, the database away: deliver it again later
            raise Resubscribe(f"cannot meter on {cid[:16]}: {exc}") from None
        for event, decision in zip(events, decisions, strict=True):
            if decision.outcome is Outcome.REFUSED:
                log.warning("ingest.mqtt.refused", event_id=event.id, code=decision.code,
                            message=decision.message)
        if any(decision.code == "DEDUP_FULL" for decision in decisions):  # not for good
            raise Resubscribe(f"the deduplication window is full ([ingest] max_ids) on "
                              f"{cid[:16]}: delivered again once it is pruned")

    def _events(self, payload: Any, tariff: Any) -> list[UsageEvent]:
        if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_MESSAGE_BYTES:
            raise EventRefused("BAD_JSON", "a message is at most 512 KiB of JSON")
        try:
            body = jsonsafe.load(bytes(payload), max_depth=8, max_number_chars=30,
                                 reject_duplicates=True)
        except jsonsafe.UnsafeJson as exc:
            raise EventRefused("BAD_JSON", f"the message {exc}") from None
        raws = body if isinstance(body, list) else [body]
        if not 1 <= len(raws) <= MAX_BATCH:
            raise EventRefused("BAD_BATCH", f"a message holds 1 to {MAX_BATCH} events")
        events = []
        reader = EventReader(tariff)
        for raw in raws:
            try:
                events.append(reader.read(raw))
            except EventRefused as exc:
                log.warning("ingest.mqtt.refused", code=exc.code, message=exc.message)
                self.events.count_refused([exc.code])
        return events


NOT_AUTHORIZED = frozenset({4, 5, 134, 135})
"""CONNACK codes of refused credentials: MQTT 3.1.1 "bad user name or password", "not
authorized"; MQTT 5 0x86, 0x87."""


def refused_by(exc: BaseException) -> tuple[str, str] | None:
    """The log event and hint when the broker refused us for good (credentials, or a TLS
    certificate the configured CA does not vouch for); None for an outage worth retrying."""
    import aiomqtt

    if isinstance(exc, aiomqtt.MqttCodeError) and _code(exc.rc) in NOT_AUTHORIZED:
        return ("ingest.mqtt.not_authorized", "the broker refused [ingest.mqtt] username and "
                "the password in password_file: nothing is metered until they are right")
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return ("ingest.mqtt.tls_refused", "the broker's certificate is not signed by "
                "[ingest.mqtt] ca_file (or not for this host): nothing is metered from it")
    if isinstance(exc, ssl.SSLError) or text.startswith("[SSL"):
        return ("ingest.mqtt.tls_refused", "the TLS handshake with the broker failed (is it an "
                "mqtts:// listener?)")
    return None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _code(rc: Any) -> int | None:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


def _finished(tasks: set[asyncio.Task[None]], slots: asyncio.Semaphore
              ) -> Any:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()
    return done


INGEST = web.AppKey("ingest", MqttIngest)
"""The node's [ingest.mqtt] subscriber; set on its apps only when one is configured."""

__all__ = ["INGEST", "MqttIngest", "refused_by"]
