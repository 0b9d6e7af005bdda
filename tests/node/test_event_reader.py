"""node.api.events_in.EventReader: what the events of one batch share is parsed once, and each
event is still judged on its own (issue 11 throughput)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from node.api.events_in import EventReader, EventRefused, parse_event
from protocol.tariff import TariffLine, TariffTier
from protocol.types import Amount, Quantity

KM = TariffLine("km", 3, (TariffTier(None, Amount(123)),))
HOUR = TariffLine("hour", 0, (TariffTier(Quantity(10), Amount(175)), TariffTier(None, Amount(150))))
TIME = "2026-12-02T13:00:00Z"


def raw(event_id: str, units: dict[str, Any], time: Any = TIME) -> dict[str, Any]:
    return {"id": event_id, "units": units, "ref": "R", "time": time}


def test_the_same_text_on_two_lines_is_read_at_each_lines_scale() -> None:
    reader = EventReader((KM, HOUR))
    assert reader.read(raw("a", {"km": "1.5"})).quantities == (1500, 0)
    with pytest.raises(EventRefused) as refused:  # hour has quantity scale 0: not 1.5 hours
        reader.read(raw("b", {"hour": "1.5"}))
    assert refused.value.code == "BAD_UNITS"
    assert reader.read(raw("c", {"hour": "2", "km": "2"})).quantities == (2000, 2)


def test_a_bad_text_is_refused_every_time_and_a_good_one_after_it_still_reads() -> None:
    reader = EventReader((KM, HOUR))
    for event_id in ("a", "b"):
        with pytest.raises(EventRefused) as refused:
            reader.read(raw(event_id, {"km": "1"}, time="2026-13-02T13:00:00Z"))
        assert refused.value.code == "BAD_TIME"
    first = reader.read(raw("c", {"km": "1"}))
    again = reader.read(raw("d", {"km": "1"}))
    assert first.time_ms == again.time_ms == int(
        datetime(2026, 12, 2, 13, tzinfo=UTC).timestamp() * 1000)


def test_a_batch_reads_each_event_as_it_reads_alone() -> None:
    raws = [raw("a", {"km": "1"}), raw("b", {"km": "1", "hour": "3"}), raw("c", {"km": "1"}),
            raw("d", {"km": 7}), raw("e", {"hour": "1"}, time="2026-12-02T14:00:00+01:00")]
    reader = EventReader((KM, HOUR))
    assert [reader.read(r) for r in raws] == [parse_event(r, (KM, HOUR)) for r in raws]
    assert [reader.read(r).content for r in raws] == [
        parse_event(r, (KM, HOUR)).content for r in raws]
