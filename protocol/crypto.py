"""Ed25519 identities and domain-separated signatures (specs/0002-wire.md §4).

A node id is the node's 32-byte Ed25519 public key. A signature never covers bare message bytes:
it covers ``DOMAIN_PREFIX || name || 0x00 || version || body`` where `name` says what kind of
message is signed, so a signature made for one message type can never be replayed as another.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from protocol import PROTOCOL_VERSION
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.types import NodeId, Signature

DOMAIN_PREFIX = b"meterline/"
SIGNATURE_LEN = 64
KEY_LEN = 32


def signing_input(domain: str, body: bytes) -> bytes:
    """The exact bytes a signature covers."""
    return DOMAIN_PREFIX + domain.encode("ascii") + b"\x00" + bytes([PROTOCOL_VERSION]) + body


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Plain RFC 8032 Ed25519 over `message` (used by the RFC test vectors)."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def ed25519_public(seed: bytes) -> bytes:
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid RFC 8032 signature of `message` under `public_key`."""
    if len(public_key) != KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Signer:
    """Holds one Ed25519 private key. The key never leaves this object except via `seed()`."""

    __slots__ = ("_key", "node_id")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEY_LEN:
            raise LocalProtocolError(ErrorCode.INVALID_FIELD, "an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.node_id = NodeId(
            self._key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    @classmethod
    def from_label(cls, label: str) -> Signer:
        """A deterministic key for tests and vectors: seed = SHA-256(label)."""
        return cls(hashlib.sha256(label.encode()).digest())

    def seed(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, domain: str, body: bytes) -> Signature:
        return Signature(self._key.sign(signing_input(domain, body)))

    def __repr__(self) -> str:  # never print key material
        return f"Signer(node_id={self.node_id.hex()[:16]}…)"


def verify(node_id: bytes, domain: str, body: bytes, signature: bytes) -> None:
    """Raise RemoteProtocolError(BAD_SIGNATURE) unless `signature` is `node_id`'s over `body`."""
    if not ed25519_verify(node_id, signing_input(domain, body), signature):
        raise RemoteProtocolError(
            ErrorCode.BAD_SIGNATURE, f"signature on {domain} does not verify for {node_id.hex()}"
        )
