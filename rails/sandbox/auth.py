"""The sandbox bank's authorisation server: OAuth 2.0 as the OB security profile has an ASPSP
run it.

- ``POST /as/token`` — ``client_credentials`` and ``authorization_code`` grants. The client
  authenticates with ``private_key_jwt`` (RFC 7523): a JWT signed PS256 with the key it
  registered, ``iss`` = ``sub`` = its client id, ``aud`` = this endpoint's URL, at most five
  minutes to live, a ``jti`` never seen before. The answer is a bearer token with
  ``expires_in`` (:attr:`Authority.ttl_s`); errors are RFC 6749 §5.2 bodies
  (``invalid_client`` 401, ``invalid_grant``, ``unsupported_grant_type``, ``invalid_request``
  400).
- ``GET /as/authorise`` — the PSU's authorisation of a payment consent, as the redirect a TPP
  sends its PSU to: ``response_type=code``, ``client_id``, ``consent_id``, ``redirect_uri``,
  ``state``. A sandbox has no PSU to log in, so the PSU's answer is the ``decision`` query
  parameter (``approve`` or ``reject``) that a test (or the demo) sets; the consent becomes
  ``Authorised`` or ``Rejected`` and the bank answers ``302`` to the redirect URI with a
  single-use ``code`` (60 s) or ``error=access_denied``, and the ``state``. The token the code
  gives is bound to that consent: ``POST /domestic-payments`` for a PSU-authorised consent
  needs it (any other token is 403).
- ``POST /_sandbox/tokens/expire`` (admin) — every token issued so far expires now, as after a
  revocation; clients must fetch new ones.

Tokens are random (32 bytes), kept only as SHA-256 digests and only in memory: a restarted
bank has forgotten them, and a client simply asks again.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from rails.ob_jws import import_public_key
from rails.ob_oauth import ASSERTION_TYPE, AUTHORISE_PATH, TOKEN_PATH
from rails.sandbox.db import BankDB, ClientRow

CODE_TTL_S = 60
MAX_ASSERTION_LIFETIME_S = 300


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Issued:
    client_id: str
    consent_id: str | None
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Code:
    client_id: str
    consent_id: str
    redirect_uri: str
    expires_at: float


@dataclass
class Authority:
    db: BankDB
    ttl_s: int = 3600
    clock: Callable[[], float] = time.time
    tokens: dict[str, Issued] = field(default_factory=dict)
    codes: dict[str, _Code] = field(default_factory=dict)
    jtis: dict[str, float] = field(default_factory=dict)
    psu_authorised: set[str] = field(default_factory=set)
    """Consents the PSU authorised here: their payments need the code's token."""

    def issue(self, client_id: str, consent_id: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[_digest(token)] = Issued(client_id, consent_id, self.clock() + self.ttl_s)
        return token

    def bearer(self, header: str) -> Issued | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        issued = self.tokens.get(_digest(token.strip()))
        if issued is None or issued.expires_at <= self.clock():
            return None
        return issued

    def expire_all(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count

    def client_from_assertion(self, form: Any, audience: str) -> ClientRow:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError(401, "invalid_client", "client_assertion_type must be "
                             "jwt-bearer (private_key_jwt)")
        assertion = form.get("client_assertion")
        client_id = form.get("client_id")
        if not isinstance(assertion, str) or not assertion or len(assertion) > 8192:
            raise OAuthError(401, "invalid_client", "client_assertion is missing")
        client = self.db.client(client_id) if isinstance(client_id, str) else None
        if client is None:
            raise OAuthError(401, "invalid_client", "unknown client")
        try:
            token = jwt.decode(assertion, import_public_key(client.jwk), algorithms=["PS256"])
            JWTClaimsRegistry(
                iss={"essential": True, "value": client.client_id},
                sub={"essential": True, "value": client.client_id},
                aud={"essential": True, "value": audience},
                exp={"essential": True}, jti={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise OAuthError(401, "invalid_client", f"client assertion refused: {exc}") from exc
        now = self.clock()
        exp, iat = token.claims.get("exp"), token.claims.get("iat", now)
        if not isinstance(exp, int) or not isinstance(iat, int | float) \
                or exp - iat > MAX_ASSERTION_LIFETIME_S:
            raise OAuthError(401, "invalid_client", "client assertion lives too long")
        jti = str(token.claims["jti"])
        self.jtis = {j: t for j, t in self.jtis.items() if t > now}
        if jti in self.jtis:
            raise OAuthError(401, "invalid_client", "client assertion replayed")
        self.jtis[jti] = float(exp)
        return client


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


AUTHORITY = web.AppKey("authority", Authority)


def _oauth_error(exc: OAuthError) -> web.Response:
    return web.json_response({"error": exc.error, "error_description": exc.description},
                             status=exc.status, headers={"Cache-Control": "no-store"})


async def token(request: web.Request) -> web.StreamResponse:
    authority = request.app[AUTHORITY]
    try:
        form = await request.post()
        client = authority.client_from_assertion(form, str(request.url.with_query(None)))
        grant = form.get("grant_type")
        consent_id: str | None = None
        if grant == "client_credentials":
            pass
        elif grant == "authorization_code":
            code = authority.codes.pop(str(form.get("code", "")), None)
            if code is None or code.expires_at <= authority.clock() \
                    or code.client_id != client.client_id \
                    or code.redirect_uri != form.get("redirect_uri"):
                raise OAuthError(400, "invalid_grant", "the code is unknown, used, expired, "
                                 "or was given to another client or redirect URI")
            consent_id = code.consent_id
        else:
            raise OAuthError(400, "unsupported_grant_type",
                             "grant_type is client_credentials or authorization_code")
    except OAuthError as exc:
        return _oauth_error(exc)
    return web.json_response(
        {"access_token": authority.issue(client.client_id, consent_id), "token_type": "Bearer",
         "expires_in": authority.ttl_s,
         "scope": "payments" if consent_id else "payments accounts"},
        headers={"Cache-Control": "no-store"})


def _redirect_target(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise OAuthError(400, "invalid_request", "redirect_uri must be an absolute http(s) URL "
                         "without a fragment")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise OAuthError(400, "invalid_request", "an http redirect_uri must be on loopback")
    return uri


async def authorise(request: web.Request) -> web.StreamResponse:
    authority = request.app[AUTHORITY]
    q = request.query
    try:
        if q.get("response_type") != "code":
            raise OAuthError(400, "unsupported_response_type", "response_type must be code")
        client = authority.db.client(q.get("client_id", ""))
        if client is None:
            raise OAuthError(400, "invalid_request", "unknown client")
        redirect = _redirect_target(q.get("redirect_uri", ""))
        consent_id = q.get("consent_id", "")
        decision = q.get("decision")
        if decision not in ("approve", "reject"):
            raise OAuthError(400, "invalid_request", "the PSU's decision is approve or reject")
        with authority.db.transaction():
            consent = authority.db.consent(consent_id)
            if consent is None or consent.client_id != client.client_id:
                raise OAuthError(400, "invalid_request", "no such consent for this client")
            if consent.status != "AwaitingAuthorisation":
                raise OAuthError(400, "invalid_request", f"the consent is {consent.status}")
            authority.db.set_consent_status(
                consent_id, "Authorised" if decision == "approve" else "Rejected")
    except OAuthError as exc:
        return _oauth_error(exc)
    answer: dict[str, str] = {"state": q.get("state", "")}
    if decision == "approve":
        code = secrets.token_urlsafe(24)
        authority.codes[code] = _Code(client.client_id, consent_id, redirect,
                                      authority.clock() + CODE_TTL_S)
        authority.psu_authorised.add(consent_id)
        answer["code"] = code
    else:
        answer["error"] = "access_denied"
    sep = "&" if "?" in redirect else "?"
    raise web.HTTPFound(f"{redirect}{sep}{urlencode(answer)}")


async def admin_expire_tokens(request: web.Request) -> web.StreamResponse:
    return web.json_response({"expired": request.app[AUTHORITY].expire_all()})


ROUTES = [
    web.post(TOKEN_PATH, token),
    web.get(AUTHORISE_PATH, authorise),
    web.post("/_sandbox/tokens/expire", admin_expire_tokens),
]
