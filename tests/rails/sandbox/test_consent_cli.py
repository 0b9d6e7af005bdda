"""The account holder's authorisation through the node: a real node daemon (``node.app.running``
on loopback, real SQLite) whose rail is the Open Banking adapter on a real sandbox bank that
waits for the PSU, driven by the real ``meterline rails authorise`` CLI over the admin API.

The operator lists what waits (the bank's authorisation URL), the PSU approves at the bank and
is redirected, the operator hands the redirect back, and the payment is made and booked, once.
A forged state, a redirect elsewhere, a used code, and a node without the step change nothing
and exit 3 with the admin API's code (ADR 0141).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from node.app import Node
from rails.port import PaymentStatus
from tests.rails.sandbox.conftest import Bank, instruction, make_party
from tests.rails.sandbox.daemon import Cli, attach, error_code, node_daemon

REDIRECT = "https://tpp.example/meterline/callback"


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Node, Cli]]:
    async with node_daemon(tmp_path / "node") as node:
        yield node, Cli(tmp_path / "node", "authorise")


async def _psu(url: str, decision: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(
            url + f"&decision={decision}", allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        return r.headers["Location"]


async def test_the_operator_authorises_a_payment_through_the_cli(
        start_bank: Callable[..., Bank], tmp_path: Path, daemon: tuple[Node, Cli]) -> None:
    node, cli = daemon
    bank = start_bank(manual=True)
    alice = make_party(bank, tmp_path, "acc-a", "Alice Ltd", "40000011111111", 5_000)
    bob = make_party(bank, tmp_path, "acc-b", "Bob Widgets", "40000022222222", 0)
    rail = attach(node, alice, tmp_path / "rail.sqlite", redirect_uri=REDIRECT)
    try:
        assert (await cli())[:2] == (0, {"consents": []})
        payout = instruction(alice, bob, 1_250)
        assert (await rail.submit(payout)).status is PaymentStatus.PENDING

        status, listed, _ = await cli()
        assert status == 0
        [waiting] = listed["consents"]
        assert (waiting["key"], waiting["amount_minor"], waiting["currency"]) == (
            payout.idempotency_key, "1250", "GBP")
        url = waiting["authorisation_url"]
        assert url.startswith(bank.url + "/as/authorise?")
        state = parse_qs(urlsplit(url).query)["state"][0]

        back = await _psu(url, "approve")
        # hostile or wrong redirects: refused with the admin API's code, nothing moves
        for bad, code in ((back.replace(f"state={state}", "state=" + "x" * 32),
                           "UNKNOWN_CONSENT"),
                          (back.replace("tpp.example", "evil.example"), "BAD_REDIRECT"),
                          ("https://tpp.example/meterline/callback?state=s", "BAD_REDIRECT"),
                          ("not a url", "BAD_REDIRECT")):
            status, _, err = await cli("--redirect", bad)
            assert (status, error_code(err)) == (3, code), err
        assert bank.balance("acc-a") == 5_000

        status, record, err = await cli("--redirect", back)
        assert status == 0, err
        assert (record["key"], record["status"], record["amount_minor"]) == (
            payout.idempotency_key, "booked", "1250")
        assert (bank.balance("acc-a"), bank.balance("acc-b")) == (3_750, 1_250)
        # the same redirect again: the bank refuses the used code, nothing is paid twice
        status, _, err = await cli("--redirect", back)
        assert (status, error_code(err)) == (3, "AUTHORISATION_REFUSED"), err
        assert (bank.balance("acc-a"), bank.balance("acc-b")) == (3_750, 1_250)
        assert (await cli())[:2] == (0, {"consents": []})

        # the human output says so
        status, text, _ = await cli(as_json=False)
        assert (status, text.strip()) == (0, "no payment is waiting for the account holder")
    finally:
        await rail.aclose()


async def test_a_node_without_the_step_says_so(
        start_bank: Callable[..., Bank], tmp_path: Path, daemon: tuple[Node, Cli]) -> None:
    node, cli = daemon
    status, _, err = await cli()
    assert (status, error_code(err)) == (3, "NOT_FOUND")  # no rail at all
    bank = start_bank(manual=True)
    alice = make_party(bank, tmp_path, "acc-a", "Alice Ltd", "40000011111111", 5_000)
    rail = attach(node, alice, tmp_path / "rail.sqlite")
    try:
        status, _, err = await cli()
        assert (status, error_code(err)) == (3, "NO_REDIRECT_URI"), err
        status, _, err = await cli("--redirect", REDIRECT + "?state=a&code=b")
        assert (status, error_code(err)) == (3, "NO_REDIRECT_URI"), err
    finally:
        await rail.aclose()
