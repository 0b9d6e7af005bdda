"""The dashboard's login session: an HttpOnly, SameSite=Strict cookie the admin token signs
(ADR 0221).

The cookie is ``v1.<expiry ms>.<HMAC-SHA256(admin token, "meterline-dashboard-session" ‖
expiry)>``: it never carries the token, the node keeps no session table (a restart keeps the
operator logged in), a new admin token ends every session at once, and it expires after
:data:`SESSION_MS`. It opens **reads only** (GET and HEAD): a cookie can never pay, open, close
or add a peer, so a page that makes the browser send it cannot change anything (and
SameSite=Strict keeps other sites from sending it at all).
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

COOKIE = "meterline_session"
"""The cookie's name prefix; the name ends in 8 hex digits of SHA-256 of the admin token
(:func:`cookie_name`), since browsers scope cookies by host, not port: two nodes on one host
each keep their own session instead of overwriting each other's."""
SESSION_MS = 8 * 3_600_000
"""A working day; then the operator types the token again."""
PUBLIC = frozenset({"/dashboard", "/dashboard/login", "/dashboard/logout"})
"""Dashboard paths served without a token (the page itself holds no data; it asks the API)."""
STATIC = "/dashboard/static/"
READS = frozenset({"GET", "HEAD"})
_DOMAIN = b"meterline-dashboard-session\x00"
_MAX_COOKIE = 200


def cookie_name(token: str) -> str:
    return f"{COOKIE}_{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def _mac(token: str, expiry_ms: int) -> str:
    return hmac.new(token.encode(), _DOMAIN + str(expiry_ms).encode(), hashlib.sha256).hexdigest()


def issue(token: str, now_ms: int) -> str:
    """A new session cookie value, valid for SESSION_MS from `now_ms`."""
    expiry = now_ms + SESSION_MS
    return f"v1.{expiry}.{_mac(token, expiry)}"


def valid(value: str | None, token: str, now_ms: int) -> bool:
    """Whether `value` is a session this token signed and that has not expired."""
    if not value or len(value) > _MAX_COOKIE:
        return False
    version, _, rest = value.partition(".")
    expiry_text, _, mac = rest.partition(".")
    if version != "v1" or not expiry_text.isascii() or not expiry_text.isdigit() \
            or len(expiry_text) > 16:
        return False
    expiry = int(expiry_text)
    if expiry <= now_ms or expiry > now_ms + SESSION_MS:
        return False
    return hmac.compare_digest(mac.encode(), _mac(token, expiry).encode())


def public(request: web.Request) -> bool:
    """The login page, the dashboard shell and its static assets: no token needed."""
    return request.path in PUBLIC or request.path.startswith(STATIC)


def allows(request: web.Request, token: str, now_ms: int) -> bool:
    """A read (GET, HEAD) carrying a valid session cookie."""
    return request.method in READS and valid(
        request.cookies.get(cookie_name(token)), token, now_ms)


def set_cookie(response: web.StreamResponse, token: str, now_ms: int) -> None:
    response.set_cookie(cookie_name(token), issue(token, now_ms), max_age=SESSION_MS // 1000,
                        path="/", httponly=True, samesite="Strict")


def clear_cookie(response: web.StreamResponse, token: str) -> None:
    response.del_cookie(cookie_name(token), path="/")
