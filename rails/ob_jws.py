"""Detached JWS as UK Open Banking R/W v3.1.4+ uses it for ``x-jws-signature``.

The signature is a JWS compact serialisation over the raw HTTP body with the payload segment
left empty (``header..signature``). The protected header carries ``alg`` (PS256), ``kid``, ``typ``,
``cty`` and three OB claims, all listed in ``crit``:

- ``http://openbanking.org.uk/iat``: the signing time, in seconds since the epoch;
- ``http://openbanking.org.uk/iss``: who signs. With ``tan`` = ``openbanking.org.uk`` a TPP
  sends ``{org-id}/{software-statement-id}`` and an ASPSP its ``{org-id}`` (OB Directory
  identifiers; :func:`ob_issuer`), never a client id;
- ``http://openbanking.org.uk/tan``: the trust anchor, ``openbanking.org.uk``.

Since v3.1.4 the header carries no ``b64`` claim (the payload is base64url-encoded as in plain
RFC 7515); a ``b64`` header is rejected. joserfc refuses unknown ``crit`` names unless they are in
its header registry, so :data:`OB_REGISTRY` registers the three claims.

**Header length.** joserfc refuses a protected header longer than 512 bytes by default; ours is
already about 500 (base64url), and a real ASPSP's (a longer ``kid``, an ``x5u``, an OB
Directory ``iss``) is longer still. The bound here is :data:`MAX_HEADER_BYTES` (4 KiB of the
base64url segment, eight times what OB headers need and small enough that a hostile header
costs nothing to refuse); a longer one is ``UK.OBIE.Signature.Malformed``. The detached payload
may be as long as the largest answer read (:data:`rails.http.STATEMENT_ANSWER_LIMIT`).

Shared by the adapter (:mod:`rails.openbanking`, signs requests, verifies the bank's answers) and
the sandbox bank (:mod:`rails.sandbox`, verifies requests, signs answers).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter

from rails.http import STATEMENT_ANSWER_LIMIT

OB_IAT = "http://openbanking.org.uk/iat"
OB_ISS = "http://openbanking.org.uk/iss"
OB_TAN = "http://openbanking.org.uk/tan"
OB_TRUST_ANCHOR = "openbanking.org.uk"
ALGORITHM = "PS256"
MAX_CLOCK_SKEW_S = 300
MAX_HEADER_BYTES = 4096
"""The longest protected header (its base64url segment) a signature may carry."""
_DIRECTORY_ID = re.compile(r"[A-Za-z0-9]{1,40}")

OB_REGISTRY = JWSRegistry(
    header_registry={
        OB_IAT: HeaderParameter("OB signing time (epoch seconds)", "int", required=True),
        OB_ISS: HeaderParameter("OB signer", "str", required=True),
        OB_TAN: HeaderParameter("OB trust anchor", "str", required=True),
    },
    algorithms=[ALGORITHM],
)
OB_REGISTRY.max_header_length = MAX_HEADER_BYTES
OB_REGISTRY.max_payload_length = STATEMENT_ANSWER_LIMIT


def ob_issuer(org_id: str, software_statement_id: str | None = None) -> str:
    """The ``iss`` claim: ``{org-id}/{software-statement-id}`` for a TPP, ``{org-id}`` for an
    ASPSP (no statement id). Both are OB Directory ids: 1 to 40 letters and digits."""
    for what, value in (("org id", org_id), ("software statement id", software_statement_id)):
        if value is not None and not _DIRECTORY_ID.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not 1 to 40 letters and digits")
    return org_id if software_statement_id is None else f"{org_id}/{software_statement_id}"


class SignatureError(Exception):
    """A detached JWS is missing, malformed, or does not verify. `code` is the OB error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def generate_signing_key(path: str | Path | None = None) -> RSAKey:
    """A fresh RSA 2048 key for PS256; written as PKCS#8 PEM with mode 0600 when `path` is given.

    The file is created with ``O_EXCL``: an existing key is never overwritten.
    """
    key = RSAKey.generate_key(2048, private=True)
    if path is not None:
        pem = key.as_pem(private=True)
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    return key


def load_signing_key(path: str | Path) -> RSAKey:
    """Read a private key written by :func:`generate_signing_key` (or any RSA PEM)."""
    key = RSAKey.import_key(Path(path).read_bytes())
    if not key.is_private:
        raise ValueError(f"{path} holds a public key; a signing key must be private")
    return key


def import_public_key(value: Mapping[str, Any] | str) -> RSAKey:
    """An RSA public key from a JWK dict or a PEM string (private parts are dropped)."""
    key = RSAKey.import_key(dict(value) if isinstance(value, Mapping) else value.encode())
    return RSAKey.import_key(key.as_dict(private=False))


def key_id(key: RSAKey) -> str:
    """The RFC 7638 thumbprint, used as ``kid``."""
    return str(key.thumbprint())


def public_jwk(key: RSAKey) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


def sign_detached(body: bytes, key: RSAKey, *, kid: str, issuer: str,
                  now_s: int | None = None) -> str:
    """``x-jws-signature`` for `body`: ``<protected>..<signature>``."""
    header = {
        "alg": ALGORITHM,
        "kid": kid,
        "typ": "JOSE",
        "cty": "application/json",
        OB_IAT: int(time.time()) if now_s is None else now_s,
        OB_ISS: issuer,
        OB_TAN: OB_TRUST_ANCHOR,
        "crit": [OB_IAT, OB_ISS, OB_TAN],
    }
    compact = jws.serialize_compact(header, body, key, registry=OB_REGISTRY)
    return jws.detach_content(compact)


def verify_detached(signature: str | None, body: bytes, key: RSAKey, *, kid: str,
                    issuer: str, now_s: int | None = None) -> dict[str, Any]:
    """Check `signature` over `body`; return its protected header or raise SignatureError."""
    if not signature:
        raise SignatureError("UK.OBIE.Signature.Missing", "x-jws-signature is missing")
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise SignatureError("UK.OBIE.Signature.Malformed",
                             "x-jws-signature must be a detached compact JWS (header..signature)")
    if len(parts[0]) > MAX_HEADER_BYTES:
        raise SignatureError("UK.OBIE.Signature.Malformed",
                             f"JWS header is {len(parts[0])} bytes, more than {MAX_HEADER_BYTES}")
    try:
        raw_header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError as exc:
        raise SignatureError("UK.OBIE.Signature.Malformed", "JWS header is not JSON") from exc
    if not isinstance(raw_header, dict):
        raise SignatureError("UK.OBIE.Signature.Malformed", "JWS header is not an object")
    if "b64" in raw_header:
        raise SignatureError("UK.OBIE.Signature.Unexpected",
                             "b64 is not allowed in the JWS header since v3.1.4")
    try:
        obj = jws.extract_compact(signature.encode(), body, OB_REGISTRY)
    except (JoseError, ValueError) as exc:
        raise SignatureError("UK.OBIE.Signature.Malformed", f"cannot parse JWS: {exc}") from exc
    header = obj.headers()
    if header.get("alg") != ALGORITHM:
        raise SignatureError("UK.OBIE.Signature.InvalidClaim", "alg must be PS256")
    crit = header.get("crit")
    if not isinstance(crit, list) or set(crit) != {OB_IAT, OB_ISS, OB_TAN}:
        raise SignatureError("UK.OBIE.Signature.MissingClaim",
                             "crit must list the iat, iss and tan claims")
    if header.get("kid") != kid:
        raise SignatureError("UK.OBIE.Signature.InvalidClaim", "kid does not name the signer's key")
    if header.get(OB_ISS) != issuer:
        raise SignatureError("UK.OBIE.Signature.InvalidClaim", "iss does not name the signer")
    if header.get(OB_TAN) != OB_TRUST_ANCHOR:
        raise SignatureError("UK.OBIE.Signature.InvalidClaim", "tan is not openbanking.org.uk")
    iat = header.get(OB_IAT)
    now = int(time.time()) if now_s is None else now_s
    if not isinstance(iat, int) or isinstance(iat, bool) or abs(now - iat) > MAX_CLOCK_SKEW_S:
        raise SignatureError("UK.OBIE.Signature.InvalidClaim", "iat is missing or out of range")
    try:
        valid = jws.validate_compact(obj, key, registry=OB_REGISTRY)
    except (JoseError, ValueError) as exc:
        raise SignatureError("UK.OBIE.Signature.Invalid", f"signature rejected: {exc}") from exc
    if not valid:
        raise SignatureError("UK.OBIE.Signature.Invalid", "signature does not verify")
    return dict(header)
