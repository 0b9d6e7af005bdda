"""Ed25519 identities and domain-separated signatures (specs/0002-wire.md §4).

A node id is the node's 32-byte Ed25519 public key. A signature never covers bare message bytes:
it covers ``DOMAIN_PREFIX || name || 0x00 || version || body`` where `name` says what kind of
message is signed, so a signature made for one message type can never be replayed as another.

Two libraries implement Ed25519 here, each as a :class:`Backend` in ``BACKENDS``: libsodium
(PyNaCl) carries the per-update path (`Signer.sign`, `verify`, the ``ed25519_*`` functions) because
it signs and verifies faster; `cryptography` (OpenSSL) stays for the bench's side-by-side ceiling
and as a second implementation the RFC 8032 vectors run through. Both accept exactly the
signatures §4's rule accepts: libsodium's ``crypto_sign_verify_detached`` (S canonical, R and the
public key not of small order, the key canonical, the cofactorless equation). OpenSSL alone would
also accept signatures under small-order keys, which anyone can forge, so its backend checks
those conditions itself first (`meets_wire_rule`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from protocol import PROTOCOL_VERSION
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.types import NodeId, Signature

DOMAIN_PREFIX = b"meterline/"
SIGNATURE_LEN = 64
KEY_LEN = 32

GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
"""L, the order of the Ed25519 base point: a signature's S must be below it."""
FIELD_PRIME = 2**255 - 19
_Y_MASK = (1 << 255) - 1
SMALL_ORDER_ENCODINGS = frozenset(
    bytes.fromhex(point)
    for point in (
        # the eight points of order 1, 2, 4 and 8, by y alone (the sign bit cleared), and the
        # non-canonical encodings y = p and y = p + 1 of two of them: libsodium's list
        "0100000000000000000000000000000000000000000000000000000000000000",  # order 1
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1
    )
)
"""Encodings (sign bit cleared) of points of small order: under such a public key, or with such
an R, a signature can be made without any private key."""


def signing_input(domain: str, body: bytes) -> bytes:
    """The exact bytes a signature covers."""
    return DOMAIN_PREFIX + domain.encode("ascii") + b"\x00" + bytes([PROTOCOL_VERSION]) + body


def _small_order(point: bytes) -> bool:
    return point[:31] + bytes([point[31] & 0x7F]) in SMALL_ORDER_ENCODINGS


def meets_wire_rule(public_key: bytes, signature: bytes) -> bool:
    """§4's conditions on a signature beyond RFC 8032's equation: lengths, S < L, R and the key
    not of small order, the key's y below p. (libsodium checks the same inside its verify.)"""
    if len(public_key) != KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    return (
        int.from_bytes(signature[32:], "little") < GROUP_ORDER
        and not _small_order(signature[:32])
        and int.from_bytes(public_key, "little") & _Y_MASK < FIELD_PRIME
        and not _small_order(public_key)
    )


# -- the two libraries ------------------------------------------------------------------------

Sign = Callable[[bytes], bytes]
"""Sign a message with one key whose expanded form was computed once."""


@dataclass(frozen=True, slots=True)
class Backend:
    """One Ed25519 library: the same seeds, signatures and accepted set (§4) as any other."""

    name: str
    public: Callable[[bytes], bytes]
    """seed → 32-byte public key."""
    signing_key: Callable[[bytes], Sign]
    """seed → a signing function over the precomputed key."""
    verify: Callable[[bytes, bytes, bytes], bool]
    """(public key, message, signature) → valid under §4."""

    def sign(self, seed: bytes, message: bytes) -> bytes:
        return self.signing_key(seed)(message)


def _sodium_public(seed: bytes) -> bytes:
    return crypto_sign_seed_keypair(seed)[0]


def _sodium_signing_key(seed: bytes) -> Sign:
    secret = crypto_sign_seed_keypair(seed)[1]  # seed ‖ public key: SHA-512 of it per call

    def sign(message: bytes) -> bytes:
        return crypto_sign(message, secret)[:SIGNATURE_LEN]

    return sign


def _sodium_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        crypto_sign_open(signature + message, public_key)  # crypto_sign_verify_detached
    except BadSignatureError:
        return False
    return True


def _openssl_public(seed: bytes) -> bytes:
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def _openssl_signing_key(seed: bytes) -> Sign:
    return Ed25519PrivateKey.from_private_bytes(seed).sign


def _openssl_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if not meets_wire_rule(public_key, signature):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


LIBSODIUM = Backend("libsodium", _sodium_public, _sodium_signing_key, _sodium_verify)
CRYPTOGRAPHY = Backend("cryptography", _openssl_public, _openssl_signing_key, _openssl_verify)
BACKENDS: dict[str, Backend] = {b.name: b for b in (LIBSODIUM, CRYPTOGRAPHY)}
PER_UPDATE = LIBSODIUM
"""The backend of `Signer`, `verify` and the ``ed25519_*`` functions: the faster one measured
(``meterline bench`` reports both, ``ceilings``)."""


# -- the per-update path ----------------------------------------------------------------------

ed25519_verify = PER_UPDATE.verify
"""True when `signature` is a valid signature of `message` under `public_key` by §4's rule."""


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Plain RFC 8032 Ed25519 over `message` (used by the RFC test vectors)."""
    return PER_UPDATE.sign(seed, message)


def ed25519_public(seed: bytes) -> bytes:
    return PER_UPDATE.public(seed)


class Signer:
    """Holds one Ed25519 private key. The key never leaves this object except via `seed()`."""

    __slots__ = ("_seed", "_sign", "node_id")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEY_LEN:
            raise LocalProtocolError(ErrorCode.INVALID_FIELD, "an Ed25519 seed is 32 bytes")
        self._seed = bytes(seed)
        self._sign = PER_UPDATE.signing_key(self._seed)
        self.node_id = NodeId(PER_UPDATE.public(self._seed))

    @classmethod
    def from_label(cls, label: str) -> Signer:
        """A deterministic key for tests and vectors: seed = SHA-256(label)."""
        return cls(hashlib.sha256(label.encode()).digest())

    def seed(self) -> bytes:
        return self._seed

    def sign(self, domain: str, body: bytes) -> Signature:
        return Signature(self._sign(signing_input(domain, body)))

    def __repr__(self) -> str:  # never print key material
        return f"Signer(node_id={self.node_id.hex()[:16]}…)"


def verify(node_id: bytes, domain: str, body: bytes, signature: bytes) -> None:
    """Raise RemoteProtocolError(BAD_SIGNATURE) unless `signature` is `node_id`'s over `body`."""
    if not ed25519_verify(node_id, signing_input(domain, body), signature):
        raise RemoteProtocolError(
            ErrorCode.BAD_SIGNATURE, f"signature on {domain} does not verify for {node_id.hex()}"
        )
