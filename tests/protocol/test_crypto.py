"""Ed25519 (RFC 8032) and domain-separated signatures (specs/0002-wire.md §4)."""

from __future__ import annotations

import hashlib

import pytest

from protocol.crypto import (
    BACKENDS,
    DOMAIN_PREFIX,
    GROUP_ORDER,
    PER_UPDATE,
    SMALL_ORDER_ENCODINGS,
    Backend,
    Signer,
    ed25519_public,
    ed25519_sign,
    ed25519_verify,
    meets_wire_rule,
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


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(
    ("secret", "public", "message", "signature"), RFC8032_VECTORS, ids=["TEST1", "TEST2", "TEST3"]
)
def test_rfc8032_vectors_through_each_backend(
    backend: str, secret: str, public: str, message: str, signature: str
) -> None:
    lib = BACKENDS[backend]
    sk, pk, msg, sig = (bytes.fromhex(x) for x in (secret, public, message, signature))
    assert lib.public(sk) == pk
    assert lib.sign(sk, msg) == sig
    sign = lib.signing_key(sk)
    assert sign(msg) == sign(msg) == sig  # deterministic, and the key object is reusable
    assert lib.verify(pk, msg, sig)
    assert not lib.verify(pk, msg, bytes([sig[0] ^ 1]) + sig[1:])
    assert not lib.verify(pk, msg, sig[:63] + bytes([sig[63] ^ 0x80]))
    assert not lib.verify(pk, msg + b"\x00", sig)


def test_the_per_update_path_is_libsodium() -> None:
    assert set(BACKENDS) == {"libsodium", "cryptography"}
    assert all(isinstance(b, Backend) and BACKENDS[b.name] is b for b in BACKENDS.values())
    assert PER_UPDATE is BACKENDS["libsodium"]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_backends_sign_alike_and_accept_each_others_signatures(backend: str) -> None:
    this = BACKENDS[backend]
    other = next(b for name, b in BACKENDS.items() if name != backend)
    for i in range(20):
        seed = hashlib.sha256(b"seed %d" % i).digest()
        message = signing_input("balance-proof", b"body %d" % i * i)
        pk = this.public(seed)
        assert pk == other.public(seed) == Signer(seed).node_id
        sig = this.sign(seed, message)
        assert sig == other.sign(seed, message)
        assert other.verify(pk, message, sig)
        for position in (0, 31, 32, 63):  # R and S, each end
            bad = bytearray(sig)
            bad[position] ^= 0x04
            assert not this.verify(pk, message, bytes(bad))
            assert not other.verify(pk, message, bytes(bad))


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_verify_refuses_malformed_keys_and_signatures(backend: str) -> None:
    check = BACKENDS[backend].verify
    _sk, pk, _, sig = (bytes.fromhex(x) for x in RFC8032_VECTORS[0])
    assert check(pk, b"", sig)
    assert not check(pk[:31], b"", sig)
    assert not check(pk + b"\x00", b"", sig)
    assert not check(pk, b"", sig[:63])
    assert not check(pk, b"", sig + b"\x00")
    assert not check(b"\xff" * 32, b"", sig)  # not a curve point
    assert not check(pk, b"", bytes(64))
    assert not check(b"", b"", b"")


def test_verify_refuses_malformed_keys_and_signatures_on_the_per_update_path() -> None:
    _sk, pk, _, sig = (bytes.fromhex(x) for x in RFC8032_VECTORS[0])
    assert not ed25519_verify(pk[:31], b"", sig)
    assert not ed25519_verify(pk, b"", sig[:63])
    assert not ed25519_verify(b"\xff" * 32, b"", sig)
    with pytest.raises(RemoteProtocolError) as info:
        verify(pk, "receipt", b"", bytes(64))
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_meets_wire_rule() -> None:
    _sk, pk, _, sig = (bytes.fromhex(x) for x in RFC8032_VECTORS[0])
    s = int.from_bytes(sig[32:], "little")
    assert meets_wire_rule(pk, sig)
    assert meets_wire_rule(pk, sig[:32] + (GROUP_ORDER - 1).to_bytes(32, "little"))
    assert not meets_wire_rule(pk, sig[:32] + GROUP_ORDER.to_bytes(32, "little"))
    assert not meets_wire_rule(pk, sig[:32] + (s + GROUP_ORDER).to_bytes(32, "little"))
    assert not meets_wire_rule(pk[:31], sig)
    assert not meets_wire_rule(pk, sig[:63])
    assert len(SMALL_ORDER_ENCODINGS) == 7
    for point in SMALL_ORDER_ENCODINGS:
        negated = point[:31] + bytes([point[31] | 0x80])  # the sign bit does not hide it
        for encoding in (point, negated):
            assert not meets_wire_rule(encoding, sig)  # as the key
            assert not meets_wire_rule(pk, encoding + sig[32:])  # as R
    for t in range(2, 19):  # y = p + t, t ≥ 2: not reduced, not in the small-order list
        assert not meets_wire_rule(((2**255 - 19) + t).to_bytes(32, "little"), sig)


def test_small_order_list_is_the_eight_torsion_and_its_unreduced_encodings() -> None:
    from specs.tools import ed25519_edges as edges

    cleared = {
        edges.encode(t)[:31] + bytes([edges.encode(t)[31] & 0x7F]) for t in edges.torsion()
    }
    p = 2**255 - 19
    unreduced = {p.to_bytes(32, "little"), (p + 1).to_bytes(32, "little")}
    assert len(cleared) == 5  # ±x share a y: order 1, 2, 4 (x = ±√−1), 8 (two y values)
    assert cleared | unreduced == SMALL_ORDER_ENCODINGS


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


def test_the_spec_lists_the_small_order_encodings_the_code_refuses() -> None:
    import re
    from pathlib import Path

    spec = (Path(__file__).resolve().parents[2] / "specs" / "0002-wire.md").read_text("utf-8")
    section = spec.split("### 4.1 The verification rule", 1)[1].split("\n## ", 1)[0]
    listed = {bytes.fromhex(h) for h in re.findall(r"\| `([0-9a-f]{64})` \|", section)}
    assert listed == SMALL_ORDER_ENCODINGS
    assert str(GROUP_ORDER - 2**252) in section
