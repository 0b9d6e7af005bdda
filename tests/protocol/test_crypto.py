"""Ed25519 (RFC 8032) and domain-separated signatures (specs/0002-wire.md §4)."""

from __future__ import annotations

import pytest

from protocol.crypto import (
    DOMAIN_PREFIX,
    Signer,
    ed25519_public,
    ed25519_sign,
    ed25519_verify,
    signing_input,
    verify,
)
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.messages import EMPTY_SIGNATURE, Receipt
from protocol.types import Amount, ChannelId, Nonce

# RFC 8032 §7.1, TEST 1–3: (secret key, public key, message, signature), hex.
RFC8032_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(
    ("secret", "public", "message", "signature"), RFC8032_VECTORS, ids=["TEST1", "TEST2", "TEST3"]
)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    sk, pk, msg, sig = (bytes.fromhex(x) for x in (secret, public, message, signature))
    assert ed25519_public(sk) == pk
    assert ed25519_sign(sk, msg) == sig
    assert ed25519_verify(pk, msg, sig)
    assert Signer(sk).node_id == pk
    assert Signer(sk).seed() == sk
    # any single bit flipped anywhere breaks it
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not ed25519_verify(pk, msg, flipped)
    assert not ed25519_verify(pk, msg + b"\x00", sig)
    other_pk = bytes.fromhex(
        RFC8032_VECTORS[0][1] if public != RFC8032_VECTORS[0][1] else RFC8032_VECTORS[1][1]
    )
    assert not ed25519_verify(other_pk, msg, sig)


def test_verify_refuses_malformed_keys_and_signatures() -> None:
    _sk, pk, _, sig = (bytes.fromhex(x) for x in RFC8032_VECTORS[0])
    assert not ed25519_verify(pk[:31], b"", sig)
    assert not ed25519_verify(pk, b"", sig[:63])
    assert not ed25519_verify(pk, b"", sig + b"\x00")
    assert not ed25519_verify(b"\xff" * 32, b"", sig)  # not a curve point
    assert not ed25519_verify(pk, b"", bytes(64))


def test_signer_seed_length() -> None:
    with pytest.raises(LocalProtocolError) as info:
        Signer(b"\x00" * 31)
    assert info.value.code is ErrorCode.INVALID_FIELD


def test_signer_from_label_is_deterministic_and_repr_hides_the_key() -> None:
    a, b = Signer.from_label("opener"), Signer.from_label("opener")
    assert a.node_id == b.node_id
    assert a.node_id != Signer.from_label("peer").node_id
    assert a.seed().hex() not in repr(a)
    assert a.node_id.hex()[:16] in repr(a)


def test_signing_input_layout() -> None:
    assert signing_input("receipt", b"BODY") == b"meterline/receipt\x00\x01BODY"
    assert signing_input("receipt", b"").startswith(DOMAIN_PREFIX)


def test_domain_separation() -> None:
    signer = Signer.from_label("opener")
    body = b"\x95\x05\x01same bytes"
    sig = signer.sign("receipt", body)
    verify(signer.node_id, "receipt", body, sig)
    for other in ("balance-proof", "close", "evidence", "payout", "terms", "receipt2"):
        with pytest.raises(RemoteProtocolError) as info:
            verify(signer.node_id, other, body, sig)
        assert info.value.code is ErrorCode.BAD_SIGNATURE
    # a domain signature is not a plain signature over the body either
    assert not ed25519_verify(signer.node_id, body, sig)
    # nor can a domain be shifted into the body ("receipt" + "\0..." ambiguity)
    assert not ed25519_verify(signer.node_id, signing_input("receip", b"t" + body), sig)


def test_a_message_signature_does_not_verify_as_another_type() -> None:
    signer = Signer.from_label("opener")
    receipt = Receipt(
        ChannelId(bytes(32)), signer.node_id, Nonce(1), Amount(5), EMPTY_SIGNATURE
    ).signed_by(signer)
    receipt.verify_signature(signer.node_id)
    with pytest.raises(RemoteProtocolError) as info:
        verify(signer.node_id, "balance-proof", receipt.body(), receipt.signature)
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(RemoteProtocolError) as info:
        receipt.verify_signature(Signer.from_label("peer").node_id)
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(ValueError, match="no signature field"):
        receipt.signed_by(signer, "opener_signature")
