"""Hostile input against real daemons: every peer endpoint and the WebSocket stream (hypothesis),
the admin API from specs/admin-api.yaml (schemathesis), and the logs of the whole run grepped
for secrets.

One arena per module (tests/adversarial/arena.py: the sandbox bank, an arbiter, the
manufacturer and the carrier as `meterline` processes on loopback) with one open channel on
which the manufacturer has paid. The tests run in file order: the last one closes the channel,
waits for the bank to book the payouts, and reads every log line the run wrote.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.messages import (
    EMPTY_SIGNATURE,
    ChannelAcceptance,
    ChannelProposal,
    DisputeEvidence,
    Error,
    Receipt,
)
from protocol.records import decode_message
from tests.adversarial.arena import Arena, arena, wait_settled_at_bank
from tests.adversarial.toolkit import Attacker, Loop, request
from tests.faults.hostile import (
    ARBITER_POSTS,
    MALLORY,
    NODE_POSTS,
    judge,
    mutated,
    resigned,
)

EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    servers = Loop()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, loop: Loop) -> Iterator[Arena]:
    with arena(tmp_path_factory.mktemp("hostile"), loop=loop) as a:
        yield a


@pytest.fixture(scope="module")
def cid(a: Arena) -> str:
    cid = a.open_channel(window="8s")
    a.pay(a.manufacturer, cid, km=12, hours=1, repeat=3)
    return cid


@pytest.fixture(scope="module")
def attacker(a: Arena) -> Attacker:
    return Attacker.of(a.manufacturer)


def snapshot(a: Arena) -> dict[str, Any]:
    """Everything the admin APIs show that a refused input could have changed."""
    view: dict[str, Any] = {}
    for handle in (a.manufacturer, a.carrier):
        view[handle.name] = {
            "channels": handle.api("GET", "/api/channels"),
            "peers": handle.api("GET", "/api/peers"),
        }
    view["arbiter"] = {"escrows": a.arbiter.api("GET", "/api/escrows"),
                       "peers": a.arbiter.api("GET", "/api/peers")}
    return view


def genuine_bodies(attacker: Attacker, cid: str) -> dict[str, bytes]:
    """The manufacturer's own genuine messages of the open channel (none of them is sent)."""
    state = attacker.stored_state(cid)
    _, proof = attacker.pay(state, (1_000, 0))
    held = state.received.proof
    evidence = DisputeEvidence(state.channel_id, attacker.signer.node_id, held,
                               EMPTY_SIGNATURE).signed_by(attacker.signer)
    registration, _ = attacker.registration(state, attacker.handle.url, 1_700_000_000_000)
    return {
        "proof": proof.encode(),
        "claim": attacker.unilateral(state.channel_id, held).encode(),
        "evidence": evidence.encode(),
        "registration": registration.encode(),
        "proposal": ChannelProposal(state.terms, state.opener_signature).encode(),  # type: ignore[arg-type]
        "acceptance": ChannelAcceptance(state.channel_id, state.peer_signature).encode(),  # type: ignore[arg-type]
    }


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    answer = request("POST", url, body, timeout_s=15)
    return answer.status, answer.body


def test_every_peer_endpoint_refuses_hostile_bodies(a: Arena, cid: str,
                                                   attacker: Attacker) -> None:
    genuine = genuine_bodies(attacker, cid)
    proof = decode_message(genuine["proof"])
    claim = decode_message(genuine["claim"])
    targets = [(a.carrier.url, path) for path in NODE_POSTS] + [
        (a.arbiter.url, path) for path in ARBITER_POSTS]
    bodies = st.one_of(
        st.binary(max_size=512),
        st.sampled_from(sorted(genuine)).flatmap(lambda k: mutated(genuine[k])),
        resigned(proof, attacker.signer),
        resigned(proof, MALLORY),
        resigned(claim, MALLORY),
    )
    before = snapshot(a)
    answers: dict[int, int] = {}
    wrong: list[str] = []

    @FUZZ
    @given(target=st.sampled_from(targets), body=bodies)
    def send(target: tuple[str, str], body: bytes) -> None:
        url, path = target
        status, answer = _post(url + path, body)
        answers[status] = answers.get(status, 0) + 1
        problem = judge(status, answer, post=True)
        if problem:
            wrong.append(f"POST {path} {body.hex()[:200]} → {problem}")
        assert status < 500, wrong[-1]

    send()
    print(f"\npeer POSTs: {sum(answers.values())} hostile bodies, answers {answers}")
    assert not wrong, "\n".join(wrong[:20])
    assert snapshot(a) == before


def test_peer_gets_refuse_hostile_parameters(a: Arena, cid: str) -> None:
    before = snapshot(a)
    wrong: list[str] = []
    paths = st.one_of(
        st.builds(lambda c: f"{a.carrier.url}/p2p/channels/{c}/receipt", st.text(max_size=70)),
        st.builds(lambda c: f"{a.carrier.url}/p2p/identity?challenge={c}", st.text(max_size=80)),
        st.builds(lambda c, q: f"{a.arbiter.url}/p2p/channels/{c}/status?challenge={q}",
                  st.one_of(st.just(cid), st.text(max_size=70)), st.text(max_size=80)),
    )

    @FUZZ
    @given(url=paths)
    def send(url: str) -> None:
        scheme, rest = url.split("://", 1)
        quoted = f"{scheme}://{urllib.parse.quote(rest, safe='/:?=&')}"
        answer = request("GET", quoted, timeout_s=15)
        if answer.status == 200:
            return  # a well-formed challenge: a signed answer (the status tests check it)
        problem = judge(answer.status, answer.body, post=False)
        if answer.status == 404 and not answer.body:
            problem = ""  # aiohttp's router: the path matches no route at all
        if problem and answer.status < 500 and answer.body.startswith(b"404"):
            problem = ""
        if problem:
            wrong.append(f"GET {quoted} → {problem}")
        assert answer.status < 500, wrong[-1]

    send()
    assert not wrong, "\n".join(wrong[:20])
    assert snapshot(a) == before


def test_the_stream_refuses_hostile_frames(a: Arena, cid: str, attacker: Attacker,
                                           loop: Loop) -> None:
    genuine = genuine_bodies(attacker, cid)
    proof = decode_message(genuine["proof"])
    frames_st = st.lists(st.one_of(
        st.binary(max_size=300),
        mutated(genuine["proof"]),
        resigned(proof, attacker.signer),
        resigned(proof, MALLORY),
        mutated(genuine["claim"]),
    ), min_size=1, max_size=8)
    url = a.carrier.url.replace("http://", "ws://") + f"/p2p/channels/{cid}/stream"
    before = snapshot(a)
    wrong: list[str] = []

    held = attacker.stored_state(cid).sent.nonce  # what the carrier holds from us

    async def exchange(frames: list[bytes], text: str) -> list[Any]:
        """Every frame's answer: an Error each, and at most a repeat of the latest receipt."""
        answers: list[Any] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.send_str(text)  # text frames mean nothing on this stream
            for frame in frames:
                await ws.send_bytes(frame)
            while sum(isinstance(x, Error) for x in answers) < len(frames):
                msg = await ws.receive(timeout=10)
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    answers.append(msg.type)
                    break
                answers.append(decode_message(msg.data))
        return answers

    @FUZZ
    @given(frames=frames_st, text=st.text(max_size=50))
    def send(frames: list[bytes], text: str) -> None:
        answers = loop.run(exchange(frames, text), 60)
        bad = [x for x in answers if not isinstance(x, Error)
               and not (isinstance(x, Receipt) and x.nonce <= held)]
        if bad or sum(isinstance(x, Error) for x in answers) != len(frames):
            wrong.append(f"{[f.hex()[:80] for f in frames]} → {answers}")
        assert not bad, wrong[-1]

    send()
    assert not wrong, "\n".join(wrong[:10])
    assert snapshot(a) == before
    # the honest stream still works after all that
    paid = a.pay(a.manufacturer, cid, km=1)
    assert paid


# -- the logs of the whole run ---------------------------------------------------------------


def secrets_of(a: Arena) -> dict[str, str]:
    """Every secret the run's daemons hold, in the forms a log line could carry it."""
    found: dict[str, str] = {}
    for handle in (a.arbiter, a.manufacturer, a.carrier):
        found[f"{handle.name} admin token"] = handle.token
        key = bytes.fromhex((handle.directory / "node.key").read_text().strip())
        found[f"{handle.name} key (hex)"] = key.hex()
        found[f"{handle.name} key (HEX)"] = key.hex().upper()
        for name, encoder in (("base64", base64.b64encode), ("base64url",
                                                             base64.urlsafe_b64encode)):
            found[f"{handle.name} key ({name})"] = encoder(key).decode().rstrip("=")
    root = a.cluster.root
    for token in root.rglob("bank-token"):
        found[f"bank token {token.parent.name}"] = token.read_text().strip()
    for pem in root.rglob("tpp-key.pem"):
        body = "".join(line for line in pem.read_text().splitlines()
                       if line and not line.startswith("-----"))
        for i in range(0, len(body) - 48, 48):  # any 48 characters of the key's DER
            found[f"bank signing key {pem.parent.name} @{i}"] = body[i:i + 48]
    return {k: v for k, v in found.items() if len(v) >= 16}


def test_a_full_run_logs_no_secret(a: Arena, cid: str) -> None:
    a.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
    wait_settled_at_bank(a, cid, timeout_s=90)
    logs = sorted(a.cluster.root.rglob("*.log"))
    assert len(logs) >= 4, logs  # the bank, the arbiter and both companies
    secrets = secrets_of(a)
    assert len(secrets) > 12
    lines = 0
    leaks: list[str] = []
    for path in logs:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            lines += 1
            leaks += [f"{path.name}:{number}: {what}" for what, secret in secrets.items()
                      if secret in line]
    print(f"\nlogs: {lines} lines in {len(logs)} files, {len(secrets)} secrets looked for")
    assert lines > 50
    assert not leaks, "\n".join(leaks[:20])
