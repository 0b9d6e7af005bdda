"""The acceptance policy (issue 8, attacks 4 and 8): what a node takes of a proposal, from whom.

A real node (``node.app.running`` on loopback, real SQLite) receives signed proposals over its
peer API from openers that sign with their own keys: an allow-listed opener asking more than its
allowance is held for the operator (never auto-accepted and funded), terms outside ``[policy]``
are refused from anyone, and the held queue is bounded per proposer and for strangers so that
fresh keys never crowd out a known peer. ``meterline channel reject`` (a subprocess of the CLI)
deletes a held proposal. The config side (``[[peers.allowed]]``) is checked with real files.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from node.channels import MAX_HELD_PER_PROPOSER, MAX_HELD_PROPOSALS
from node.config import Allowance, ConfigError, load_config
from node.peers import info_json
from node.storage.models import Channel, HeldProposal, Peer
from node.storage.models import Outbox as OutboxRow
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ErrorCode
from protocol.messages import (
    EMPTY_SIGNATURE,
    BankAccount,
    ChannelAcceptance,
    ChannelProposal,
    ChannelTerms,
    NodeInfo,
    Refusal,
)
from protocol.records import decode_message
from protocol.simulation import default_accounts
from protocol.tariff import parse_tariff_line
from protocol.types import MinorUnits

from .conftest import RunningNode, free_port, make_config, seed

HOUR_MS = 3_600_000
KM = parse_tariff_line("km=0.01", scale=6)
US = Signer.from_label("peer")
ARBITER = Signer.from_label("arbiter")
KNOWN = Signer.from_label("known-peer")
"""An opener in our peer table (the operator added it), not on the allow-list."""
ALLOWED = Signer.from_label("allowed-opener")
"""On the allow-list with max_peer_deposit = 500.00 EUR, EUR only, window 1 h .. 2 days."""
BARE = Signer.from_label("bare-opener")
"""On the allow-list as a bare id (default limits: it may ask us to deposit nothing)."""


def terms(opener: Signer, *, salt: int = 0, opener_deposit: int = 10_000,
          peer_deposit: int = 0, window_ms: int = 24 * HOUR_MS,
          currency: str = "EUR") -> ChannelTerms:
    """Terms `opener` proposes to us (deposits in minor units)."""
    accounts = default_accounts()
    return ChannelTerms(opener.node_id, US.node_id, ARBITER.node_id, currency, 6,
                        MinorUnits(opener_deposit), MinorUnits(peer_deposit), (KM,), window_ms,
                        accounts[0], accounts[1], accounts[2], salt.to_bytes(16, "big"))


def signed(t: ChannelTerms, opener: Signer) -> ChannelProposal:
    """The proposal as an opener signs it with its own key, whatever our protocol code (which
    refuses to propose a window outside 1 s .. 366 days) would say."""
    return ChannelProposal(t, EMPTY_SIGNATURE).signed_by(opener)


@dataclass
class Target:
    node: RunningNode
    http: aiohttp.ClientSession

    async def propose(self, t: ChannelTerms, opener: Signer) -> tuple[int, Any]:
        """POST the signed proposal; (status, decoded answer or None for an empty body)."""
        async with self.http.post(f"{self.node.peer_url}/p2p/proposal",
                                  data=signed(t, opener).encode()) as resp:
            body = await resp.read()
            return resp.status, decode_message(body) if body else None

    async def held(self) -> dict[str, HeldProposal]:
        return {h.id: h for h in await self.node.node.channels.held()}

    async def count(self, model: Any) -> int:
        async with self.node.node.ctx.db() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    async def listing(self) -> dict[str, dict[str, Any]]:
        status, body = await self.node.admin("GET", "/api/channels")
        assert status == 200, body
        return {p["id"]: p for p in body["proposals"]}


def refused(answer: tuple[int, Any], code: ErrorCode, text: str) -> None:
    status, message = answer
    assert status == 400, answer
    assert isinstance(message, Refusal), answer  # signed by the node that refuses
    assert ErrorCode(message.code) is code, message
    assert text in message.message, message


EXTRA = f"""
[[peers.allowed]]
node_id = "{ALLOWED.node_id.hex()}"
max_peer_deposit = "500.00 EUR"
currencies = ["EUR"]
min_dispute_window_ms = {HOUR_MS}
max_dispute_window_ms = {48 * HOUR_MS}
"""


@pytest.fixture
async def peer(tmp_path: Path, start_node: Callable[..., Any]) -> Any:
    """Our node (key ``peer``) with a bank account, the arbiter and KNOWN in its peer table,
    ALLOWED with limits and BARE as a bare id on its allow-list."""
    config = make_config(tmp_path / "peer", US, allow=[BARE.node_id.hex()])
    account = default_accounts()[1]
    path = config.data_dir / "config.toml"
    path.write_text(path.read_text().replace(
        "[bank]\n", f'[bank]\nrail = "sepa"\nurl = "http://127.0.0.1:9"\n'
        f'scheme = "{account.scheme}"\nidentification = "{account.identification}"\n'
        f'name = "{account.name}"\n') + EXTRA)
    config = load_config(config.data_dir)
    await seed(config, [], peers=[(ARBITER, f"http://127.0.0.1:{free_port()}", "arbiter"),
                                  (KNOWN, f"http://127.0.0.1:{free_port()}", "node")])
    node = await start_node(config)
    escrow = default_accounts()[2]
    async with node.node.ctx.db() as session, session.begin():
        arbiter = await session.get(Peer, ARBITER.node_id.hex())
        assert arbiter is not None
        record = NodeInfo(ARBITER.node_id, "arbiter", "arbiter", arbiter.url, escrow, 1,
                          b"", EMPTY_SIGNATURE).signed_by(ARBITER)
        arbiter.info, arbiter.issued_ms = info_json(record), 1
    async with aiohttp.ClientSession() as http:
        yield Target(node, http)


# -- allowances -------------------------------------------------------------------------------


async def test_an_allowed_opener_asking_a_large_deposit_of_us_is_held_not_funded(
    peer: Target,
) -> None:
    """Attack 4: deposit 0 for itself, a large one for us. Held, with the reason; no channel,
    no registration, no deposit leaves the node."""
    greedy = terms(ALLOWED, opener_deposit=0, peer_deposit=4_000_000)  # 40,000.00 EUR
    assert await peer.propose(greedy, ALLOWED) == (202, None)
    bare = terms(BARE, opener_deposit=0, peer_deposit=1)  # even 0.01 EUR: bare means nothing
    assert await peer.propose(bare, BARE) == (202, None)
    assert await peer.count(Channel) == 0
    assert await peer.count(OutboxRow) == 0
    assert peer.node.node.channels.states == {}
    listing = await peer.listing()
    reason = listing[greedy.channel_id.hex()]["reason"]
    assert "40000.00 EUR" in reason
    assert "500.00 EUR" in reason
    assert listing[greedy.channel_id.hex()]["deposit"]["ours"] == {
        "amount": "40000.00", "currency": "EUR"}
    assert "may ask at most nothing" in listing[bare.channel_id.hex()]["reason"]


@pytest.mark.parametrize(("changes", "why"), [
    ({"window_ms": 72 * HOUR_MS}, "outside this opener's"),
    ({"currency": "USD"}, "currency USD"),
    ({"peer_deposit": 50_001}, "at most 500.00 EUR"),
])
async def test_outside_its_allowance_is_held_with_the_reason(
    peer: Target, changes: dict[str, Any], why: str
) -> None:
    t = terms(ALLOWED, **changes)
    assert await peer.propose(t, ALLOWED) == (202, None)
    assert await peer.count(Channel) == 0
    assert why in (await peer.listing())[t.channel_id.hex()]["reason"]


async def test_within_its_allowance_is_accepted_at_once(peer: Target) -> None:
    t = terms(ALLOWED, peer_deposit=50_000, window_ms=2 * HOUR_MS)  # exactly the 500.00 EUR
    status, answer = await peer.propose(t, ALLOWED)
    assert status == 200
    assert isinstance(answer, ChannelAcceptance)
    assert answer.channel_id == t.channel_id
    state = peer.node.node.channels.states[t.channel_id.hex()]
    assert state.phase is ch.Phase.ACCEPTED
    assert await peer.held() == {}
    # a bare entry is accepted at once when it asks nothing of us
    bare = terms(BARE, salt=1)
    status, answer = await peer.propose(bare, BARE)
    assert (status, type(answer)) == (200, ChannelAcceptance)


# -- policy: refused from anyone ------------------------------------------------------------


async def test_a_window_of_2_64_is_refused_at_decode(peer: Target) -> None:
    t = replace(terms(ALLOWED), dispute_window_ms=2**64 - 1)
    refused(await peer.propose(t, ALLOWED), ErrorCode.INVALID_FIELD, "dispute_window_ms")
    assert await peer.count(Channel) == await peer.count(HeldProposal) == 0


@pytest.mark.parametrize("opener", [ALLOWED, KNOWN, Signer.from_label("stranger")])
@pytest.mark.parametrize("window_ms", [1_000, HOUR_MS - 1, 14 * 24 * HOUR_MS + 1])
async def test_a_window_outside_the_policy_is_refused(
    peer: Target, opener: Signer, window_ms: int
) -> None:
    refused(await peer.propose(terms(opener, window_ms=window_ms), opener),
            ErrorCode.INVALID_TERMS, f"outside the accepted range {HOUR_MS}..")
    assert await peer.count(Channel) == await peer.count(HeldProposal) == 0
    assert await peer.count(OutboxRow) == 0


async def test_our_own_proposal_outside_the_policy_is_a_400(peer: Target) -> None:
    status, body = await peer.node.admin("POST", "/api/channels", {
        "peer": KNOWN.node_id.hex(), "arbiter": ARBITER.node_id.hex()[:12],
        "deposit": "10.00 EUR", "tariff": ["km=0.01"], "dispute_window": "1s"})
    assert status == 400, body
    assert body["error"]["code"] == "INVALID_DISPUTE_WINDOW"
    assert "3600000" in body["error"]["message"]
    assert peer.node.node.channels.states == {}


# -- the held queue: bounded per proposer, strangers never crowd out known peers --------------


async def test_a_fourth_proposal_from_one_key_is_refused(peer: Target) -> None:
    assert await peer.propose(terms(KNOWN), KNOWN) == (202, None)
    fresh = Signer.from_label("fresh")
    for i in range(MAX_HELD_PER_PROPOSER):
        assert await peer.propose(terms(fresh, salt=i), fresh) == (202, None)
    refused(await peer.propose(terms(fresh, salt=99), fresh), ErrorCode.INVALID_STATE,
            "too many proposals waiting from you")
    # the same proposal again is not a new one (no error, nothing added)
    assert await peer.propose(terms(fresh, salt=0), fresh) == (202, None)
    held = await peer.held()
    assert terms(KNOWN).channel_id.hex() in held
    assert len(held) == 1 + MAX_HELD_PER_PROPOSER
    # a known peer is bounded the same way
    for i in range(1, MAX_HELD_PER_PROPOSER):
        assert await peer.propose(terms(KNOWN, salt=i), KNOWN) == (202, None)
    refused(await peer.propose(terms(KNOWN, salt=99), KNOWN), ErrorCode.INVALID_STATE,
            "too many proposals waiting from you")


async def test_fresh_keys_cannot_crowd_out_a_known_peer(peer: Target) -> None:
    """Attack 8: 101 fresh keys fill the strangers' room; a known peer's proposal still waits
    for the operator."""
    strangers = [Signer.from_label(f"flood-{i}") for i in range(MAX_HELD_PROPOSALS + 1)]
    for key in strangers[:MAX_HELD_PROPOSALS]:
        assert await peer.propose(terms(key), key) == (202, None)
    refused(await peer.propose(terms(strangers[-1]), strangers[-1]), ErrorCode.INVALID_STATE,
            "too many proposals are waiting")
    assert await peer.propose(terms(KNOWN), KNOWN) == (202, None)
    # an allow-listed opener off the peer table asking too much counts as a stranger: no room
    refused(await peer.propose(terms(ALLOWED, peer_deposit=10**6), ALLOWED),
            ErrorCode.INVALID_STATE, "too many proposals are waiting")
    # but within its allowance it is accepted: the queue is for the operator, not for it
    status, answer = await peer.propose(terms(ALLOWED), ALLOWED)
    assert (status, type(answer)) == (200, ChannelAcceptance)
    held = await peer.held()
    assert len(held) == MAX_HELD_PROPOSALS + 1
    assert terms(KNOWN).channel_id.hex() in held
    # the operator answers one stranger: room for one more
    status, body = await peer.node.admin(
        "POST", f"/api/channels/{terms(strangers[0]).channel_id.hex()[:20]}/reject")
    assert status == 200, body
    assert await peer.propose(terms(strangers[-1]), strangers[-1]) == (202, None)


# -- reject ---------------------------------------------------------------------------------


async def cli(peer: Target, *args: str) -> subprocess.CompletedProcess[str]:
    """`meterline ARGS` as a subprocess, while this loop keeps serving the node it calls."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", *args, "--data-dir", str(peer.node.config.data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def test_channel_reject_through_the_cli_removes_a_held_proposal(peer: Target) -> None:
    keep, drop = terms(KNOWN, salt=1), terms(KNOWN, salt=2)
    for t in (keep, drop):
        assert await peer.propose(t, KNOWN) == (202, None)
    cid = drop.channel_id.hex()
    out = await cli(peer, "channel", "reject", cid[:10], "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"id": cid, "peer": KNOWN.node_id.hex(),
                                      "phase": "rejected"}
    assert set(await peer.held()) == {keep.channel_id.hex()}
    assert await peer.count(Channel) == 0
    again = await cli(peer, "channel", "reject", cid[:10])
    assert again.returncode != 0
    assert "no proposal waiting" in again.stderr
    status, body = await peer.node.admin("POST", f"/api/channels/{cid}/accept")
    assert (status, body["error"]["code"]) == (404, "UNKNOWN_CHANNEL")
    listed = await cli(peer, "channel", "list")
    assert listed.returncode == 0, listed.stderr
    assert "the opener is not on the allow-list" in listed.stdout


async def test_reject_of_an_accepted_channel_is_a_conflict(peer: Target) -> None:
    t = terms(ALLOWED)
    assert (await peer.propose(t, ALLOWED))[0] == 200
    status, body = await peer.node.admin("POST", f"/api/channels/{t.channel_id.hex()}/reject")
    assert (status, body["error"]["code"]) == (409, "ALREADY_ACCEPTED")
    status, body = await peer.node.admin("POST", "/api/channels/zz/reject")
    assert (status, body["error"]["code"]) == (400, "BAD_CHANNEL_ID")


async def test_accept_of_a_held_proposal_still_works(peer: Target) -> None:
    t = terms(KNOWN, peer_deposit=100)
    assert await peer.propose(t, KNOWN) == (202, None)
    status, body = await peer.node.admin("POST", f"/api/channels/{t.channel_id.hex()[:8]}/accept")
    assert status == 200, body
    assert body["phase"] == "accepted"
    assert await peer.held() == {}


# -- the config: [[peers.allowed]] ------------------------------------------------------------


def _config_with(tmp_path: Path, extra: str, allow: list[str] | None = None) -> Path:
    config = make_config(tmp_path / "n", US, allow=allow)
    path = config.data_dir / "config.toml"
    path.write_text(path.read_text() + extra)
    return config.data_dir


def test_the_table_form_and_the_bare_form(tmp_path: Path) -> None:
    data_dir = _config_with(tmp_path, EXTRA, allow=[BARE.node_id.hex()])
    config = load_config(data_dir)
    assert set(config.allow) == {BARE.node_id.hex(), ALLOWED.node_id.hex()}
    allowed = config.allowance(ALLOWED.node_id.hex())
    assert allowed == Allowance(ALLOWED.node_id.hex(), HOUR_MS, 48 * HOUR_MS, 50_000, "EUR",
                                frozenset({"EUR"}))
    bare = config.allowance(BARE.node_id.hex())
    assert bare is not None
    assert (bare.max_peer_deposit, bare.currencies) == (0, None)
    assert (bare.min_dispute_window_ms, bare.max_dispute_window_ms) == (
        config.policy.min_dispute_window_ms, config.policy.max_dispute_window_ms)
    assert config.allowance(KNOWN.node_id.hex()) is None
    assert bare.objection("JPY", 0, 2 * HOUR_MS) is None
    assert bare.objection("EUR", 1, 2 * HOUR_MS) is not None


@pytest.mark.parametrize(("entry", "names"), [
    ('node_id = "xyz"', "node_id"),
    ('node_id = "{id}"\nmax_peer_deposit = 1000', "max_peer_deposit"),
    ('node_id = "{id}"\nmax_peer_deposit = "1000.001 EUR"', "max_peer_deposit"),
    ('node_id = "{id}"\nmax_peer_deposit = "1000.00 XXX"', "max_peer_deposit"),
    ('node_id = "{id}"\nmax_peer_deposit = "lots"', "max_peer_deposit"),
    ('node_id = "{id}"\ncurrencies = "EUR"', "currencies"),
    ('node_id = "{id}"\ncurrencies = []', "currencies"),
    ('node_id = "{id}"\ncurrencies = ["eur"]', "currencies"),
    ('node_id = "{id}"\nmax_peer_deposit = "1.00 USD"\ncurrencies = ["EUR"]', "currencies"),
    ('node_id = "{id}"\nmin_dispute_window_ms = 1000', "min_dispute_window_ms"),
    ('node_id = "{id}"\nmax_dispute_window_ms = 99999999999999', "max_dispute_window_ms"),
    ('node_id = "{id}"\nmin_dispute_window_ms = true', "min_dispute_window_ms"),
    (f'node_id = "{{id}}"\nmin_dispute_window_ms = {5 * HOUR_MS}\n'
     f'max_dispute_window_ms = {2 * HOUR_MS}', "min_dispute_window_ms is above"),
    ('node_id = "{id}"\nmax_deposit = "1.00 EUR"', "max_deposit"),
])
def test_a_bad_allowed_entry_is_a_config_error_naming_it(
    tmp_path: Path, entry: str, names: str
) -> None:
    data_dir = _config_with(
        tmp_path, "\n[[peers.allowed]]\n" + entry.replace("{id}", ALLOWED.node_id.hex()) + "\n")
    with pytest.raises(ConfigError, match=r"peers\.allowed.*" + names.split()[0]):
        load_config(data_dir)


def test_one_id_twice_is_a_config_error(tmp_path: Path) -> None:
    data_dir = _config_with(tmp_path, EXTRA, allow=[ALLOWED.node_id.hex()])
    with pytest.raises(ConfigError, match="more than once"):
        load_config(data_dir)


@pytest.mark.parametrize(
    ("account", "text"),
    [(BankAccount("IBAN", "TR330006100519786457841326", "Istanbul AS"), "TR is not a SEPA"),
     (BankAccount("IBAN", "BR1800360305000010009795493C1", "Sao Paulo SA"), "BR is not a SEPA"),
     (BankAccount("US.ABA", "021000021:12345", "Acme Inc"), "pays IBANs")],
)
async def test_an_account_our_rail_can_never_pay_is_refused_when_the_channel_opens(
    peer: Target, account: BankAccount, text: str
) -> None:
    """A non-SEPA IBAN on a SEPA node is refused at the proposal (rails.registry
    check_payee_account), not discovered when the payout is due; nothing is stored."""
    bad = replace(terms(BARE, opener_deposit=10_000), opener_account=account)
    refused(await peer.propose(bad, BARE), ErrorCode.INVALID_TERMS, text)
    assert await peer.count(Channel) == 0
    assert await peer.count(HeldProposal) == 0
    assert await peer.count(OutboxRow) == 0


async def test_our_own_proposal_to_an_account_our_rail_cannot_pay_is_a_400(peer: Target) -> None:
    """The opener side of the same check: KNOWN announces a Turkish IBAN; proposing to it on a
    SEPA node is refused before anything is signed or stored."""
    turkish = BankAccount("IBAN", "TR330006100519786457841326", "Istanbul AS")
    async with peer.node.node.ctx.db() as session, session.begin():
        known = await session.get(Peer, KNOWN.node_id.hex())
        assert known is not None
        record = NodeInfo(KNOWN.node_id, "known", "node", known.url, turkish, 1, b"",
                          EMPTY_SIGNATURE).signed_by(KNOWN)
        known.info, known.issued_ms = info_json(record), 1
    status, body = await peer.node.admin("POST", "/api/channels", {
        "peer": KNOWN.node_id.hex(), "arbiter": ARBITER.node_id.hex()[:12],
        "deposit": "10.00 EUR", "tariff": ["km=0.01"]})
    assert (status, body["error"]["code"]) == (400, "INVALID_TERMS"), body
    assert "TR is not a SEPA country" in body["error"]["message"]
    assert peer.node.node.channels.states == {}
    assert await peer.count(Channel) == 0
