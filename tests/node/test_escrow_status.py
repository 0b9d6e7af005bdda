"""The arbiter's signed channel status (specs/0005 §4.1), over a real peer port: signed by the
arbiter, echoing the asker's challenge, carrying the dispute notice once a claim is taken; a bad
challenge or an unknown channel is refused and changes nothing."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from node.config import Config
from protocol import PROTOCOL_VERSION
from protocol import arbiter as arb
from protocol.encoding import pack
from protocol.errors import DecodeError, ErrorCode, ProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    MAX_STATUS_BATCH,
    Error,
    EscrowStatus,
    EscrowStatuses,
    EscrowStatusQuery,
    Refusal,
    UnilateralClose,
)
from protocol.records import decode_message
from protocol.types import ChannelId
from tests.node.conftest import RunningNode, arbiter_holding_a_channel


async def test_the_status_is_signed_fresh_and_carries_the_dispute(
    tmp_path: Path, start_node: Callable[[Config], Awaitable[RunningNode]]
) -> None:
    sim, arbiter = await arbiter_holding_a_channel(tmp_path, start_node)
    assert sim.escrow is not None
    cid = sim.escrow.channel_id.hex()
    url = f"{arbiter.peer_url}/p2p/channels/{cid}/status"

    async def ask(challenge: str) -> tuple[int, object]:
        async with arbiter.http.get(url, params={"challenge": challenge}) as resp:
            return resp.status, decode_message(await resp.read())

    challenge = secrets.token_bytes(16)
    status, answer = await ask(challenge.hex())
    assert status == 200
    assert isinstance(answer, EscrowStatus)
    answer.verify_signature(sim.arbiter.node_id)
    assert (answer.channel_id, answer.challenge, answer.phase) == (
        sim.escrow.channel_id, challenge, "open")
    assert answer.dispute is None
    assert {c.depositor for c in answer.funding} == set(sim.terms.parties())

    claim = UnilateralClose(sim.escrow.channel_id, sim.opener.node_id, None,
                            EMPTY_SIGNATURE).signed_by(sim.opener)
    await arbiter.node.escrow.on_unilateral(claim)
    status, answer = await ask(secrets.token_hex(32))
    assert isinstance(answer, EscrowStatus)
    assert answer.phase == "dispute"
    assert answer.dispute is not None
    assert answer.dispute.claim == claim
    assert answer.dispute.deadline_ms == arbiter.node.escrow.states[cid].deadline_ms
    answer.dispute.verify_signature(sim.arbiter.node_id)

    before = arbiter.node.escrow.states[cid]
    for bad in ("", "00", "zz" * 16, "ab" * 17):
        status, answer = await ask(bad)
        assert status == 400, bad
        assert isinstance(answer, Error)
        assert ErrorCode(answer.code) is ErrorCode.INVALID_FIELD
    async with arbiter.http.get(f"{arbiter.peer_url}/p2p/channels/{'0' * 64}/status",
                                params={"challenge": "ab" * 16}) as resp:
        unknown = decode_message(await resp.read())
    assert isinstance(unknown, Error)
    assert ErrorCode(unknown.code) is ErrorCode.UNKNOWN_CHANNEL
    assert arbiter.node.escrow.states[cid] == before
    assert before.phase is arb.ArbiterPhase.DISPUTE


async def test_a_batch_of_statuses_is_one_signed_answer_and_more_than_16_is_refused(
    tmp_path: Path, start_node: Callable[[Config], Awaitable[RunningNode]]
) -> None:
    """`POST /p2p/status` (ADR 0315): one signed `EscrowStatuses` for the channels asked about,
    each echoing the challenge, the ids not held listed as unknown; a query of 17 ids is
    refused (a signed Refusal, INVALID_FIELD) before anything is looked up."""
    sim, arbiter = await arbiter_holding_a_channel(tmp_path, start_node)
    assert sim.escrow is not None
    url = f"{arbiter.peer_url}/p2p/status"

    async def ask(body: bytes) -> tuple[int, object]:
        async with arbiter.http.post(url, data=body,
                                     headers={"Content-Type": "application/msgpack"}) as resp:
            return resp.status, decode_message(await resp.read())

    challenge = secrets.token_bytes(16)
    strangers = tuple(ChannelId(secrets.token_bytes(32)) for _ in range(MAX_STATUS_BATCH - 1))
    query = EscrowStatusQuery((strangers[0], sim.escrow.channel_id, *strangers[1:]), challenge)
    status, answer = await ask(query.encode())
    assert status == 200
    assert isinstance(answer, EscrowStatuses)
    answer.verify_signature(sim.arbiter.node_id)
    assert answer.challenge == challenge
    assert [(s.channel_id, s.challenge, s.phase) for s in answer.statuses] == [
        (sim.escrow.channel_id, challenge, "open")]
    assert {c.depositor for c in answer.statuses[0].funding} == set(sim.terms.parties())
    for conf in answer.statuses[0].funding:  # what the node feeds its machine stays signed
        conf.verify_signature(sim.arbiter.node_id)
    assert answer.unknown == strangers

    forged = replace(answer, challenge=secrets.token_bytes(16))
    with pytest.raises(ProtocolError):
        forged.verify_signature(sim.arbiter.node_id)

    too_many = pack([EscrowStatusQuery.TAG, PROTOCOL_VERSION,
                     [secrets.token_bytes(32) for _ in range(MAX_STATUS_BATCH + 1)], challenge])
    status, refused = await ask(too_many)
    assert status == 400
    assert isinstance(refused, Refusal)  # typed, and signed over exactly what was sent
    refused.verify_for(sim.arbiter.node_id, too_many)
    assert ErrorCode(refused.code) is ErrorCode.INVALID_FIELD
    assert "1..16" in refused.message
    with pytest.raises(DecodeError) as raised:
        EscrowStatusQuery.decode(too_many)
    assert raised.value.code is ErrorCode.INVALID_FIELD
