"""The arbiter's signed channel status (specs/0005 §4.1), over a real peer port: signed by the
arbiter, echoing the asker's challenge, carrying the dispute notice once a claim is taken; a bad
challenge or an unknown channel is refused and changes nothing."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from node.config import Config
from protocol import arbiter as arb
from protocol.errors import ErrorCode
from protocol.messages import (
    EMPTY_SIGNATURE,
    ChannelRegistration,
    Error,
    EscrowStatus,
    UnilateralClose,
)
from protocol.records import decode_message
from tests.node.conftest import RunningNode, make_config, open_sim


async def test_the_status_is_signed_fresh_and_carries_the_dispute(
    tmp_path: Path, start_node: Callable[[Config], Awaitable[RunningNode]]
) -> None:
    sim = open_sim()
    arbiter = await start_node(make_config(tmp_path / "arbiter", sim.arbiter, role="arbiter"))
    assert sim.escrow is not None
    await arbiter.node.escrow.on_register(ChannelRegistration(sim.escrow.proposal,
                                                              sim.escrow.acceptance))
    await arbiter.node.escrow.commit(sim.escrow)
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
