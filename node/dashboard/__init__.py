"""The read-only web dashboard, served by the node on its admin port (ADR 0221).

``GET /dashboard`` is the page (the login form without a session); ``POST /dashboard/login``
takes the admin token from the form and answers with the session cookie
(node.dashboard.session); the page's script reads the admin API with that cookie — reads only —
and follows the event stream (``GET /api/events``) when the node serves one, polling otherwise.
Every asset is a file of ``static/`` served by the node: nothing is loaded from anywhere else,
and the Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from urllib.parse import parse_qs

from aiohttp import web

from node.context import now_ms
from node.dashboard import session
from node.errors import NodeError, NotFound
from node.keys import TOKEN

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS = {"app.js": "text/javascript", "chart.js": "text/javascript", "style.css": "text/css",
          "icon.svg": "image/svg+xml"}
"""Every file /dashboard/static/ serves: a fixed list, so no request names any other file."""
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}
EVENTS_PATH = "/api/events"
_MAX_FORM = 4096


def _page(name: str, *, status: int = 200, replace: dict[str, str] | None = None
          ) -> web.Response:
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    for key, value in (replace or {}).items():
        text = text.replace(key, value)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers=HEADERS)


def _has_events(request: web.Request) -> bool:
    """Whether this node serves the event stream (the page then follows it)."""
    return any(getattr(r.resource, "canonical", None) == EVENTS_PATH and r.method == "GET"
               for r in request.app.router.routes())


async def dashboard(request: web.Request) -> web.StreamResponse:
    token = request.app[TOKEN]
    if not session.valid(request.cookies.get(session.cookie_name(token)), token, now_ms()):
        raise web.HTTPSeeOther("/dashboard/login", headers=HEADERS)
    return _page("index.html", replace={
        "{{events}}": "1" if _has_events(request) else "0"})


async def login_form(request: web.Request) -> web.StreamResponse:
    return _page("login.html", replace={"{{error}}": ""})


async def login(request: web.Request) -> web.StreamResponse:
    """The form's token; right: the cookie and on to the page; wrong: the form again, 401."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise NodeError("send the login form (application/x-www-form-urlencoded, token=…)",
                        code="BAD_LOGIN")
    if request.content_length is not None and request.content_length > _MAX_FORM:
        raise NodeError(f"the login form is at most {_MAX_FORM} bytes", code="BAD_LOGIN")
    raw = await request.content.read(_MAX_FORM + 1)
    if len(raw) > _MAX_FORM:
        raise NodeError(f"the login form is at most {_MAX_FORM} bytes", code="BAD_LOGIN")
    try:
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                        max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise NodeError("the login form is not UTF-8 form data", code="BAD_LOGIN") from None
    given = form.get("token", [])
    if len(given) != 1:
        raise NodeError("the login form needs one field token", code="BAD_LOGIN")
    token = request.app[TOKEN]
    if not hmac.compare_digest(given[0].strip().encode(), token.encode()):
        return _page("login.html", status=401, replace={
            "{{error}}": '<p class="error" role="alert">That is not this node\'s admin '
                         "token (admin.token in its data directory).</p>"})
    answer = web.HTTPSeeOther("/dashboard", headers=HEADERS)
    session.set_cookie(answer, token, now_ms())
    raise answer


async def logout(request: web.Request) -> web.StreamResponse:
    answer = web.HTTPSeeOther("/dashboard/login", headers=HEADERS)
    session.clear_cookie(answer, request.app[TOKEN])
    raise answer


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound(f"no dashboard asset {name[:40]!r}", code="NO_SUCH_ROUTE")
    return web.Response(body=(STATIC_DIR / name).read_bytes(), content_type=ASSETS[name],
                        charset="utf-8", headers=HEADERS)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/dashboard", dashboard),
        web.get("/dashboard/login", login_form),
        web.post("/dashboard/login", login),
        web.post("/dashboard/logout", logout),
        web.get("/dashboard/static/{name}", asset),
    ]
