"""The PSU's authorisation of a consent as the node drives it (:class:`rails.port.
PsuAuthorisation`): list what awaits the PSU with an authorisation URL carrying a random state,
the PSU decides at the real sandbox bank, and the redirect it is sent back to is handed to the
rail, which finds the payment by the state, trades the code and pays. A hostile or stale
redirect changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from rails.errors import (
    BankRejected,
    BankUnavailable,
    InvalidRedirect,
    NotConfigured,
    UnknownPayment,
)
from rails.ob_oauth import parse_redirect
from rails.openbanking import CONSENT_REJECTED, PSU_WAITING, OpenBankingRail
from rails.port import PaymentStatus, PsuAuthorisation
from rails.store import SqliteIdempotencyStore
from tests.rails.sandbox.conftest import PISP, Bank, instruction, make_party

REDIRECT = "https://tpp.example/callback"


async def _psu(url: str, decision: str) -> str:
    """The PSU at the bank: decides, and is redirected; where to."""
    async with aiohttp.ClientSession() as s, s.get(
            url + f"&decision={decision}", allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        return r.headers["Location"]


async def test_the_psu_authorises_through_the_listed_url_and_the_redirect_pays(
        start_bank: Callable[..., Bank], tmp_path: Path) -> None:
    bank = start_bank(manual=True)
    alice = make_party(bank, tmp_path, "acc-a", "Alice Ltd", "40000011111111", 5_000)
    bob = make_party(bank, tmp_path, "acc-b", "Bob Widgets", "40000022222222", 0)
    store = SqliteIdempotencyStore(tmp_path / "alice.sqlite3")
    pay = OpenBankingRail(replace(alice.config(), redirect_uri=REDIRECT), store=store)
    try:
        assert isinstance(pay, PsuAuthorisation)
        assert await pay.awaiting_authorisation() == []
        first, second = instruction(alice, bob, 700), instruction(alice, bob, 100)
        assert (await pay.submit(first)).status is PaymentStatus.PENDING
        assert (await pay.submit(second)).status is PaymentStatus.PENDING
        waiting = {p.idempotency_key: p for p in await pay.awaiting_authorisation()}
        assert set(waiting) == {first.idempotency_key, second.idempotency_key}
        one = waiting[first.idempotency_key]
        assert (one.amount_minor, one.currency) == (700, "GBP")
        assert one.authorisation_url.startswith(bank.url + "/as/authorise?")
        state = parse_qs(urlsplit(one.authorisation_url).query)["state"][0]
        assert len(state) >= 32
        # listed again: the same state (kept with the payment), not a new one
        again = {p.idempotency_key: p for p in await pay.awaiting_authorisation()}
        assert again[first.idempotency_key].authorisation_url == one.authorisation_url

        back = await _psu(one.authorisation_url, "approve")
        # the PSU has authorised, the code is not back yet: a status poll must not pay with
        # our client-credentials token (the bank would refuse it), it waits
        assert (await pay.status(first.idempotency_key)).status is PaymentStatus.PENDING
        assert bank.balance("acc-a") == 5_000

        # hostile redirects: another origin, a state never given out; nothing moves
        with pytest.raises(InvalidRedirect):
            await pay.authorised_by_redirect(back.replace("tpp.example", "evil.example"))
        with pytest.raises(UnknownPayment):
            await pay.authorised_by_redirect(back.replace(f"state={state}", "state=forged"))
        assert bank.balance("acc-a") == 5_000

        done = await pay.authorised_by_redirect(back)
        assert done.idempotency_key == first.idempotency_key
        assert done.status is PaymentStatus.BOOKED  # the account's transactions show it
        assert (bank.balance("acc-a"), bank.balance("acc-b")) == (4_300, 700)
        with pytest.raises(BankRejected):  # the code is good once; nothing paid twice
            await pay.authorised_by_redirect(back)
        assert bank.balance("acc-a") == 4_300

        # the PSU declines the other: the redirect carries an error, the payment is rejected
        other = waiting[second.idempotency_key]
        declined = await pay.authorised_by_redirect(await _psu(other.authorisation_url,
                                                                "reject"))
        assert (declined.status, declined.reason_code) == (PaymentStatus.REJECTED,
                                                           CONSENT_REJECTED)
        assert await pay.awaiting_authorisation() == []
        assert bank.balance("acc-a") == 4_300
    finally:
        await pay.aclose()
        store.close()


async def test_the_bank_down_after_the_code_is_traded_strands_nothing(
        start_bank: Callable[..., Bank], tmp_path: Path) -> None:
    """A code is good once: when the payment POST fails after the code was traded (the bank
    down, or a crash), the consent's token is kept with the payment, so a restarted rail still
    pays it — once — instead of waiting for ever on a consent nobody can authorise again."""
    bank = start_bank(manual=True)
    alice = make_party(bank, tmp_path, "acc-a", "Alice Ltd", "40000011111111", 5_000)
    bob = make_party(bank, tmp_path, "acc-b", "Bob Widgets", "40000022222222", 0)
    config = replace(alice.config(), redirect_uri=REDIRECT, max_attempts=2)
    store = SqliteIdempotencyStore(tmp_path / "alice.sqlite3")
    pay = OpenBankingRail(config, store=store)
    instr = instruction(alice, bob, 900)
    try:
        await pay.submit(instr)
        [waiting] = await pay.awaiting_authorisation()
        back = await _psu(waiting.authorisation_url, "approve")
        stalled = await pay.status(instr.idempotency_key)
        assert (stalled.status, stalled.reason) == (PaymentStatus.PENDING, PSU_WAITING)
        bank.fault(path=f"{PISP}/domestic-payments", method="POST", kind="error", count=2)
        with pytest.raises(BankUnavailable):
            await pay.authorised_by_redirect(back)
        assert bank.balance("acc-a") == 5_000
    finally:
        await pay.aclose()
    again = OpenBankingRail(config, store=store)  # the node restarted
    try:
        done = await again.status(instr.idempotency_key)
        assert done.status is PaymentStatus.BOOKED
        assert (bank.balance("acc-a"), bank.balance("acc-b")) == (4_100, 900)
        assert "psu_token" not in store.get(instr.idempotency_key).meta  # type: ignore[union-attr]
        assert (await again.status(instr.idempotency_key)).status is PaymentStatus.BOOKED
        assert len(bank.payments()) == 1
    finally:
        await again.aclose()
        store.close()


async def test_without_a_redirect_uri_there_is_no_psu_step(
        start_bank: Callable[..., Bank], tmp_path: Path) -> None:
    bank = start_bank(manual=True)
    alice = make_party(bank, tmp_path, "acc-a", "Alice Ltd", "40000011111111", 5_000)
    pay = OpenBankingRail(alice.config(), store=SqliteIdempotencyStore(":memory:"))
    try:
        with pytest.raises(NotConfigured):
            await pay.awaiting_authorisation()
        with pytest.raises(NotConfigured):
            await pay.authorised_by_redirect(REDIRECT + "?state=x&code=y")
    finally:
        await pay.aclose()


@pytest.mark.parametrize(("redirect", "why"), [
    ("https://tpp.example/other?state=s&code=c", "not to this node's redirect URI"),
    ("http://tpp.example/callback?state=s&code=c", "not to this node's redirect URI"),
    (REDIRECT + "?code=c", "exactly one state"),
    (REDIRECT + "?state=s&state=t&code=c", "exactly one state"),
    (REDIRECT + "?state=s", "exactly one of code and error"),
    (REDIRECT + "?state=s&code=c&error=access_denied", "exactly one of code and error"),
    (REDIRECT + "?state=s&code=" + "c" * 5000, "at most 4096"),
    (REDIRECT + "?%zz", "does not parse"),
])
def test_a_redirect_that_is_not_ours_or_says_nothing_is_refused(redirect: str, why: str
                                                                ) -> None:
    with pytest.raises(InvalidRedirect, match=why):
        parse_redirect(redirect, REDIRECT)


def test_a_good_redirect_gives_the_code_or_the_error() -> None:
    assert parse_redirect(REDIRECT + "?state=s1&code=abc", REDIRECT) == ("abc", "s1", None)
    assert parse_redirect(REDIRECT + "?state=s1&error=access_denied", REDIRECT) == (
        None, "s1", "access_denied")
