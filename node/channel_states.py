"""The node's channel states in memory, decoded when first used (ADR 0316).

A node with 10,000 channels must serve its first update within seconds of a restart. Decoding
every stored state at boot costs about a second of CPU before anything listens, and most of
those channels (settled, or idle) are never touched until the operator asks. So boot reads the
rows' bytes and phases only (each row checked to be a whole state of its phase, so a cut
row still stops the boot); a state is decoded the first time anyone looks at it, and from then
on kept decoded like any other. The phase of every channel is known without decoding (it is a
column of the row, and every commit writes it), and so is each channel's arbiter (read from the
stored terms without decoding the rest), so the watch can ask the arbiter about every channel
without decoding any: at 10,000 channels its first sweep decoded them all, two seconds of the
event loop right after a restart (issue 13).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping

import msgpack

from node.storage.codec import (
    CODEC_VERSION,
    ChannelSummary,
    CorruptState,
    decode_channel,
    summarize_channel,
)
from protocol import channel as ch


def checked(cid: str, phase: str, data: bytes) -> bytes:
    """`data` if it is a whole stored state of this codec in `phase` (a cut or overwritten row
    fails loudly at boot: about 2 µs a row, against 200 µs for the full decode, which checks
    every signed message inside at first use)."""
    try:
        raw = msgpack.unpackb(data, raw=False)
        whole = isinstance(raw, list) and len(raw) > 13 and raw[0] == CODEC_VERSION
    except (ValueError, msgpack.exceptions.UnpackException) as exc:
        raise CorruptState(f"channel {cid}: the stored state does not decode ({exc})") from None
    if not whole or raw[3] != phase:
        raise CorruptState(f"channel {cid}: the stored state is not a {phase} channel's")
    return data


class ChannelStates(MutableMapping[str, ch.ChannelState]):
    """channel id (hex) → its latest committed state; the stored ones decoded on first use."""

    def __init__(self) -> None:
        self._decoded: dict[str, ch.ChannelState] = {}
        self._stored: dict[str, bytes] = {}
        self._phase: dict[str, ch.Phase] = {}
        self._summaries: dict[str, ChannelSummary] = {}
        """Of stored states not decoded yet (node.storage.codec.summarize_channel)."""

    def load(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """(id, phase, encoded state) of each stored channel, not decoded yet."""
        for cid, phase, data in rows:
            self._decoded.pop(cid, None)
            self._summaries.pop(cid, None)
            self._stored[cid] = checked(cid, phase, data)
            self._phase[cid] = ch.Phase(phase)

    def phase(self, cid: str) -> ch.Phase:
        return self._phase[cid]

    def phases(self) -> list[tuple[str, ch.Phase]]:
        """Every channel's phase, without decoding any state."""
        return list(self._phase.items())

    def arbiter(self, cid: str) -> str:
        """The channel's arbiter (hex), without decoding a stored state (KeyError: none)."""
        state = self._decoded.get(cid)
        return (state.terms.arbiter if state is not None else self._summary(cid).arbiter).hex()

    def funded(self, cid: str) -> dict[bytes, int]:
        """Each party's node id → its confirmed deposit, without decoding a stored state."""
        state = self._decoded.get(cid)
        if state is None:
            return self._summary(cid).funded
        return dict(zip(state.terms.parties(), state.funded, strict=True))

    def received_nonce(self, cid: str) -> int:
        """The latest nonce the peer paid us, without decoding a stored state."""
        state = self._decoded.get(cid)
        return state.received.nonce if state is not None else self._summary(cid).received_nonce

    def _summary(self, cid: str) -> ChannelSummary:
        summary = self._summaries.get(cid)
        if summary is None:
            summary = self._summaries[cid] = summarize_channel(self._stored[cid])
        return summary

    def decoded(self) -> int:
        """How many states are decoded (the rest are still bytes)."""
        return len(self._decoded)

    def __getitem__(self, cid: str) -> ch.ChannelState:
        state = self._decoded.get(cid)
        if state is None:
            state = self._decoded[cid] = decode_channel(self._stored[cid])  # KeyError: none
            del self._stored[cid]
            self._summaries.pop(cid, None)
        return state

    def __setitem__(self, cid: str, state: ch.ChannelState) -> None:
        self._stored.pop(cid, None)
        self._summaries.pop(cid, None)
        self._decoded[cid] = state
        self._phase[cid] = state.phase

    def __delitem__(self, cid: str) -> None:
        del self._phase[cid]
        self._summaries.pop(cid, None)
        self._decoded.pop(cid, None)
        self._stored.pop(cid, None)

    def __contains__(self, cid: object) -> bool:
        return cid in self._phase

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._phase))

    def __len__(self) -> int:
        return len(self._phase)
