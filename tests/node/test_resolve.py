"""A channel named by its whole id is found without a pass over every channel (each admin call
resolves its channel: at 10,000 channels the pass was about a millisecond a request); a prefix
is still resolved, and an ambiguous or unknown one refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.channel_states import ChannelStates
from node.errors import NodeError
from tests.node.conftest import ServicesFactory, node_with_peers


async def test_a_whole_id_is_found_without_a_pass_and_a_prefix_with_one(
        tmp_path: Path, services: ServicesFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = await node_with_peers(tmp_path, services, 1)
    state = svc.sim.states[1]  # type: ignore[attr-defined]
    await svc.channels.commit(state, new=True)
    cid = state.channel_id.hex()
    passes: list[int] = []
    iterate = ChannelStates.__iter__

    def counted(self: ChannelStates):  # type: ignore[no-untyped-def]
        passes.append(1)
        return iterate(self)

    monkeypatch.setattr(ChannelStates, "__iter__", counted)
    assert svc.channels.resolve(cid) == cid
    assert svc.channels.resolve(cid.upper()) == cid
    assert passes == []
    assert svc.channels.resolve(cid[:10]) == cid
    assert passes == [1]
    with pytest.raises(NodeError, match="no channel starts with"):
        svc.channels.resolve("f" * 64 if not cid.startswith("f") else "0" * 64)
