"""OAuth 2.0 against the sandbox bank: client-credentials tokens (private_key_jwt) that expire
and are refreshed, the PSU's authorisation of a consent through the authorisation endpoint and
the code exchange, and what the bank refuses."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from joserfc import jwt

from rails.errors import BankRejected
from rails.ob_jws import generate_signing_key, load_signing_key
from rails.ob_oauth import ASSERTION_TYPE, TOKEN_PATH, TokenClient
from rails.openbanking import CONSENT_REJECTED, OpenBankingRail
from rails.port import PaymentStatus
from rails.store import SqliteIdempotencyStore
from tests.rails.sandbox.conftest import (
    AISP,
    PISP,
    Bank,
    OBValidator,
    Party,
    RawClient,
    consent_body,
    instruction,
    make_party,
)

REDIRECT = "https://tpp.example/callback"


async def _form(bank: Bank, form: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.post(bank.url + TOKEN_PATH, data=form) as r:
        return r.status, await r.json()


def _assertion(party: Party, key: object = None, **claims: object) -> str:
    signer = key or load_signing_key(party.key_file)
    now = int(time.time())
    body = {"iss": party.client_id, "sub": party.client_id,
            "aud": party.bank.url + TOKEN_PATH, "iat": now, "exp": now + 60,
            "jti": str(uuid.uuid4()), **claims}
    return jwt.encode({"alg": "PS256"}, body, signer, algorithms=["PS256"])  # type: ignore[arg-type]


async def test_an_expired_token_is_refused_and_the_adapter_fetches_a_new_one(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail], ob: OBValidator) -> None:
    alice, bob = parties
    rail = rails_for(alice)
    first = await rail.submit(instruction(alice, bob, 100))
    assert first.status is PaymentStatus.BOOKED
    assert rail._tokens.fetched == 1  # one token served every call of that payment

    raw = RawClient(alice, ob)
    old = await raw.token()
    assert bank.admin("POST", "/_sandbox/tokens/expire", {})["expired"] >= 2
    refused = await raw.request("GET", f"{AISP}/accounts", token=old)
    assert refused.status == 401
    assert (await raw.request("GET", f"{AISP}/accounts", token="made-up")).status == 401

    second = await rail.submit(instruction(alice, bob, 200))  # 401 once, new token, on
    assert second.status is PaymentStatus.BOOKED
    assert rail._tokens.fetched == 2
    assert bank.balance("acc-bob") == 300


async def test_a_token_is_fetched_again_shortly_before_it_expires(
        bank: Bank, parties: tuple[Party, Party]) -> None:
    alice, _ = parties
    now = [1_000_000.0]
    async with aiohttp.ClientSession() as session:
        client = TokenClient(bank.url, alice.client_id, load_signing_key(alice.key_file),
                             _kid(alice),
                             session=lambda: session, clock=lambda: now[0])
        first = await client.token()
        assert await client.token() == first
        now[0] += 3600 - 31  # the bank says 3600 s; within the 30 s margin: still held
        assert await client.token() == first
        now[0] += 2
        assert await client.token() != first
        assert client.fetched == 2


def _kid(party: Party) -> str:
    from rails.ob_jws import key_id

    return key_id(load_signing_key(party.key_file))


async def test_the_token_endpoint_refuses_bad_client_assertions(
        bank: Bank, parties: tuple[Party, Party]) -> None:
    alice, _ = parties

    def form(assertion: str, **extra: str) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_id": alice.client_id,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
                **extra}

    good = _assertion(alice)
    status, body = await _form(bank, form(good))
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    status, body = await _form(bank, form(good))  # the same jti again
    assert (status, body["error"]) == (401, "invalid_client")
    for bad in (_assertion(alice, key=generate_signing_key()),      # not its key
                _assertion(alice, aud="https://elsewhere/as/token"),  # not this endpoint
                _assertion(alice, iss="tpp-someone-else"),
                _assertion(alice, exp=int(time.time()) - 10),         # expired
                _assertion(alice, exp=int(time.time()) + 3600)):      # lives too long
        status, body = await _form(bank, form(bad))
        assert (status, body["error"]) == (401, "invalid_client"), body
    status, body = await _form(bank, {**form(_assertion(alice)),
                                      "client_assertion_type": "client_secret"})
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = await _form(bank, form(_assertion(alice), grant_type="password"))
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_the_psu_authorises_the_consent_and_the_payment_uses_the_codes_token(
        start_bank: Callable[..., Bank], tmp_path: Path, ob: OBValidator) -> None:
    bank = start_bank(manual=True)
    alice = make_party(bank, tmp_path, "acc-a", "Alice Ltd", "40000011111111", 5_000)
    bob = make_party(bank, tmp_path, "acc-b", "Bob Widgets", "40000022222222", 0)
    store = SqliteIdempotencyStore(tmp_path / "alice-store.sqlite3")
    pay = OpenBankingRail(alice.config(), store=store, observer=ob.check)
    try:
        instr = instruction(alice, bob, 700)
        assert (await pay.submit(instr)).status is PaymentStatus.PENDING
        url = pay.authorisation_url(instr.idempotency_key, redirect_uri=REDIRECT, state="s-1")
        assert url.startswith(bank.url + "/as/authorise?")
        # the PSU approves at the bank; the bank redirects back with a code and our state
        async with aiohttp.ClientSession() as s, s.get(
                url + "&decision=approve", allow_redirects=False) as r:
            assert r.status == 302
            back = urlsplit(r.headers["Location"])
        params = parse_qs(back.query)
        assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
        assert params["state"] == ["s-1"]
        code = params["code"][0]

        # a client-credentials token may not pay a PSU-authorised consent
        raw = RawClient(alice, ob)
        consent_id = store.get(instr.idempotency_key).meta["consent_id"]  # type: ignore[union-attr]
        body = {"Data": {"ConsentId": consent_id,
                         "Initiation": consent_body(alice, bob, "7.00")["Data"]["Initiation"]},
                "Risk": {"PaymentContextCode": "PartyToParty"}}
        forbidden = await raw.request("POST", f"{PISP}/domestic-payments", body,
                                      idem_key="raw-pay-1", validate_request=False)
        assert forbidden.status == 403
        assert bank.balance("acc-a") == 5_000

        done = await pay.authorised(instr.idempotency_key, code=code, redirect_uri=REDIRECT)
        assert done.status is PaymentStatus.BOOKED
        assert (bank.balance("acc-a"), bank.balance("acc-b")) == (4_300, 700)
        with pytest.raises(BankRejected) as again:  # a code is good once
            await pay.authorised(instr.idempotency_key, code=code, redirect_uri=REDIRECT)
        assert again.value.reason_code == "invalid_grant"

        # the PSU rejects another: the bank redirects with access_denied, nothing moves
        declined = instruction(alice, bob, 100)
        assert (await pay.submit(declined)).status is PaymentStatus.PENDING
        url = pay.authorisation_url(declined.idempotency_key, redirect_uri=REDIRECT, state="s2")
        async with aiohttp.ClientSession() as s, s.get(
                url + "&decision=reject", allow_redirects=False) as r:
            assert r.status == 302
            assert parse_qs(urlsplit(r.headers["Location"]).query) == {
                "state": ["s2"], "error": ["access_denied"]}
        rejected = await pay.status(declined.idempotency_key)
        assert (rejected.status, rejected.reason_code) == (PaymentStatus.REJECTED,
                                                           CONSENT_REJECTED)
        assert bank.balance("acc-a") == 4_300
        # a redirect that is not ours (plain http off loopback) is refused outright
        async with aiohttp.ClientSession() as s, s.get(
                url.replace("https%3A%2F%2Ftpp.example", "http%3A%2F%2Fevil.example")
                + "&decision=approve", allow_redirects=False) as r:
            assert r.status == 400
    finally:
        await pay.aclose()
        store.close()
