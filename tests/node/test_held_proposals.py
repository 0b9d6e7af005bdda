"""Proposals from peers off the allow-list wait for the operator, and there is a cap on them:
MAX_HELD_PROPOSALS from openers that are not known peers, each a fresh key (one key alone is
capped sooner, see test_acceptance_policy.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from node.config import load_config
from node.peers import info_json
from node.proposals import MAX_HELD_PROPOSALS
from node.storage.models import HeldProposal, Peer
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ErrorCode
from protocol.messages import EMPTY_SIGNATURE, NodeInfo, Refusal
from protocol.records import decode_message
from protocol.simulation import Simulation, default_accounts
from protocol.tariff import parse_tariff_line
from tests.node.conftest import free_port, make_config, seed


async def test_held_proposals_are_capped(tmp_path: Path, start_node: Any) -> None:
    sim = Simulation.create(tariff=(parse_tariff_line("km=0.01", scale=6),),
                            opener_deposit=1_000)
    config = make_config(tmp_path / "peer", sim.peer)
    peer_account = default_accounts()[1]
    path = config.data_dir / "config.toml"
    path.write_text(path.read_text().replace(
        "[bank]\n", f'[bank]\nrail = "sepa"\nurl = "http://127.0.0.1:9"\n'
        f'scheme = "{peer_account.scheme}"\n'
        f'identification = "{peer_account.identification}"\nname = "{peer_account.name}"\n'))
    config = load_config(config.data_dir)
    await seed(config, [], peers=[(sim.arbiter, f"http://127.0.0.1:{free_port()}", "arbiter")])
    node = await start_node(config)
    escrow = default_accounts()[2]
    async with node.node.ctx.db() as session, session.begin():
        arbiter = await session.get(Peer, sim.arbiter.node_id.hex())
        assert arbiter is not None
        record = NodeInfo(sim.arbiter.node_id, "arbiter", "arbiter", arbiter.url, escrow, 1,
                          b"", EMPTY_SIGNATURE).signed_by(sim.arbiter)
        arbiter.info, arbiter.issued_ms = info_json(record), 1

    async def propose(i: int) -> tuple[int, bytes]:
        opener = Signer.from_label(f"stranger-{i}")
        terms = replace(sim.terms, opener=opener.node_id)
        proposal = ch.propose(terms, opener, now_ms=1).effects[0].proposal  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http, http.post(
            f"{node.peer_url}/p2p/proposal", data=proposal.encode()
        ) as resp:
            return resp.status, await resp.read()

    for i in range(MAX_HELD_PROPOSALS):
        status, body = await propose(i)
        assert (status, body) == (202, b"")
    status, body = await propose(MAX_HELD_PROPOSALS)
    answer = decode_message(body)
    assert status == 400
    assert isinstance(answer, Refusal)
    assert ErrorCode(answer.code) is ErrorCode.INVALID_STATE
    held = await node.node.channels.proposals.held()
    assert len(held) == MAX_HELD_PROPOSALS
    assert all(isinstance(h, HeldProposal) for h in held)

