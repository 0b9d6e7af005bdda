"""Detached JWS on every POST: forged, missing, tampered or off-profile signatures are refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jws

from rails.errors import BankProtocolError, BankRejected
from rails.ob_jws import OB_IAT, OB_ISS, OB_REGISTRY, OB_TAN, generate_signing_key
from rails.openbanking import OpenBankingRail
from tests.rails.sandbox.conftest import (
    PISP,
    Bank,
    OBValidator,
    Party,
    RawClient,
    consent_body,
    instruction,
)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _post(raw: RawClient, body: dict[str, Any], signature: str | bool | None,
                validate_request: bool = True) -> tuple[int, str]:
    answer = await raw.request("POST", f"{PISP}/domestic-payment-consents", body,
                               idem_key=f"jws-{time.monotonic_ns()}", signature=signature,
                               validate_request=validate_request)
    code = answer.body["Errors"][0]["ErrorCode"] if answer.status != 201 else ""
    return answer.status, code


def _header(raw: RawClient, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "alg": "PS256", "kid": raw.kid, "typ": "JOSE", "cty": "application/json",
        OB_IAT: int(time.time()), OB_ISS: raw.party.issuer, OB_TAN: "openbanking.org.uk",
        "crit": [OB_IAT, OB_ISS, OB_TAN]}
    header.update(changes)
    return {k: v for k, v in header.items() if v is not None}


async def test_bank_refuses_bad_signatures(
        bank: Bank, parties: tuple[Party, Party], ob: OBValidator) -> None:
    alice, bob = parties
    raw = RawClient(alice, ob)
    body = consent_body(alice, bob)
    payload = json.dumps(body).encode()

    assert await _post(raw, body, True) == (201, "")
    assert await _post(raw, body, None, validate_request=False) == (
        400, "UK.OBIE.Signature.Missing")

    forger = generate_signing_key()
    forged = jws.detach_content(jws.serialize_compact(_header(raw), payload, forger,
                                                      registry=OB_REGISTRY))
    assert await _post(raw, body, forged) == (400, "UK.OBIE.Signature.Invalid")

    other_body = consent_body(alice, bob, "99.99")
    assert await _post(raw, body, raw.sign(json.dumps(other_body).encode())) == (
        400, "UK.OBIE.Signature.Invalid")

    def signed(**changes: Any) -> str:
        return jws.detach_content(jws.serialize_compact(_header(raw, **changes), payload,
                                                        raw.key, registry=OB_REGISTRY))

    assert await _post(raw, body, signed(**{OB_ISS: "someone-else"})) == (
        400, "UK.OBIE.Signature.InvalidClaim")
    # with tan = openbanking.org.uk a TPP is {org-id}/{software-statement-id}: neither its
    # client id nor its org id alone will do
    for wrong in (alice.client_id, alice.org_id, f"{alice.org_id}/other"):
        assert await _post(raw, body, signed(**{OB_ISS: wrong})) == (
            400, "UK.OBIE.Signature.InvalidClaim")
    assert await _post(raw, body, signed(**{OB_TAN: "example.com"})) == (
        400, "UK.OBIE.Signature.InvalidClaim")
    assert await _post(raw, body, signed(**{OB_IAT: int(time.time()) - 3600})) == (
        400, "UK.OBIE.Signature.InvalidClaim")
    assert await _post(raw, body, signed(kid="not-my-key")) == (
        400, "UK.OBIE.Signature.InvalidClaim")
    assert await _post(raw, body, signed(crit=[OB_IAT, OB_ISS])) == (
        400, "UK.OBIE.Signature.MissingClaim")
    # v3.1.3 style (b64=false) is gone since v3.1.4
    b64_header = {**_header(raw), "b64": False, "crit": [OB_IAT, OB_ISS, OB_TAN, "b64"]}
    old_style = jws.detach_content(jws.serialize_compact(b64_header, payload, raw.key,
                                                         registry=OB_REGISTRY))
    assert await _post(raw, body, old_style) == (400, "UK.OBIE.Signature.Unexpected")
    # not detached: the payload is in the middle
    attached = jws.serialize_compact(_header(raw), payload, raw.key, registry=OB_REGISTRY)
    assert await _post(raw, body, attached) == (400, "UK.OBIE.Signature.Malformed")
    # alg=none with an empty signature
    assert await _post(raw, body, f"{_b64({'alg': 'none'})}..") == (
        400, "UK.OBIE.Signature.InvalidClaim")
    assert await _post(raw, body, "bm90LWpzb24..c2ln") == (400, "UK.OBIE.Signature.Malformed")

    assert len(bank.admin("GET", "/_sandbox/payments")["payments"]) == 0


async def test_adapter_with_wrong_key_is_rejected_and_nothing_is_paid(
        bank: Bank, parties: tuple[Party, Party], ob: OBValidator) -> None:
    alice, bob = parties
    rail = OpenBankingRail(alice.config(), signing_key=generate_signing_key(),
                           observer=ob.check)
    try:
        with pytest.raises(BankRejected) as info:
            await rail.submit(instruction(alice, bob, 100))
    finally:
        await rail.aclose()
    # the wrong key cannot even get a token: its client assertion does not verify
    assert info.value.reason_code == "invalid_client"
    assert bank.balance("acc-alice") == 10_000


async def test_adapter_verifies_the_banks_signature(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail]) -> None:
    alice, bob = parties
    bank_key = bank.admin("GET", "/_sandbox/bank-key")
    good = rails_for(alice, bank_jwk=bank_key["jwk"])
    assert (await good.submit(instruction(alice, bob, 100))).status.value == "booked"

    impostor = generate_signing_key().as_dict(private=False)
    bad = rails_for(alice, bank_jwk=impostor,
                    store_path=alice.store_path.with_name("impostor.sqlite3"))
    with pytest.raises(BankProtocolError):
        await bad.submit(instruction(alice, bob, 100))


def _real_shaped_header(raw: RawClient, extra: int) -> dict[str, Any]:
    """What an ASPSP-grade signer sends: an OB Directory kid and an x5u to its signing
    certificate (OB Directory JWKS URLs are long), padded by `extra` characters of path."""
    return _header(raw, x5u="https://keystore.openbankingtest.org.uk/0015800001041REAAY/"
                   + "Y6NjA9TOn3aMm9GaPtLwkp/" + "k" * extra + ".pem")


async def test_headers_longer_than_joserfcs_512_bytes_are_accepted_up_to_4_kib(
        bank: Bank, parties: tuple[Party, Party], ob: OBValidator) -> None:
    from rails.ob_jws import MAX_HEADER_BYTES, verify_detached

    alice, bob = parties
    raw = RawClient(alice, ob)
    body = consent_body(alice, bob)
    payload = json.dumps(body).encode()
    registry = OB_REGISTRY

    def signed(header: dict[str, Any]) -> str:
        return jws.detach_content(jws.serialize_compact(header, payload, raw.key,
                                                        registry=registry))

    # a signer that will make headers of any length (to make one past our bound)
    from joserfc.jws import JWSRegistry
    registry = JWSRegistry(header_registry=dict(OB_REGISTRY.header_registry),
                           algorithms=["PS256"])
    registry.max_header_length = 1 << 20
    long_ok = signed(_real_shaped_header(raw, 700))
    assert 1024 < len(long_ok.split(".")[0]) <= MAX_HEADER_BYTES
    # the verifier itself (the bank's and the adapter's) takes it ...
    header = verify_detached(long_ok, payload, raw.key, kid=raw.kid, issuer=alice.issuer)
    assert header[OB_ISS] == alice.issuer
    assert await _post(raw, body, long_ok) == (201, "")
    # ... and a header past the stated bound is refused as malformed, before it is parsed
    too_long = signed(_real_shaped_header(raw, MAX_HEADER_BYTES))
    assert len(too_long.split(".")[0]) > MAX_HEADER_BYTES
    assert await _post(raw, body, too_long) == (400, "UK.OBIE.Signature.Malformed")


def test_issuer_is_org_id_and_software_statement_id() -> None:
    from rails.ob_jws import ob_issuer

    assert ob_issuer("0015800001041REAAY", "Y6NjA9TOn3aMm9GaPtLwkp") == (
        "0015800001041REAAY/Y6NjA9TOn3aMm9GaPtLwkp")
    assert ob_issuer("0015800000SANDBOX1") == "0015800000SANDBOX1"  # a bank
    for bad in (("", "x"), ("org/1", "x"), ("org", ""), ("org", "a" * 41)):
        with pytest.raises(ValueError, match="letters and digits"):
            ob_issuer(*bad)
