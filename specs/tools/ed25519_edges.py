"""Ed25519 signatures at the edges of specs/0002-wire.md §4's verification rule, made by hand.

A plain, slow implementation of the curve (RFC 8032 §5.1, affine coordinates) that can build
what no library's signing function will: a signature with S + L instead of S, one whose R is a
point of small order, and signatures under public keys of small order, which hold for the
cofactorless equation [S]B = R + [h]A without anyone's private key. `equation_holds` is that
equation with none of §4's extra checks: every refused vector satisfies it, so what refuses it
is the rule, not a broken signature. Used by ``make_vectors`` (keys.json ``edge_cases``) and by
the tests; never by the node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

Point = tuple[int, int]
SigningInput = Callable[[bytes], bytes]

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY: Point = (0, 1)


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P,
        (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P,
    )


def mul(k: int, point: Point) -> Point:
    out = IDENTITY
    while k:
        if k & 1:
            out = add(out, point)
        point = add(point, point)
        k >>= 1
    return out


def _x(y: int, sign: int) -> int | None:
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if (x & 1) != sign else x


def decode(data: bytes) -> Point | None:
    """A point from its 32 bytes, accepting a non-canonical y ≥ p (reduced mod p)."""
    n = int.from_bytes(data, "little")
    y = (n & ((1 << 255) - 1)) % P
    x = _x(y, n >> 255)
    return None if x is None else (x, y)


def encode(point: Point) -> bytes:
    x, y = point
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


BASE: Point = (_x(4 * pow(5, -1, P) % P, 0) or 0, 4 * pow(5, -1, P) % P)


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def _secret(seed: bytes) -> tuple[int, bytes]:
    digest = hashlib.sha512(seed).digest()
    a = int.from_bytes(digest[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    return a, digest[32:]


def sign(seed: bytes, message: bytes) -> bytes:
    """RFC 8032 signing, for the generator's cross-check against the libraries."""
    a, prefix = _secret(seed)
    public = encode(mul(a, BASE))
    r = _h(prefix, message) % L
    big_r = encode(mul(r, BASE))
    return big_r + ((r + _h(big_r, public, message) * a) % L).to_bytes(32, "little")


def plus_l(signature: bytes) -> bytes:
    """The same signature with S + L for S: [S + L]B = [S]B, a second byte string for it."""
    s = int.from_bytes(signature[32:], "little")
    return signature[:32] + (s + L).to_bytes(32, "little")


def identity_r(seed: bytes, message: bytes) -> bytes:
    """A signature of `message` by `seed`'s key with R the identity (order 1) and S = h·a: the
    equation holds, and R commits to no nonce."""
    a, _prefix = _secret(seed)
    public, ident = encode(mul(a, BASE)), encode(IDENTITY)
    return ident + (_h(ident, public, message) % L * a % L).to_bytes(32, "little")


def equation_holds(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """[S]B = R + [h]A with S taken as the integer it encodes and no check on A, R or S."""
    a, r = decode(public_key), decode(signature[:32])
    if a is None or r is None:
        return False
    h = _h(signature[:32], public_key, message) % L
    return mul(int.from_bytes(signature[32:], "little"), BASE) == add(r, mul(h, a))


def torsion() -> list[Point]:
    """The eight points of order dividing 8, as multiples of one of order 8."""
    for y in range(2, 100):
        point = decode(y.to_bytes(32, "little"))
        if point is None:
            continue
        t = mul(L, point)  # kill the prime-order part
        if mul(4, t) != IDENTITY:
            return [mul(k, t) for k in range(8)]
    raise AssertionError("no point of order 8 found")


def order(point: Point) -> int:
    return next(n for n in (1, 2, 4, 8) if mul(n, point) == IDENTITY)


def _forge(public_key: bytes, key_point: Point, make_input: SigningInput,
           name: str) -> dict[str, Any]:
    """S = 0 and R = −[h]A for a key A of small order: grind the body until some small-order
    R gives it (the hash decides which R is needed)."""
    for i in range(1_000):
        body = f"{name} {i}".encode()
        message = make_input(body)
        for r in torsion():
            big_r = encode(r)
            h = _h(big_r, public_key, message) % L
            if add(mul(h % 8, key_point), r) == IDENTITY:
                return {"body": body, "signature": big_r + bytes(32)}
    raise AssertionError(f"{name}: no forgery found")


def edge_cases(seed: bytes, make_input: SigningInput) -> list[dict[str, Any]]:
    """The cases of keys.json ``edge_cases``: `name`, `why`, `public_key`, `body`, `signature`
    (bytes) and `valid`. `seed` is a real key (mallory's); `make_input(body)` is the signing input
    of a body."""
    a, prefix = _secret(seed)
    key = mul(a, BASE)
    public = encode(key)
    out: list[dict[str, Any]] = []

    body = b"non-canonical S"
    out.append({"name": "S + L", "public_key": public, "body": body,
                "signature": plus_l(sign(seed, make_input(body))), "valid": False,
                "why": "S is not below L: a second encoding of a valid signature "
                       "(malleability); [S+L]B = [S]B, so the equation holds"})

    body = b"small-order R"
    ident = encode(IDENTITY)
    out.append({"name": "small-order R", "public_key": public, "body": body,
                "signature": identity_r(seed, make_input(body)), "valid": False,
                "why": "R is the identity point (order 1), S = h·a: a real key's signature "
                       "whose R carries no commitment to a nonce"})

    by_order: dict[int, Point] = {}
    for point in torsion():
        by_order.setdefault(order(point), point)
    for n in (1, 2, 4, 8):
        point = by_order[n]
        pk = encode(point)
        forged = _forge(pk, point, make_input, f"order-{n} key")
        out.append({"name": f"order-{n} public key", "public_key": pk, **forged,
                    "valid": False,
                    "why": f"the public key is a point of order {n}: S = 0 and a small-order R "
                           "satisfy the equation with no private key at all"})

    non_canonical = (P + 1).to_bytes(32, "little")  # y = p + 1 ≡ 1: the identity again
    body = b"non-canonical key"
    out.append({"name": "non-canonical public key", "public_key": non_canonical, "body": body,
                "signature": ident + bytes(32), "valid": False,
                "why": "the key's y is p + 1 (not reduced): a second encoding of the identity, "
                       "under which R = identity, S = 0 verifies any message"})

    mixed = add(key, by_order[8])
    mixed_pk = encode(mixed)
    for i in range(1_000):
        body = f"mixed-order key {i}".encode()
        message = make_input(body)
        r = _h(prefix, message) % L
        big_r = encode(mul(r, BASE))
        h = _h(big_r, mixed_pk, message) % L
        if h % 8 == 0:
            out.append({"name": "mixed-order public key", "public_key": mixed_pk, "body": body,
                        "signature": big_r + ((r + h * a) % L).to_bytes(32, "little"),
                        "valid": True,
                        "why": "the key is a real key plus a point of order 8 and h ≡ 0 mod 8: "
                               "the cofactorless equation holds and the rule does not refuse "
                               "mixed-order keys (libsodium does not): accepted"})
            break
    return out
