"""The CheckedProof rule (specs/0003 §5.2, ADR 0305): a proof's signature may be checked ahead
of the machine, and the machine then skips its own check for that very object and no other."""

from __future__ import annotations

import dataclasses

import pytest

from protocol import channel as ch
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import BalanceProof
from protocol.simulation import Simulation
from protocol.types import Quantity


def _next_proof(sim: Simulation) -> BalanceProof:
    t = ch.step(sim.states[0], ch.ActionPay(sim.signer(0), (Quantity(1_000),)),
                now_ms=sim.tick())
    (send,) = t.effects
    assert isinstance(send, ch.SendProof)
    return send.proof


def _forged(proof: BalanceProof) -> BalanceProof:
    flipped = bytes([proof.signature[0] ^ 1]) + proof.signature[1:]
    return dataclasses.replace(proof, signature=flipped)  # type: ignore[arg-type]


@pytest.fixture
def verifies(monkeypatch: pytest.MonkeyPatch) -> list[BalanceProof]:
    """Every proof whose signature is verified, in order."""
    seen: list[BalanceProof] = []
    real = BalanceProof.verify_signature

    def counting(self: BalanceProof, node_id: bytes, field: str = "signature") -> None:
        seen.append(self)
        real(self, node_id, field)

    monkeypatch.setattr(BalanceProof, "verify_signature", counting)
    return seen


def test_the_machine_skips_its_check_for_the_checked_object(
        sim: Simulation, verifies: list[BalanceProof]) -> None:
    proof = _next_proof(sim)
    checked = ch.check_signature(proof)
    assert verifies == [proof]
    t = ch.step(sim.states[1], ch.ReceiveProof(proof, checked), now_ms=sim.now_ms)
    assert t.state.received.nonce == 1
    assert verifies == [proof]  # not verified a second time


def test_a_different_object_with_equal_fields_is_checked_again(
        sim: Simulation, verifies: list[BalanceProof]) -> None:
    proof = _next_proof(sim)
    checked = ch.check_signature(proof)
    twin = dataclasses.replace(proof)
    assert twin == proof
    assert twin is not proof
    assert ch.CheckedProof(twin) != checked  # compared by identity, never by fields
    t = ch.step(sim.states[1], ch.ReceiveProof(twin, checked), now_ms=sim.now_ms)
    assert t.state.received.nonce == 1
    assert verifies == [proof, twin]


def test_a_forged_proof_next_to_a_checked_one_is_refused(sim: Simulation) -> None:
    proof = _next_proof(sim)
    checked = ch.check_signature(proof)
    forged = _forged(proof)
    with pytest.raises(RemoteProtocolError) as exc:
        ch.step(sim.states[1], ch.ReceiveProof(forged, checked), now_ms=sim.now_ms)
    assert exc.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(RemoteProtocolError) as exc:
        ch.check_signature(forged)
    assert exc.value.code is ErrorCode.BAD_SIGNATURE


def test_without_a_check_the_machine_verifies_as_before(
        sim: Simulation, verifies: list[BalanceProof]) -> None:
    proof = _next_proof(sim)
    ch.step(sim.states[1], ch.ReceiveProof(proof), now_ms=sim.now_ms)
    assert verifies == [proof]
    with pytest.raises(RemoteProtocolError) as exc:
        ch.step(sim.states[1], ch.ReceiveProof(_forged(proof)), now_ms=sim.now_ms)
    assert exc.value.code is ErrorCode.BAD_SIGNATURE
