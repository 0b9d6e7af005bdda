"""node.usage_events with node.api.events_in's reader, in process, on SQLite and PostgreSQL:
hostile or odd events never change what the other events of a batch are answered, and never
charge what the tariff does not say (reviewer findings)."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node.api.events_in import EventReader, EventRefused
from node.ingest.mqtt import MqttIngest, Resubscribe
from node.ingest.settings import IngestConfig, MqttConfig
from node.usage_events import UsageEvents
from protocol.usage_events import Decision, Outcome

from .conftest import ServicesFactory, node_with_peers


def stamp() -> str:
    return datetime.fromtimestamp(time.time(), UTC).isoformat().replace("+00:00", "Z")


def read(reader: EventReader, raws: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for raw in raws:
        try:
            out.append(reader.read(raw))
        except EventRefused as exc:
            out.append(exc)
    return out


async def test_a_reference_that_grows_past_64_characters_under_nfc_is_refused_alone(
        tmp_path: Path, services: ServicesFactory, db_url: str) -> None:
    """U+0958 is one character that NFC writes as two: 64 of them passed the 64-character check
    and became a 128-character usage reference, which PostgreSQL's usage.reference (64) refused
    at the commit, failing every event coalesced with it (and, over MQTT, the message again at
    every redelivery)."""
    svc = await node_with_peers(tmp_path, services, 0, db_url=db_url)
    sim = svc.sim  # type: ignore[attr-defined]
    await svc.channels.commit(sim.states[0], new=True)
    cid = sim.states[0].channel_id.hex()
    now = stamp()
    read_ = read(EventReader(sim.states[0].terms.tariff), [
        {"id": "ok-1", "units": {"km": "1"}, "ref": "SHIP-1", "time": now},
        {"id": "nfc-1", "units": {"km": "1"}, "ref": "\u0958" * 64, "time": now}])
    assert isinstance(read_[1], EventRefused)
    assert read_[1].code == "BAD_REFERENCE"
    decisions: list[Decision] = await UsageEvents(svc.channels).submit(
        cid, [e for e in read_ if not isinstance(e, EventRefused)], wait=False)
    assert [d.outcome for d in decisions] == [Outcome.ACCEPTED]
    assert {u[2] for u in await svc.usage(cid)} == {"SHIP-1"}



async def test_an_mqtt_message_whose_event_is_refused_is_acknowledged(
        tmp_path: Path, services: ServicesFactory) -> None:
    """The refusal was logged with ``event=``, structlog's own first argument: a TypeError, so
    the message was never acknowledged and its task died; the broker stops sending once its
    in-flight window (Mosquitto: 20) holds such messages, and every reconnect delivers them to
    fail again — one old or reused event id stalled the subscription."""
    svc = await node_with_peers(tmp_path, services, 0)
    sim = svc.sim  # type: ignore[attr-defined]
    await svc.channels.commit(sim.states[0], new=True)
    cid = sim.states[0].channel_id.hex()
    ingest = MqttIngest(MqttConfig(channel=cid[:16]), UsageEvents(svc.channels), svc.channels)
    old = json.dumps({"id": "m-old", "units": {"km": "1"}, "time": "2020-01-01T00:00:00Z"})
    await ingest.meter(old.encode())  # refused EVENT_TOO_OLD: returns, to be acknowledged
    assert ingest.events.refusals["EVENT_TOO_OLD"] == 1


async def test_an_mqtt_event_refused_for_a_full_window_is_delivered_again_not_acknowledged(
        tmp_path: Path, services: ServicesFactory) -> None:
    """DEDUP_FULL says "try again later", and is: the window prunes. An MQTT message is
    acknowledged when its events are refused because a redelivery "could only be refused
    again" (ADR 0201) — not so for this one: acknowledged, the event was gone from the broker
    and never paid, though nobody but the log was told."""
    svc = await node_with_peers(tmp_path, services, 0)
    sim = svc.sim  # type: ignore[attr-defined]
    await svc.channels.commit(sim.states[0], new=True)
    cid = sim.states[0].channel_id.hex()
    svc.ctx.config = dataclasses.replace(svc.ctx.config, ingest=IngestConfig(max_ids=1))
    ingest = MqttIngest(MqttConfig(channel=cid[:16]), UsageEvents(svc.channels), svc.channels)

    def message(event_id: str) -> bytes:
        return json.dumps({"id": event_id, "units": {"km": "1"}, "time": stamp()}).encode()

    await ingest.meter(message("m-1"))  # accepted: the window is full now
    with pytest.raises(Resubscribe):
        await ingest.meter(message("m-2"))
    await ingest.meter(message("m-1"))  # a duplicate: acknowledged
    assert svc.channels.get(cid).sent.quantities[0] == 1000
