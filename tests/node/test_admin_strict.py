"""Strict admin input (issue 8): every malformed body is a 400 with a documented code, and
nothing in the node changes.

A real node (``node.app.running`` on loopback, real SQLite) holds an open channel and a held
proposal. Each case sends one malformed body to a route that would change state if the body
got through (force-close, pay, open, accept, reject) and checks the answer's status and code,
that the code is in ``x-error-codes`` of ``specs/admin-api.yaml`` with that status, and that
the database and the in-memory channels are exactly as before. A control shows that the same
requests with well-typed members are acted on. Then ``node.api.validate``'s schemas are
compared with the document member by member.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from yarl import URL

from node.api import validate
from node.storage.models import Channel, HeldProposal, OutgoingProof, Peer, Usage
from node.storage.models import Outbox as OutboxRow
from protocol import channel as ch
from protocol.errors import LocalProtocolError
from protocol.money import MAX_SCALE, parse_decimal
from protocol.simulation import Simulation
from protocol.tariff import MAX_LINES, UNIT_PATTERN, parse_tariff_line
from protocol.types import MAX_DISPUTE_WINDOW_MS

from .conftest import KM, RunningNode, free_port, make_config, open_sim, seed

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "specs" / "admin-api.yaml")
                      .read_text())
CODES: dict[str, list[Any]] = SPEC["x-error-codes"]


async def snapshot(node: RunningNode) -> dict[str, Any]:
    async with node.node.ctx.db() as session:
        tables = {}
        for model in (Channel, Peer, HeldProposal, Usage, OutboxRow, OutgoingProof):
            tables[model.__tablename__] = sorted(
                repr({c.name: getattr(row, c.key) for c in model.__table__.columns})
                for row in await session.scalars(select(model)))
    return {"tables": tables, "channels": dict(node.node.channels.states)}


@pytest.fixture
async def node(tmp_path: Path, start_node: Callable[..., Any]) -> tuple[RunningNode, str, str]:
    """A node (key ``peer``) with an OPEN channel and a held proposal."""
    sim = open_sim()
    stranger = Simulation.create(tariff=(KM,), opener_deposit=1_000, salt=b"\x07" * 16,
                                 labels=("stranger", "peer", "arbiter"))
    proposal = next(e.proposal for e in ch.propose(stranger.terms, stranger.opener,
                                                   now_ms=1).effects
                    if isinstance(e, ch.SendProposal))
    config = make_config(tmp_path / "peer", sim.peer)
    await seed(config, [sim.states[1]], peers=[
        (sim.opener, f"http://127.0.0.1:{free_port()}", "node"),
        (sim.arbiter, f"http://127.0.0.1:{free_port()}", "arbiter")])
    running = await start_node(config)
    async with running.node.ctx.db() as session, session.begin():
        session.add(HeldProposal(id=stranger.terms.channel_id.hex(),
                                 opener_id=stranger.opener.node_id.hex(),
                                 proposal=proposal.encode(), received_ms=1))
    return running, sim.terms.channel_id.hex(), stranger.terms.channel_id.hex()


async def send(node: RunningNode, method: str, path: str, raw: bytes | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"}
    async with node.http.request(method, URL(node.admin_url + path, encoded=True), data=raw,
                                 headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


OPEN = {"peer": "node", "arbiter": "arbiter", "deposit": "10.00 EUR", "tariff": ["km=0.01"]}
PAY = {"units": {"km": "1"}, "wait": False}
DEEP = b'{"units": ' + b"[" * 1000 + b"]" * 1000 + b"}"
HUGE_INT = b'{"units": {"km": "1"}, "repeat": ' + b"9" * 5000 + b"}"
LONG = b'{"reference": "' + b"a" * (validate.MAX_BODY_BYTES + 10) + b'"}'

CASES: list[tuple[str, str, str, bytes | None, str]] = [
    # (id, route, suffix, body, code); route "close", "pay", "open", "accept", "reject"
    ("force-string-false", "close", "", j({"force": "false"}), "BAD_FORCE"),
    ("force-number", "close", "", j({"force": 1}), "BAD_FORCE"),
    ("force-null", "close", "", j({"force": None}), "BAD_FORCE"),
    ("close-unknown", "close", "", j({"forced": True}), "UNKNOWN_FIELD"),
    ("close-array", "close", "", j([True]), "BAD_JSON"),
    ("close-string", "close", "", j("force"), "BAD_JSON"),
    ("close-not-json", "close", "", b"{force: true}", "BAD_JSON"),
    ("wait-string-false", "pay", "", j({**PAY, "wait": "false"}), "BAD_WAIT"),
    ("wait-number", "pay", "", j({**PAY, "wait": 0}), "BAD_WAIT"),
    ("repeat-zero", "pay", "", j({**PAY, "repeat": 0}), "BAD_REPEAT"),
    ("repeat-above", "pay", "", j({**PAY, "repeat": 1_000_001}), "BAD_REPEAT"),
    ("repeat-string", "pay", "", j({**PAY, "repeat": "5"}), "BAD_REPEAT"),
    ("repeat-float", "pay", "", j({**PAY, "repeat": 1.5}), "BAD_REPEAT"),
    ("repeat-bool", "pay", "", j({**PAY, "repeat": True}), "BAD_REPEAT"),
    ("repeat-5000-digits", "pay", "", HUGE_INT, "BAD_JSON"),
    ("depth-1000", "pay", "", DEEP, "BAD_JSON"),
    ("too-large", "pay", "", LONG, "BODY_TOO_LARGE"),
    ("nan", "pay", "", b'{"units": {"km": "1"}, "repeat": NaN}', "BAD_JSON"),
    ("twice", "pay", "", b'{"units": {"km": "1"}, "wait": true, "wait": false}', "BAD_JSON"),
    ("not-utf8", "pay", "", b'{"reference": "\xff"}', "BAD_JSON"),
    ("empty", "pay", "", b"", "BAD_JSON"),
    ("units-list", "pay", "", j({"units": [["km", "1"]]}), "BAD_UNITS"),
    ("units-number", "pay", "", j({"units": {"km": 1}}), "BAD_UNITS"),
    ("units-bad-name", "pay", "", j({"units": {"KM": "1"}}), "BAD_UNITS"),
    ("units-exponent", "pay", "", j({"units": {"km": "1e3"}}), "BAD_UNITS"),
    ("reference-long", "pay", "", j({**PAY, "reference": "x" * 65}), "BAD_REFERENCE"),
    # UTF-8 text is a reference (Lieferschein ü); control and bidi-override characters are not
    ("reference-bidi", "pay", "", j({**PAY, "reference": "INV-\u202e71"}), "BAD_REFERENCE"),
    ("reference-control", "pay", "", j({**PAY, "reference": "A\nB"}), "BAD_REFERENCE"),
    ("reference-number", "pay", "", j({**PAY, "reference": 4711}), "BAD_REFERENCE"),
    ("amount-number", "pay", "", j({"amount": 3.2}), "INVALID_AMOUNT"),
    ("amount-no-space", "pay", "", j({"amount": "3.20EUR"}), "INVALID_AMOUNT"),
    ("pay-unknown", "pay", "", j({**PAY, "force": True}), "UNKNOWN_FIELD"),
    ("scale-10-7", "open", "", j({**OPEN, "scale": 10**7}), "BAD_SCALE"),
    ("scale-negative", "open", "", j({**OPEN, "scale": -1}), "BAD_SCALE"),
    ("scale-13", "open", "", j({**OPEN, "scale": 13}), "BAD_SCALE"),
    ("scale-string", "open", "", j({**OPEN, "scale": "6"}), "BAD_SCALE"),
    ("tariff-number", "open", "", j({**OPEN, "tariff": 5}), "INVALID_TARIFF"),
    ("tariff-of-numbers", "open", "", j({**OPEN, "tariff": [5]}), "INVALID_TARIFF"),
    ("tariff-empty", "open", "", j({**OPEN, "tariff": []}), "INVALID_TARIFF"),
    ("tariff-17-lines", "open", "", j({**OPEN, "tariff": [f"u{i}=1" for i in range(17)]}),
     "INVALID_TARIFF"),
    ("window-400-digits", "open", "", j({**OPEN, "dispute_window": "9" * 400 + "h"}),
     "BAD_DURATION"),
    ("window-367-days", "open", "", j({**OPEN, "dispute_window": "367d"}), "BAD_DURATION"),
    ("window-number", "open", "", j({**OPEN, "dispute_window": 86_400_000}), "BAD_DURATION"),
    ("window-spaces", "open", "", j({**OPEN, "dispute_window": " 24h"}), "BAD_DURATION"),
    ("peer-number", "open", "", j({**OPEN, "peer": 5}), "BAD_PEER"),
    ("peer-empty", "open", "", j({**OPEN, "peer": ""}), "BAD_PEER"),
    ("peer-long", "open", "", j({**OPEN, "peer": "n" * 101}), "BAD_PEER"),
    ("arbiter-null", "open", "", j({**OPEN, "arbiter": None}), "BAD_ARBITER"),
    ("deposit-number", "open", "", j({**OPEN, "deposit": 5000}), "INVALID_AMOUNT"),
    ("peer-deposit-number", "open", "", j({**OPEN, "peer_deposit": 100}), "INVALID_AMOUNT"),
    ("open-missing-peer", "open", "", j({k: v for k, v in OPEN.items() if k != "peer"}),
     "MISSING_FIELD"),
    ("open-missing-tariff", "open", "", j({k: v for k, v in OPEN.items() if k != "tariff"}),
     "MISSING_FIELD"),
    ("open-unknown", "open", "", j({**OPEN, "wait": True}), "UNKNOWN_FIELD"),
    ("accept-member", "accept", "", j({"force": True}), "UNKNOWN_FIELD"),
    ("accept-array", "accept", "", j([]), "BAD_JSON"),
    ("reject-member", "reject", "", j({"why": "no"}), "UNKNOWN_FIELD"),
    ("pay-long-id", "pay", "f" * 65, j(PAY), "BAD_CHANNEL_ID"),
]


def route(kind: str, cid: str, held: str, suffix: str) -> tuple[str, str]:
    if kind == "open":
        return "POST", "/api/channels"
    target = suffix or (held if kind in ("accept", "reject") else cid)
    return "POST", f"/api/channels/{target}/{kind}"


@pytest.mark.parametrize(("kind", "suffix", "raw", "code"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_a_malformed_body_is_a_400_and_changes_nothing(
    node: tuple[RunningNode, str, str], kind: str, suffix: str, raw: bytes | None, code: str
) -> None:
    running, cid, held = node
    before = await snapshot(running)
    method, path = route(kind, cid, held, suffix)
    started = time.monotonic()
    status, body = await send(running, method, path, raw)
    elapsed = time.monotonic() - started
    assert (status, body["error"]["code"]) == (400, code), body
    assert CODES[code][0] == 400, f"{code} is not documented as a 400"
    assert elapsed < 2.0, f"{elapsed:.1f} s to refuse it"  # scale 10**7 took 14 s
    assert await snapshot(running) == before
    state = running.node.channels.states[cid]
    assert (state.phase, state.sent.nonce) == (ch.Phase.OPEN, 0)


async def test_the_same_requests_well_typed_are_acted_on(
    node: tuple[RunningNode, str, str],
) -> None:
    """The control: each route above does change the node when its body is right."""
    running, cid, held = node
    status, body = await send(running, "POST", f"/api/channels/{cid}/pay", j(PAY))
    assert status == 200, body
    assert body["nonce_sent"] == 1
    status, body = await send(running, "POST", f"/api/channels/{held}/reject", j({}))
    assert (status, body["phase"]) == (200, "rejected")
    status, body = await send(running, "POST", f"/api/channels/{cid}/close",
                              j({"force": True}))
    assert status == 200, body
    assert body["phase"] == "disputed"


def test_a_huge_scale_is_refused_before_any_arithmetic() -> None:
    """At the source too: protocol.money never computes 10**scale of an unchecked scale."""
    started = time.monotonic()
    for call in (lambda: parse_decimal("1.5", 10**7),
                 lambda: parse_tariff_line("km=0.01", scale=10**7),
                 lambda: parse_decimal("1", -1)):
        with pytest.raises(LocalProtocolError):
            call()
    assert time.monotonic() - started < 0.5


def test_the_guards_accept_what_the_api_takes() -> None:
    body = {"units": {"km": "12.5"}, "reference": "SHIPMENT-4711", "repeat": 1_000_000,
            "wait": True}
    assert validate.PAY.check(validate.parse_json(j(body))) == body
    nested = b'{"a": ' + b"[" * (validate.MAX_DEPTH - 1) + b"]" * (validate.MAX_DEPTH - 1) + b"}"
    assert validate.parse_json(nested)["a"] == [[[[[[[]]]]]]]
    assert validate.parse_json(b'{"s": "[[[[[[[[[[[[\\"{{{{{{{{{{"}')["s"].startswith("[")
    assert validate.parse_json(b'{"n": -' + b"9" * 30 + b"}")["n"] == -int("9" * 30)


# -- the code and the document agree ------------------------------------------------------------

ANNOTATIONS = frozenset({"description", "default", "examples", "example"})


def resolved(schema: Any) -> Any:
    """`schema` with every $ref inlined (its siblings kept) and annotations dropped."""
    if isinstance(schema, list):
        return [resolved(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        out.update(resolved(SPEC["components"]["schemas"][name]))
    for key, value in schema.items():
        if key != "$ref" and key not in ANNOTATIONS:
            out[key] = resolved(value)
    return out


@pytest.mark.parametrize("body", validate.REQUEST_BODIES, ids=lambda b: b.schema_name)
def test_each_request_schema_is_the_documents(body: validate.Body) -> None:
    spec = SPEC["components"]["schemas"][body.schema_name]
    assert spec["additionalProperties"] is False, "request bodies are closed"
    assert set(spec.get("required", [])) == body.required
    assert set(spec["properties"]) == set(body.fields)
    for name, field in body.fields.items():
        assert resolved(spec["properties"][name]) == field.schema(), name


def test_every_code_the_checks_answer_is_documented() -> None:
    codes = {"BAD_JSON", "BODY_TOO_LARGE", "UNKNOWN_FIELD", "MISSING_FIELD", "BAD_CHANNEL_ID"}
    for body in validate.REQUEST_BODIES:
        for field in body.fields.values():
            inner = getattr(field, "inner", None) or getattr(field, "item", None) or field
            codes.add(inner.code)
    assert {c: CODES.get(c, [None])[0] for c in codes} == dict.fromkeys(codes, 400)


def test_the_limits_are_the_protocols() -> None:
    assert validate.MAX_SCALE == MAX_SCALE
    assert validate.MAX_TARIFF_LINES == MAX_LINES
    assert validate.UNIT.pattern == f"^{UNIT_PATTERN}$"
    # 11 digits of ms hold the longest window; the handler refuses above it
    assert len(str(MAX_DISPUTE_WINDOW_MS)) == 11


async def test_a_wrong_method_is_a_405_naming_the_allowed_ones(
    node: tuple[RunningNode, str, str],
) -> None:
    """RFC 9110 §15.5.6: a 405 carries `Allow`; the body says the same, and nothing changes."""
    running, cid, _ = node
    before = await snapshot(running)
    headers = {"Authorization": f"Bearer {running.token}"}
    async with running.http.delete(f"{running.admin_url}/api/channels/{cid}/pay",
                                   headers=headers) as resp:
        body = await resp.json()
        allow = resp.headers.get("Allow", "")
        assert resp.status == 405
    assert body["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in {m.strip() for m in allow.split(",")}, allow
    assert f"(allowed: {allow})" in body["error"]["message"]
    assert await snapshot(running) == before
