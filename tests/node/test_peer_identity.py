"""`peer add` believes only a fresh identity signed by the key it names (issue 8, attack 3).

Real daemons in this process (``node.app.running`` on loopback ports, real SQLite): a victim
node, the real arbiter, a carrier; the impostor is a small aiohttp server in the test that holds
only its own key. Every refusal must leave the victim's peer table exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.app import running
from node.config import Config, load_config, write_private
from node.peers import ANNOUNCED_FILE
from node.storage.models import Peer
from protocol.crypto import Signer
from protocol.errors import ErrorCode
from protocol.messages import EMPTY_SIGNATURE, BankAccount, NodeInfo
from protocol.records import decode_message
from protocol.simulation import default_accounts
from rails.openbanking import generate_key_pair

from .conftest import RunningNode, free_port, make_config, open_sim, seed

MALLORY = Signer.from_label("mallory")
MALLORY_ACCOUNT = BankAccount("UK.OBIE.SortCodeAccountNumber", "66666600000066", "Mallory Ltd")
StartNode = Callable[[Config], Awaitable[RunningNode]]


def with_bank(config: Config, account: BankAccount) -> Config:
    """The config with a bank account (an Open Banking rail nobody calls in these tests)."""
    path = config.data_dir / "config.toml"
    text = path.read_text()
    head, _, rest = text.partition("[bank]\n")
    _old, sep, tail = rest.partition("\n[")
    token = config.data_dir / "bank-token"
    token.unlink(missing_ok=True)
    write_private(token, b"unused")
    key = config.data_dir / "tpp-key.pem"
    if not key.exists():
        generate_key_pair(key)
    bank = (f'rail = "openbanking"\n\n[rails.openbanking]\nurl = "http://127.0.0.1:9"\n'
            f'scheme = "{account.scheme}"\nidentification = "{account.identification}"\n'
            f'name = "{account.name}"\naccount_id = "unused"\nclient_id = "unused"\n'
            f'org_id = "0015800001TEST0001"\nsoftware_statement_id = "UNUSED01"\n'
            f'token_file = "{token}"\nkey_file = "{key}"\n')
    path.write_text(head + "[bank]\n" + bank + sep + tail)
    return load_config(config.data_dir)


def url_of(node: RunningNode) -> str:
    return node.peer_url


async def peers(node: RunningNode) -> dict[str, Peer]:
    return {p.node_id: p for p in await node.node.ctx.all_peers()}


def snapshot(rows: dict[str, Peer]) -> dict[str, tuple[Any, ...]]:
    return {k: (p.url, p.name, p.role, p.info, p.issued_ms) for k, p in rows.items()}


@pytest.fixture
async def world(tmp_path: Path, start_node: StartNode) -> dict[str, Any]:
    """A victim node, the arbiter (with its escrow account) and a carrier, all running."""
    sim = open_sim()
    _, carrier_account, escrow_account = default_accounts()
    arbiter = await start_node(with_bank(
        make_config(tmp_path / "arbiter", sim.arbiter, role="arbiter"), escrow_account))
    carrier = await start_node(with_bank(make_config(tmp_path / "carrier", sim.peer),
                                         carrier_account))
    victim = await start_node(make_config(tmp_path / "victim", sim.opener))
    return {"sim": sim, "arbiter": arbiter, "carrier": carrier, "victim": victim,
            "escrow_account": escrow_account, "tmp": tmp_path}


class Impostor:
    """An aiohttp server the attacker runs: `/p2p/info` and `/p2p/identity` answer whatever
    `make` builds from the challenge it was asked."""

    def __init__(self, make: Callable[[bytes], Awaitable[bytes]]) -> None:
        self.make = make
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> Impostor:
        async def identity(request: web.Request) -> web.Response:
            challenge = bytes.fromhex(request.query.get("challenge", ""))
            return web.Response(body=await self.make(challenge),
                                content_type="application/msgpack")

        async def info(request: web.Request) -> web.Response:
            raise AssertionError("nothing may ask /p2p/info any more")

        app = web.Application()
        app.add_routes([web.get("/p2p/identity", identity), web.get("/p2p/info", info)])
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def claim(node_id: bytes, url: str, challenge: bytes, *, signer: Signer | None,
          account: BankAccount | None = MALLORY_ACCOUNT, role: str = "arbiter",
          issued_ms: int | None = None) -> NodeInfo:
    info = NodeInfo(node_id, "escrow", role, url, account,  # type: ignore[arg-type]
                    int(time.time() * 1000) if issued_ms is None else issued_ms, challenge,
                    EMPTY_SIGNATURE)
    return info if signer is None else info.signed_by(signer)


async def fetch_identity(url: str, challenge: bytes) -> NodeInfo:
    async with aiohttp.ClientSession() as http, http.get(
            f"{url}/p2p/identity", params={"challenge": challenge.hex()}) as resp:
        assert resp.status == 200
        return NodeInfo.decode(await resp.read())


# -- the identity endpoint ---------------------------------------------------------------------


async def test_identity_is_signed_and_echoes_the_challenge(world: dict[str, Any]) -> None:
    arbiter: RunningNode = world["arbiter"]
    challenge = bytes(range(32))
    before = int(time.time() * 1000)
    info = await fetch_identity(url_of(arbiter), challenge)
    info.verify_signature(world["sim"].arbiter.node_id)
    assert info.node_id == world["sim"].arbiter.node_id
    assert (info.role, info.url, info.challenge) == ("arbiter", arbiter.config.public_url,
                                                     challenge)
    assert info.account == world["escrow_account"]
    assert before <= info.issued_ms <= int(time.time() * 1000)


@pytest.mark.parametrize("query", ["", "?challenge=", "?challenge=00", "?challenge=" + "ab" * 15,
                                   "?challenge=" + "zz" * 16, "?challenge=" + "ab" * 64])
async def test_identity_refuses_a_bad_challenge(world: dict[str, Any], query: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(
            f"{url_of(world['arbiter'])}/p2p/identity{query}") as resp:
        assert resp.status == 400
        answer = decode_message(await resp.read())
    assert ErrorCode(answer.code) is ErrorCode.INVALID_FIELD  # type: ignore[attr-defined]


# -- peer add ------------------------------------------------------------------------------------


async def test_peer_add_stores_the_signed_record(world: dict[str, Any]) -> None:
    victim, arbiter = world["victim"], world["arbiter"]
    status, body = await victim.admin("POST", "/api/peers", {"url": url_of(arbiter)})
    assert status == 201, body
    assert (body["status"], body["changed"]) == ("added", [])
    assert body["node_id"] == world["sim"].arbiter.node_id.hex()
    assert body["role"] == "arbiter"
    assert body["account"] == {"scheme": world["escrow_account"].scheme,
                               "identification": world["escrow_account"].identification,
                               "name": world["escrow_account"].name}
    row = (await peers(victim))[body["node_id"]]
    stored = json.loads(row.info)
    record = NodeInfo.decode(bytes.fromhex(stored["record"]))
    record.verify_signature(world["sim"].arbiter.node_id)
    assert row.issued_ms == record.issued_ms == body["issued_ms"] > 0
    # again: nothing changed, so nothing to report
    status, again = await victim.admin("POST", "/api/peers", {"url": url_of(arbiter) + "/"})
    assert (status, again["status"], again["changed"]) == (200, "unchanged", [])


@pytest.mark.parametrize("signer", [None, MALLORY], ids=["unsigned", "signed-by-impostor"])
async def test_impostor_claiming_the_arbiters_id_is_refused(
        world: dict[str, Any], signer: Signer | None) -> None:
    victim = world["victim"]
    arbiter_id = world["sim"].arbiter.node_id

    async def make(challenge: bytes) -> bytes:
        return claim(arbiter_id, impostor.url, challenge, signer=signer).encode()

    async with Impostor(make) as impostor:
        status, body = await victim.admin("POST", "/api/peers", {"url": impostor.url})
        assert (status, body["error"]["code"]) == (502, "PEER_NOT_AUTHENTIC"), body
        assert "not signed by that key" in body["error"]["message"]
        assert await peers(victim) == {}
        # with the real arbiter known, its record is untouched by the impostor
        status, _ = await victim.admin("POST", "/api/peers", {"url": url_of(world["arbiter"])})
        assert status == 201
        before = snapshot(await peers(victim))
        status, body = await victim.admin("POST", "/api/peers", {"url": impostor.url})
        assert (status, body["error"]["code"]) == (502, "PEER_NOT_AUTHENTIC")
        assert snapshot(await peers(victim)) == before
        assert (await victim.admin("GET", "/api/peers"))[1]["peers"][0]["account"][
            "identification"] == world["escrow_account"].identification


async def test_replayed_identity_of_the_real_arbiter_is_refused(world: dict[str, Any]) -> None:
    """The impostor serves a genuine record the arbiter signed for another challenge (its own),
    with the real signature: it proves nothing about who answers now."""
    victim, arbiter = world["victim"], world["arbiter"]
    recorded = await fetch_identity(url_of(arbiter), b"\x07" * 16)

    async def make(challenge: bytes) -> bytes:
        return recorded.encode()

    async with Impostor(make) as impostor:
        status, body = await victim.admin("POST", "/api/peers", {"url": impostor.url})
    assert (status, body["error"]["code"]) == (502, "PEER_NOT_AUTHENTIC"), body
    assert "another challenge" in body["error"]["message"]
    assert await peers(victim) == {}


async def test_pinned_id_mismatch_is_refused(world: dict[str, Any]) -> None:
    victim, carrier = world["victim"], world["carrier"]
    arbiter_id = world["sim"].arbiter.node_id.hex()
    carrier_id = world["sim"].peer.node_id.hex()
    status, body = await victim.admin("POST", "/api/peers",
                                      {"url": url_of(carrier), "id": arbiter_id})
    assert (status, body["error"]["code"]) == (409, "PEER_ID_MISMATCH")
    assert body["error"]["message"] == (f"{url_of(carrier)} answered as {carrier_id}, "
                                        f"you pinned {arbiter_id}")
    assert await peers(victim) == {}
    for bad in ("abc", arbiter_id[:63], 7):
        status, body = await victim.admin("POST", "/api/peers", {"url": url_of(carrier),
                                                                 "id": bad})
        assert (status, body["error"]["code"]) == (400, "BAD_ID")
    status, body = await victim.admin("POST", "/api/peers",
                                      {"url": url_of(carrier), "id": carrier_id.upper()})
    assert (status, body["node_id"]) == (201, carrier_id)


async def test_peer_add_answers_say_what_failed(world: dict[str, Any]) -> None:
    victim = world["victim"]
    status, body = await victim.admin("POST", "/api/peers", {"url": f"http://127.0.0.1:{free_port()}"})
    assert (status, body["error"]["code"]) == (502, "PEER_UNAVAILABLE")
    for bad in ({"url": "ftp://x"}, {"url": "http://a b"}, {"url": 5}, {}):
        status, body = await victim.admin("POST", "/api/peers", bad)
        assert (status, body["error"]["code"]) == (400, "BAD_URL"), bad
    status, body = await victim.admin("POST", "/api/peers", {"url": url_of(victim)})
    assert (status, body["error"]["code"]) == (400, "SELF")
    status, body = await victim.admin("POST", "/api/peers", {"url": url_of(victim), "x": 1})
    assert (status, body["error"]["code"]) == (400, "UNKNOWN_FIELD")

    async def html(challenge: bytes) -> bytes:
        return b"<html>404</html>"

    async with Impostor(html) as server:
        status, body = await victim.admin("POST", "/api/peers", {"url": server.url})
    assert (status, body["error"]["code"]) == (502, "PEER_NOT_AUTHENTIC")

    async def huge(challenge: bytes) -> bytes:
        return b"\x00" * (1024 * 1024)

    async with Impostor(huge) as server:
        status, body = await victim.admin("POST", "/api/peers", {"url": server.url})
    assert (status, body["error"]["code"]) == (502, "PEER_NOT_AUTHENTIC")
    assert "more than 65536 bytes" in body["error"]["message"]
    assert await peers(victim) == {}


async def test_known_peer_moves_with_a_fresh_signed_record(
        world: dict[str, Any], start_node: StartNode) -> None:
    """The carrier's key answers at a second address: re-adding it there is an explicit,
    reported change; the old address no longer stands."""
    victim, carrier = world["victim"], world["carrier"]
    status, first = await victim.admin("POST", "/api/peers", {"url": url_of(carrier)})
    assert status == 201
    moved = await start_node(with_bank(
        make_config(world["tmp"] / "moved" / "carrier", world["sim"].peer), default_accounts()[1]))
    status, body = await victim.admin("POST", "/api/peers", {"url": url_of(moved)})
    assert status == 200, body
    assert (body["status"], body["changed"], body["url"]) == ("changed", ["url"], url_of(moved))
    assert body["issued_ms"] > first["issued_ms"]
    row = (await peers(victim))[first["node_id"]]
    assert row.url == url_of(moved)


async def test_account_change_of_a_node_is_reported(
        world: dict[str, Any], start_node: StartNode) -> None:
    victim, carrier = world["victim"], world["carrier"]
    assert (await victim.admin("POST", "/api/peers", {"url": url_of(carrier)}))[0] == 201
    other = BankAccount("UK.OBIE.SortCodeAccountNumber", "40000100000099", "Carrier Ltd")
    moved = await start_node(with_bank(
        make_config(world["tmp"] / "moved" / "carrier", world["sim"].peer), other))
    status, body = await victim.admin("POST", "/api/peers", {"url": url_of(moved)})
    assert (status, body["changed"]) == (200, ["url", "account"])
    assert body["account"]["identification"] == "40000100000099"


async def test_arbiter_account_change_refused_while_it_holds_our_escrow(
        tmp_path: Path, start_node: StartNode) -> None:
    """The victim has an open channel whose terms name the arbiter's escrow account: a newer,
    genuinely signed record with another account is refused (409), by add and by announce."""
    sim = open_sim()
    escrow = sim.terms.escrow_account
    arbiter = await start_node(with_bank(
        make_config(tmp_path / "arbiter", sim.arbiter, role="arbiter"), escrow))
    victim_config = make_config(tmp_path / "victim", sim.opener)
    await seed(victim_config, [sim.states[0]])
    victim = await start_node(victim_config)
    assert (await victim.admin("POST", "/api/peers", {"url": url_of(arbiter)}))[0] == 201
    before = snapshot(await peers(victim))
    elsewhere = replace(escrow, identification="40000100000077")
    moved = await start_node(with_bank(
        make_config(tmp_path / "moved" / "arbiter", sim.arbiter, role="arbiter"), elsewhere))
    status, body = await victim.admin("POST", "/api/peers", {"url": url_of(moved)})
    assert (status, body["error"]["code"]) == (409, "ACCOUNT_CHANGE_REFUSED"), body
    assert "terms we signed" in body["error"]["message"]
    announced = claim(sim.arbiter.node_id, url_of(moved), b"", signer=sim.arbiter,
                      account=elsewhere)
    status, code = await announce(victim, announced)
    assert (status, code) == (400, ErrorCode.INVALID_STATE)
    assert snapshot(await peers(victim)) == before


async def test_rows_written_before_signed_records_are_not_believed(
        tmp_path: Path, start_node: StartNode) -> None:
    """A peer row from an unsigned `/p2p/info` answer shows no account; `peer add` replaces it
    with the signed record and says so."""
    sim = open_sim()
    arbiter = await start_node(with_bank(
        make_config(tmp_path / "arbiter", sim.arbiter, role="arbiter"), default_accounts()[2]))
    victim_config = make_config(tmp_path / "victim", sim.opener)
    await seed(victim_config, [], peers=[(sim.arbiter, url_of(arbiter), "arbiter")])
    victim = await start_node(victim_config)
    listed = (await victim.admin("GET", "/api/peers"))[1]["peers"]
    assert [(p["account"], p["issued_ms"]) for p in listed] == [(None, 0)]
    status, body = await victim.admin("POST", "/api/peers", {"url": url_of(arbiter)})
    assert (status, body["status"], body["changed"]) == (200, "changed", ["account"])
    assert body["account"]["identification"] == default_accounts()[2].identification


# -- announcements ----------------------------------------------------------------------------


async def announce(node: RunningNode, info: NodeInfo | bytes) -> tuple[int, ErrorCode | None]:
    data = info if isinstance(info, bytes) else info.encode()
    async with aiohttp.ClientSession() as http, http.post(
            f"{node.peer_url}/p2p/announce", data=data,
            headers={"Content-Type": "application/msgpack"}) as resp:
        body = await resp.read()
        if not body:
            return resp.status, None
        return resp.status, ErrorCode(decode_message(body).code)  # type: ignore[attr-defined]


@pytest.fixture
async def known_carrier(world: dict[str, Any]) -> dict[str, Any]:
    victim, carrier = world["victim"], world["carrier"]
    status, body = await victim.admin("POST", "/api/peers", {"url": url_of(carrier)})
    assert status == 201
    return {**world, "held": body}


def carrier_record(world: dict[str, Any], url: str, issued_ms: int, **kw: Any) -> NodeInfo:
    sim = world["sim"]
    return claim(sim.peer.node_id, url, b"", role=kw.pop("role", "node"),
                 account=kw.pop("account", default_accounts()[1]), issued_ms=issued_ms,
                 signer=kw.pop("signer", sim.peer))


async def test_announce_with_an_older_record_is_refused(known_carrier: dict[str, Any]) -> None:
    victim, held = known_carrier["victim"], known_carrier["held"]
    before = snapshot(await peers(victim))
    for issued in (held["issued_ms"] - 1, held["issued_ms"]):
        old = carrier_record(known_carrier, "http://10.9.9.9:1", issued)
        assert await announce(victim, old) == (400, ErrorCode.NONCE_REPLAY)
    assert snapshot(await peers(victim)) == before


async def test_announce_newer_signed_record_moves_the_peer(known_carrier: dict[str, Any]) -> None:
    victim, held = known_carrier["victim"], known_carrier["held"]
    new = carrier_record(known_carrier, "http://10.9.9.9:7", held["issued_ms"] + 1)
    assert await announce(victim, new) == (204, None)
    row = (await peers(victim))[held["node_id"]]
    assert (row.url, row.issued_ms) == ("http://10.9.9.9:7", held["issued_ms"] + 1)
    assert await announce(victim, new) == (204, None)  # the same record again changes nothing
    assert (await peers(victim))[held["node_id"]].url == "http://10.9.9.9:7"


async def test_announce_refusals(known_carrier: dict[str, Any]) -> None:
    victim, held = known_carrier["victim"], known_carrier["held"]
    before = snapshot(await peers(victim))
    newer = held["issued_ms"] + 10
    cases = [
        # signed by another key than the one it names
        (carrier_record(known_carrier, "http://10.9.9.9:7", newer, signer=MALLORY),
         ErrorCode.BAD_SIGNATURE),
        # a challenged identity (answers one asker only) is no announcement
        (replace(carrier_record(known_carrier, "http://10.9.9.9:7", newer, signer=None),
                 challenge=b"\x01" * 16).signed_by(known_carrier["sim"].peer),
         ErrorCode.INVALID_FIELD),
        # the role does not change under one key
        (carrier_record(known_carrier, "http://10.9.9.9:7", newer, role="arbiter"),
         ErrorCode.INVALID_FIELD),
        # a key nobody added
        (claim(MALLORY.node_id, "http://10.9.9.9:7", b"", signer=MALLORY, role="node"),
         ErrorCode.NOT_A_PARTY),
        # from far in the future (it would make every later honest record look old)
        (carrier_record(known_carrier, "http://10.9.9.9:7", newer + 86_400_000),
         ErrorCode.INVALID_FIELD),
    ]
    for info, code in cases:
        assert await announce(victim, info) == (400, code)
    assert (await announce(victim, b"\x93\x0f\x01\x00"))[0] == 400
    assert snapshot(await peers(victim)) == before


async def test_a_node_that_moved_announces_itself(world: dict[str, Any]) -> None:
    """The carrier restarts at a new address: at start it sends its known peers a newer signed
    record, and the victim follows it; a restart without a change announces nothing."""
    victim = world["victim"]
    config = with_bank(make_config(world["tmp"] / "moved" / "carrier", world["sim"].peer),
                       default_accounts()[1])
    async with running(config) as node:
        assert (await victim.admin("POST", "/api/peers", {"url": config.public_url}))[0] == 201
        carrier = RunningNode(node, config, config.token_path.read_text().strip(), victim.http)
        assert (await carrier.admin("POST", "/api/peers", {"url": victim.peer_url}))[0] == 201
        assert (await peers(victim))[config_id(config)].url == config.public_url
    held = (await peers(victim))[config_id(config)]
    assert json.loads((config.data_dir / ANNOUNCED_FILE).read_text())["url"] == config.public_url
    async with running(config):
        await asyncio.sleep(0.5)
    assert snapshot(await peers(victim)) == snapshot({held.node_id: held})
    path = config.data_dir / "config.toml"
    new_port = free_port()
    path.write_text(path.read_text().replace(str(config.listen[1]), str(new_port)))
    moved = load_config(config.data_dir)
    assert moved.public_url == f"http://127.0.0.1:{new_port}"
    async with running(moved):
        for _ in range(100):
            row = (await peers(victim))[config_id(config)]
            if row.url == moved.public_url:
                break
            await asyncio.sleep(0.05)
        assert (row.url, row.issued_ms > held.issued_ms) == (moved.public_url, True)
    assert json.loads((config.data_dir / ANNOUNCED_FILE).read_text())["url"] == moved.public_url


def config_id(config: Config) -> str:
    return Signer(bytes.fromhex(config.key_path.read_text().strip())).node_id.hex()


async def test_cli_peer_add_with_a_pin(world: dict[str, Any]) -> None:
    """`meterline peer add URL --id HEX` as the operator types it (a subprocess)."""
    import sys

    victim, carrier = world["victim"], world["carrier"]
    carrier_id, arbiter_id = world["sim"].peer.node_id.hex(), world["sim"].arbiter.node_id.hex()

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "node.cli", "peer", "add", *args,
            "--data-dir", str(victim.config.data_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await cli(url_of(carrier), "--id", arbiter_id)
    assert code == 3  # refused by the node (node.cli.exits)
    assert f"answered as {carrier_id}, you pinned {arbiter_id}" in out
    assert await peers(victim) == {}
    assert await cli(url_of(carrier), "--id", carrier_id) == (
        0, f"added node carrier {carrier_id}\n")
    assert await cli(url_of(carrier)) == (0, f"unchanged node carrier {carrier_id}\n")
