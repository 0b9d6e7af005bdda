"""The batch folds (`pay_many`, `receive_proofs`) are the machine's `step` folded over their
inputs (issue 13: one new state per batch, not per proof): the same state after, the same
proofs, the same errors in the same order, whatever mix of good, replayed, gapped, forged,
mis-addressed, mis-priced and over-capacity proofs a hostile peer sends."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import BalanceProof
from protocol.simulation import Simulation
from protocol.types import Amount, Quantity

from .conftest import KM_GRADUATED, MSG

NOW = 10_000_000


def _sim() -> Simulation:
    sim = Simulation.create(tariff=(KM_GRADUATED, MSG), opener_deposit=10_000,
                            peer_deposit=5_000)
    sim.open()
    return sim


def _signed_run(sim: Simulation, quantities: list[tuple[int, int]]) -> list[BalanceProof]:
    """The opener's honest proofs for each payment (stopping at the first the machine refuses)."""
    state, out = sim.states[0], []
    for i, q in enumerate(quantities):
        try:
            t = ch.step(state, ch.ActionPay(sim.opener, (Quantity(q[0]), Quantity(q[1])),
                                            Amount(0), f"R{i}"), now_ms=NOW + i)
        except ProtocolError:
            break
        state = t.state
        out.append(t.effects[0].proof)  # type: ignore[union-attr]
    return out


def _hostile(sim: Simulation, honest: list[BalanceProof], ops: list[tuple[str, int]]
             ) -> list[BalanceProof]:
    """A stream built from the honest proofs by a peer doing its worst."""
    mallory = Signer.from_label("mallory")
    other = bytes(32)
    out: list[BalanceProof] = []
    for op, i in ops:
        p = honest[i % len(honest)]
        if op == "honest":
            out.append(p)
        elif op == "forged":  # right body, someone else's signature
            out.append(replace(p, signature=mallory.sign(p.DOMAIN, p.body())))
        elif op == "unsigned":  # a body changed under the payer's signature
            out.append(replace(p, amount=Amount(p.amount + 1)))
        elif op == "mispriced":  # the payer signs an amount the tariff does not give
            out.append(replace(p, amount=Amount(p.amount + 7)).signed_by(sim.opener))
        elif op == "elsewhere":  # for another channel
            out.append(replace(p, channel_id=other).signed_by(sim.opener))  # type: ignore[arg-type]
        elif op == "huge":  # over any capacity
            out.append(replace(p, quantities=(Quantity(10**12), p.quantities[1])
                               ).signed_by(sim.opener))
    return out


def _fold(state: ch.ChannelState, proofs: list[BalanceProof],
          checked: list[ch.CheckedProof | None]) -> tuple[ch.ChannelState, list[int]]:
    codes: list[int] = []
    for proof, check in zip(proofs, checked, strict=True):
        try:
            state = ch.step(state, ch.ReceiveProof(proof, check), now_ms=NOW * 2).state
        except ProtocolError as exc:
            codes.append(exc.code.value)  # (the numeric code of the wire Error)
    return state, codes


OPS = st.lists(st.tuples(st.sampled_from(["honest"] * 6 + ["forged", "unsigned", "mispriced",
                                                           "elsewhere", "huge"]),
                         st.integers(0, 40)), max_size=40)
PAYMENTS = st.lists(st.tuples(st.integers(0, 3_000), st.integers(0, 5)).filter(any),
                    min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(payments=PAYMENTS, ops=OPS, precheck=st.booleans())
def test_receive_proofs_is_step_folded_over_the_proofs(
        payments: list[tuple[int, int]], ops: list[tuple[str, int]], precheck: bool) -> None:
    sim = _sim()
    honest = _signed_run(sim, payments)
    if not honest:
        return
    # in order, then the hostile mix (replays of every earlier nonce, gaps, forgeries…)
    proofs = honest[: len(honest) // 2] + _hostile(sim, honest, ops)
    checked: list[ch.CheckedProof | None] = [None] * len(proofs)
    if precheck:  # the signing pool's checks: None where the signature fails
        for i, p in enumerate(proofs):
            try:
                checked[i] = ch.check_signature(p)
            except ProtocolError:
                checked[i] = None
    start = sim.states[1]
    folded, codes = _fold(start, proofs, checked)
    state, applied, errors = ch.receive_proofs(start, proofs, checked, now_ms=NOW * 2)
    assert state == folded
    assert [e.code.value for e in errors] == codes
    assert (state is start) == (folded is start)
    nonces = [p.nonce for _, p in applied]
    assert nonces == list(range(start.received.nonce + 1, state.received.nonce + 1))
    for before, proof in applied:
        assert before.nonce + 1 == proof.nonce


def test_receive_proofs_outside_open_refuses_each_proof_as_step_does() -> None:
    sim = _sim()
    honest = _signed_run(sim, [(1, 0), (2, 0)])
    proposed = replace(sim.states[1], phase=ch.Phase.PROPOSED)
    state, applied, errors = ch.receive_proofs(proposed, honest, [], now_ms=NOW)
    _, codes = _fold(proposed, honest, [None, None])
    assert state is proposed
    assert applied == []
    assert [e.code.name for e in errors] == ["INVALID_STATE", "INVALID_STATE"]
    assert [e.code.value for e in errors] == codes


@settings(max_examples=60, deadline=None)
@given(quantity=st.integers(1, 400_000), n=st.integers(1, 60))
def test_pay_many_is_step_folded_n_times_and_refuses_the_whole_batch(quantity: int,
                                                                     n: int) -> None:
    sim = _sim()
    action = ch.ActionPay(sim.opener, (Quantity(quantity), Quantity(1)), Amount(0), "SHIP-1")
    state, proofs, error = sim.states[0], [], None
    for _ in range(n):
        try:
            t = ch.step(state, action, now_ms=NOW)
        except ProtocolError as exc:  # over capacity part-way: the batch is refused
            error = exc
            break
        state = t.state
        proofs.append(t.effects[0].proof)  # type: ignore[union-attr]
    if error is not None:
        with pytest.raises(ProtocolError) as raised:
            ch.pay_many(sim.states[0], action, n, now_ms=NOW)
        assert raised.value.code is error.code
        return
    after, signed = ch.pay_many(sim.states[0], action, n, now_ms=NOW)
    assert after == state
    assert [p for _, p in signed] == proofs  # Ed25519 is deterministic: the very same bytes
    assert [f.nonce for f, _ in signed] == list(range(n))


def test_pay_many_with_a_key_that_is_not_ours_is_refused() -> None:
    sim = _sim()
    with pytest.raises(ProtocolError, match="not ours"):
        ch.pay_many(sim.states[0], ch.ActionPay(sim.peer, (Quantity(1), Quantity(0)),
                                                Amount(0), ""), 3, now_ms=NOW)
