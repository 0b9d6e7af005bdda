"""OAuth 2.0 for UK Open Banking: the TPP's access tokens, as the OB security profile (FAPI)
has a TPP get them.

- **Client credentials** (RFC 6749 §4.4) for consents, funds checks and account reads: the
  TPP authenticates to the bank's token endpoint with ``private_key_jwt`` (RFC 7523, OIDC
  Core §9): a short JWT signed PS256 with the same key that signs its requests, ``iss`` and
  ``sub`` its client id, ``aud`` the token endpoint, a fresh ``jti``, five minutes to live.
  The token is kept until shortly before ``expires_in`` runs out and then fetched again; a
  401 from the bank (a token revoked or expired early) drops it, and the call is made once
  more with a new one.
- **Authorization code** (§4.1) for the PSU's authorisation of a payment consent: the PSU is
  sent to the bank's authorisation endpoint (:func:`authorisation_url`), approves there, and
  the bank redirects back with a code that :meth:`TokenClient.exchange_code` trades for a
  token bound to that consent, which ``POST /domestic-payments`` is made with.

Answers are read like every other bank answer (:mod:`rails.http`: bounded, strict JSON), the
token endpoint is retried on timeouts, 5xx and 429 like any call, and an OAuth error answer
(``invalid_client``, ``invalid_grant``, …) is :class:`~rails.errors.BankRejected` with the
OAuth error code as ``reason_code``. Tokens are never logged or put in an exception.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
from joserfc import jwt
from joserfc.jwk import RSAKey

from rails.errors import (
    AnswerTooLarge,
    BankProtocolError,
    BankRejected,
    BankUnavailable,
    InvalidRedirect,
)
from rails.http import JSON_ANSWER_LIMIT, parse_json, read_bounded

TOKEN_PATH = "/as/token"
AUTHORISE_PATH = "/as/authorise"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REFRESH_MARGIN_S = 30.0
"""A token is fetched again this long before the bank says it expires."""
ASSERTION_LIFETIME_S = 300


def authorisation_url(base_url: str, *, client_id: str, consent_id: str, redirect_uri: str,
                      state: str) -> str:
    """Where the PSU goes to authorise a consent (the bank redirects back with a code)."""
    query = urlencode({"response_type": "code", "client_id": client_id, "scope": "payments",
                       "consent_id": consent_id, "redirect_uri": redirect_uri,
                       "state": state})
    return f"{base_url.rstrip('/')}{AUTHORISE_PATH}?{query}"


MAX_REDIRECT = 4096
"""The longest redirect URL read (the bank's code and state are well under 200 characters)."""


def parse_redirect(redirect: str, redirect_uri: str) -> tuple[str | None, str, str | None]:
    """(code, state, error) of where the bank sent the PSU back (RFC 6749 §4.1.2): the URL
    must be our `redirect_uri` (same scheme, host, port and path) with one ``state`` and one
    ``code`` or one ``error``. Anything else is :class:`~rails.errors.InvalidRedirect`."""
    if not isinstance(redirect, str) or len(redirect) > MAX_REDIRECT:
        raise InvalidRedirect(f"a redirect is a URL of at most {MAX_REDIRECT} characters")
    got, want = urlsplit(redirect.strip()), urlsplit(redirect_uri)
    if (got.scheme, got.netloc, got.path) != (want.scheme, want.netloc, want.path):
        raise InvalidRedirect(f"the redirect is not to this node's redirect URI {redirect_uri}")
    try:
        params = parse_qs(got.query, strict_parsing=True, max_num_fields=8)
    except ValueError as exc:
        raise InvalidRedirect(f"the redirect's query does not parse: {exc}") from None
    one = {k: v[0] for k, v in params.items() if len(v) == 1}
    if set(one) != set(params) or not one.get("state"):
        raise InvalidRedirect("the redirect needs exactly one state, and one code or error")
    code, error = one.get("code"), one.get("error")
    if (code is None) == (error is None):
        raise InvalidRedirect("the redirect needs exactly one of code and error")
    return code, one["state"], error


@dataclass(slots=True)
class _Held:
    value: str = field(repr=False)
    expires_at: float


class TokenClient:
    """The TPP's tokens from one bank's token endpoint; `session` is the adapter's."""

    def __init__(self, base_url: str, client_id: str, key: RSAKey, kid: str, *,
                 session: Callable[[], aiohttp.ClientSession], timeout_s: float = 10.0,
                 attempts: int = 4, backoff_s: float = 0.25,
                 clock: Callable[[], float] = time.time) -> None:
        self._url = base_url.rstrip("/") + TOKEN_PATH
        self._client_id = client_id
        self._key = key
        self._kid = kid
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = max(1, attempts)
        self._backoff = backoff_s
        self._clock = clock
        self._held: _Held | None = None
        self._lock = asyncio.Lock()
        self.fetched = 0
        """How many tokens were fetched (tests count refreshes)."""

    def assertion(self) -> str:
        """A fresh ``private_key_jwt`` client assertion (wall-clock times: the bank checks
        them; `clock` is for the token's lifetime)."""
        now = int(time.time())
        return jwt.encode({"alg": "PS256", "kid": self._kid, "typ": "JWT"}, {
            "iss": self._client_id, "sub": self._client_id, "aud": self._url,
            "iat": now, "exp": now + ASSERTION_LIFETIME_S, "jti": str(uuid.uuid4())},
            self._key, algorithms=["PS256"])

    async def token(self) -> str:
        """The client-credentials token, fetched when there is none or it is about to expire."""
        async with self._lock:
            if self._held is None or self._clock() >= self._held.expires_at - REFRESH_MARGIN_S:
                self._held = await self._grant({"grant_type": "client_credentials",
                                                "scope": "payments accounts"})
            return self._held.value

    def invalidate(self) -> None:
        """Drop the held token (the bank refused it); the next call fetches another."""
        self._held = None

    async def exchange_code(self, code: str, redirect_uri: str) -> tuple[str, float]:
        """The consent-bound token for an authorisation code, and when it expires."""
        held = await self._grant({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": redirect_uri})
        return held.value, held.expires_at

    async def _grant(self, params: dict[str, str]) -> _Held:
        form = {**params, "client_id": self._client_id,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion()}
        last = "no attempt made"
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(min(self._backoff * 2 ** (attempt - 1), 5.0))
            try:
                async with self._session().post(self._url, data=form, timeout=self._timeout,
                                                headers={"Accept": "application/json"}
                                                ) as resp:
                    status = resp.status
                    payload = await read_bounded(resp, JSON_ANSWER_LIMIT)
            except (TimeoutError, aiohttp.ClientError, AnswerTooLarge) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if status >= 500 or status == 429:
                last = f"HTTP {status}"
                continue
            return self._read(status, payload)
        raise BankUnavailable(f"POST {TOKEN_PATH} failed after {self._attempts} attempts "
                              f"({last})")

    def _read(self, status: int, payload: bytes) -> _Held:
        data: Any = parse_json(payload, f"POST {TOKEN_PATH}") if payload else None
        if not isinstance(data, dict):
            raise BankProtocolError(f"POST {TOKEN_PATH} (HTTP {status}) answered no object")
        if status != 200:
            error = data.get("error")
            code = error if isinstance(error, str) and error.isascii() else f"HTTP{status}"
            raise BankRejected(f"POST {TOKEN_PATH} answered HTTP {status}", code[:40])
        token, kind, lifetime = (data.get("access_token"), data.get("token_type"),
                                 data.get("expires_in"))
        if not isinstance(token, str) or not 0 < len(token) <= 4096:
            raise BankProtocolError("token answer has no access_token")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise BankProtocolError("token answer is not a bearer token")
        if type(lifetime) is not int or not 0 < lifetime <= 86_400:
            raise BankProtocolError("token answer's expires_in is not 1 s to a day")
        self.fetched += 1
        return _Held(token, self._clock() + lifetime)
