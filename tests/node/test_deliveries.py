"""The effect interpreters (node.deliveries): a machine's effects → outbox rows, and the one
commit rule of the service (commit exactly when the state changed or something goes out)."""

from __future__ import annotations

import json
from pathlib import Path

from node.deliveries import INLINE_EFFECTS, channel_deliveries, escrow_deliveries
from protocol import arbiter as arb
from protocol import channel as ch
from protocol.messages import DisputeNotice
from protocol.references import Purpose, bank_reference, idempotency_key

from .conftest import (
    ARBITER_URL,
    OPENER_URL,
    PEER_URL,
    ServicesFactory,
    node_with_peers,
    open_sim,
)


async def test_channel_effects_become_deliveries(tmp_path: Path,
                                                 services: ServicesFactory) -> None:
    svc = await node_with_peers(tmp_path, services, 0)
    sim = svc.sim  # type: ignore[attr-defined]
    state = sim.states[0]
    ctx = svc.ctx
    # what is carried in the node's own request or answer, and what only tells: no rows
    pay = ch.step(state, ch.ActionPay(sim.opener, (1, 0), 0, ""), now_ms=sim.now_ms + 1)
    quiet = [*pay.effects, ch.NotifyOpened(), ch.NotifyCloseRequested()]
    assert all(isinstance(e, INLINE_EFFECTS) or type(e).__name__.startswith("Notify")
               for e in quiet)
    assert await channel_deliveries(ctx, state, quiet) == []

    # a close to the peer, then its submission: urgent, to the peer and the arbiter
    closing = ch.step(state, ch.ActionClose(sim.opener), now_ms=sim.now_ms + 2)
    (to_peer,) = await channel_deliveries(ctx, closing.state, closing.effects)
    assert (to_peer.target, to_peer.recipient, to_peer.purpose, to_peer.urgent) == (
        f"{PEER_URL}/p2p/close", sim.peer.node_id.hex(), "close", True)
    assert to_peer.payload == closing.effects[0].close.encode()  # type: ignore[union-attr]

    forced = ch.step(state, ch.ActionForceClose(sim.opener), now_ms=sim.now_ms + 3)
    (claim,) = await channel_deliveries(ctx, forced.state, forced.effects)
    assert (claim.target, claim.recipient, claim.purpose, claim.urgent) == (
        f"{ARBITER_URL}/p2p/unilateral", sim.arbiter.node_id.hex(), "unilateral", True)
    evidence = ch.step(forced.state, ch.ActionSubmitEvidence(sim.opener), now_ms=sim.now_ms + 4)
    (row,) = await channel_deliveries(ctx, evidence.state, evidence.effects)
    assert (row.target, row.purpose, row.urgent) == (f"{ARBITER_URL}/p2p/evidence", "evidence",
                                                     True)


async def test_acceptance_registers_and_deposits(tmp_path: Path,
                                                 services: ServicesFactory) -> None:
    svc = await node_with_peers(tmp_path, services, 1)
    sim = svc.sim  # type: ignore[attr-defined]
    proposal = ch.propose(sim.terms, sim.opener, now_ms=1).effects[0].proposal  # type: ignore[union-attr]
    t = ch.accept(proposal, sim.peer, now_ms=2)
    rows = await channel_deliveries(svc.ctx, t.state, t.effects)
    assert [(r.kind, r.target, r.purpose) for r in rows] == [
        ("send", f"{OPENER_URL}/p2p/acceptance", "acceptance"),
        ("send", f"{ARBITER_URL}/p2p/register", "register"),
        ("deposit", "", "deposit"),
    ]
    spec = json.loads(rows[2].payload)
    cid = sim.terms.channel_id
    assert spec["idempotency_key"] == idempotency_key(cid, Purpose.DEPOSIT, 1)
    assert spec["reference"] == bank_reference(cid, Purpose.DEPOSIT, 1)
    assert (spec["amount_minor"], spec["party"]) == (sim.terms.peer_deposit, 1)
    assert spec["creditor"]["identification"] == sim.terms.escrow_account.identification
    # answered inline (the acceptance is the reply to the proposal): no acceptance row
    inline = await channel_deliveries(svc.ctx, t.state, t.effects,
                                      inline=(*INLINE_EFFECTS, ch.SendAcceptance))
    assert [r.purpose for r in inline] == ["register", "deposit"]


def test_arbiter_effects_become_deliveries() -> None:
    sim = open_sim()
    urls = [OPENER_URL, ""]  # the peer named no callback yet: it is caught up on registering
    claim = ch.step(sim.states[0], ch.ActionForceClose(sim.opener), now_ms=sim.now_ms + 1)
    submitted = claim.effects[0].claim  # type: ignore[union-attr]
    t = arb.step(sim.escrow, arb.ReceiveUnilateralClose(submitted, sim.arbiter),
                 now_ms=sim.now_ms + 2)
    (row,) = escrow_deliveries(t.state, t.effects, urls)
    assert (row.target, row.purpose, row.urgent) == (f"{OPENER_URL}/p2p/dispute", "dispute", True)
    notice = DisputeNotice.decode(row.payload)
    notice.verify_signature(sim.arbiter.node_id)
    assert (notice.claim, notice.deadline_ms) == (submitted, t.state.deadline_ms)

    decided = arb.step(t.state, arb.Tick(), now_ms=t.state.deadline_ms or 0)
    rows = escrow_deliveries(decided.state, decided.effects, [OPENER_URL, PEER_URL])
    payouts = [e for e in decided.effects if isinstance(e, arb.SubmitPayout)]
    assert [(r.kind, r.purpose) for r in rows] == [("payout", f"payout:{e.party}")
                                                   for e in payouts]
    for r, e in zip(rows, payouts, strict=True):
        spec = json.loads(r.payload)
        assert (spec["idempotency_key"], spec["reference"], spec["amount_minor"]) == (
            e.idempotency_key, e.reference, e.amount)


async def test_the_service_commits_exactly_when_something_changed(
    tmp_path: Path, services: ServicesFactory
) -> None:
    svc = await node_with_peers(tmp_path, services, 1)
    sim = svc.sim  # type: ignore[attr-defined]
    await svc.channels.commit(sim.states[1], new=True)
    cid = sim.terms.channel_id.hex()
    commits = svc.count_commits()
    conf = sim.states[1].funding[0]
    assert conf is not None
    before, t = await svc.channels.apply(cid, ch.ReceiveFunding(conf))  # a repeat
    assert t.state is before
    assert commits() == 0
    before, t = await svc.channels.apply(cid, ch.ActionClose(sim.peer))
    assert t.state is not before
    assert commits() == 1
    assert [r.purpose for r in await svc.outbox.pending()] == ["close"]
    before, t = await svc.channels.apply(cid, ch.ActionClose(sim.peer))  # the same close again
    assert t.state is before
    assert commits() == 2
