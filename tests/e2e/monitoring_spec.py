"""The monitoring routes (``/metrics``, ``/dashboard…``) exchanged with a real daemon and held
against specs/admin-api.yaml by test_admin_openapi's checker: a form body and unfollowed
redirects, which its JSON helper does not send."""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Any


def exchange(admin: Any, method: str, path: str, *, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
    from tests.e2e.test_admin_openapi import Exchange

    host = f"127.0.0.1:{admin.node.admin_port}"
    sent = {"Host": host, **(headers or {})}
    conn = http.client.HTTPConnection("127.0.0.1", admin.node.admin_port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        return Exchange(method, path, sent, body, resp.status, dict(resp.getheaders()),
                        resp.read())
    finally:
        conn.close()


def exercise(admin: Any) -> None:
    """Every monitoring operation once, each checked both ways against the document."""
    token = {"Authorization": f"Bearer {admin.node.token}"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    metrics = exchange(admin, "GET", "/metrics", headers=token)
    assert metrics.status == 200, metrics.response_body[:300]
    admin.spec.check(metrics)
    for path, status in (("/dashboard", 303), ("/dashboard/login", 200),
                         ("/dashboard/static/app.js", 200), ("/dashboard/static/icon.svg", 200)):
        ex = exchange(admin, "GET", path)
        assert ex.status == status, (path, ex.status)
        admin.spec.check(ex)
    wrong = exchange(admin, "POST", "/dashboard/login", headers=form,
                     body=urllib.parse.urlencode({"token": "not-it"}).encode())
    assert wrong.status == 401
    admin.spec.check(wrong)
    right = exchange(admin, "POST", "/dashboard/login", headers=form,
                     body=urllib.parse.urlencode({"token": admin.node.token}).encode())
    assert right.status == 303
    admin.spec.check(right)
    out = exchange(admin, "POST", "/dashboard/logout")
    assert out.status == 303
    admin.spec.check(out)
