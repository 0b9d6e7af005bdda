"""The dashboard on real daemons: the login form and its session cookie (reads only), the
page's assets all from the node, and — in a real headless Chromium driven by Selenium — the
page shows the channel a test opened and its balance moves after a payment, without a reload.

The browser test skips, saying why, where Chromium or chromedriver is missing
(``.ci/browser.sh`` installs them)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cluster import NodeHandle
from node.dashboard import session
from tests.e2e.cluster import Companies, companies, wait_for

CHROMIUM = os.environ.get("METERLINE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("METERLINE_CHROMEDRIVER", "/usr/bin/chromedriver")
"""Debian's binaries (.ci/browser.sh installs them); elsewhere name them in the environment."""


def request(node: NodeHandle, method: str, path: str, *, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed (the login answers 303 with its cookie)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def login(node: NodeHandle, token: str) -> tuple[int, dict[str, str], bytes]:
    return request(node, "POST", "/dashboard/login",
                   body=urllib.parse.urlencode({"token": token}).encode(),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})


def cookie_of(headers: dict[str, str]) -> str:
    return headers["set-cookie"].split(";", 1)[0]


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Companies, str]]:
    # payment.received every 300 ms (not every minute): the payee's page follows the stream
    with companies(tmp_path_factory.mktemp("dashboard"),
                   settings={"limits": {"payment_event_interval_ms": 300}}) as c:
        cid = c.open_channel()
        yield c, cid


def test_the_page_needs_a_session(opened: tuple[Companies, str]) -> None:
    c, _ = opened
    status, headers, _ = request(c.manufacturer, "GET", "/dashboard")
    assert (status, headers["location"]) == (303, "/dashboard/login")
    status, headers, body = request(c.manufacturer, "GET", "/dashboard/login")
    assert status == 200
    assert b'name="token"' in body
    assert "default-src 'none'" in headers["content-security-policy"]
    # without a session the API stays closed
    assert request(c.manufacturer, "GET", "/api/channels")[0] == 401


def test_a_wrong_token_is_refused(opened: tuple[Companies, str]) -> None:
    c, _ = opened
    status, headers, body = login(c.manufacturer, "not-the-token")
    assert status == 401
    assert "set-cookie" not in headers
    assert b"not this node" in body
    status, _, body = request(c.manufacturer, "POST", "/dashboard/login", body=b"{}",
                              headers={"Content-Type": "application/json"})
    assert status == 400
    assert json.loads(body)["error"]["code"] == "BAD_LOGIN"


def test_the_session_cookie_opens_reads_only(opened: tuple[Companies, str]) -> None:
    c, cid = opened
    man = c.manufacturer
    status, headers, _ = login(man, man.token)
    assert (status, headers["location"]) == (303, "/dashboard")
    attributes = headers["set-cookie"].lower()
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    cookie = cookie_of(headers)
    assert man.token not in cookie
    status, _, body = request(man, "GET", "/dashboard", headers={"Cookie": cookie})
    assert status == 200
    assert b"/dashboard/static/app.js" in body
    status, _, body = request(man, "GET", "/api/channels", headers={"Cookie": cookie})
    assert status == 200
    assert json.loads(body)["channels"][0]["id"] == cid
    assert request(man, "GET", "/metrics", headers={"Cookie": cookie})[0] == 200
    # a cookie never writes: no payment goes through with it
    before = man.api("GET", f"/api/channels/{cid}")["nonce_sent"]
    status, _, _ = request(man, "POST", f"/api/channels/{cid}/pay",
                           body=json.dumps({"units": {"km": "1"}}).encode(),
                           headers={"Cookie": cookie, "Content-Type": "application/json"})
    assert status == 401
    assert man.api("GET", f"/api/channels/{cid}")["nonce_sent"] == before
    # another node's session, a forged and an expired one open nothing
    other = cookie_of(login(c.carrier, c.carrier.token)[1]).split("=", 1)[1]
    other = f"{session.cookie_name(man.token)}={other}"
    assert request(man, "GET", "/api/channels", headers={"Cookie": other})[0] == 401
    forged = f"{session.cookie_name(man.token)}=v1.{int(time.time() * 1000) + 60_000}.{'0' * 64}"
    assert request(man, "GET", "/api/channels", headers={"Cookie": forged})[0] == 401
    assert not session.valid(session.issue(man.token, 0), man.token, session.SESSION_MS + 1)


def test_assets_are_a_fixed_list(opened: tuple[Companies, str]) -> None:
    c, _ = opened
    for name, kind in (("app.js", "text/javascript"), ("chart.js", "text/javascript"),
                       ("style.css", "text/css")):
        status, headers, body = request(c.manufacturer, "GET", f"/dashboard/static/{name}")
        assert status == 200
        assert headers["content-type"].startswith(kind)
        assert body
        assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")
        assert b"https://" not in body
    for name in ("..%2Fsession.py", "index.html.bak", "%2e%2e"):
        assert request(c.manufacturer, "GET", f"/dashboard/static/{name}")[0] == 404
    # the public prefix never reaches another route without the token
    for path in ("/dashboard/static/..%2F..%2Fapi%2Fchannels",
                 "/dashboard/static/../../api/channels",
                 "/dashboard/static/%2e%2e/%2e%2e/api/channels", "/dashboard/../api/channels"):
        status, _, body = request(c.manufacturer, "GET", path)
        assert status in (401, 404), (path, status)
        assert b'"channels"' not in body


# -- in a real browser --------------------------------------------------------------------------


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is not installed (run .ci/browser.sh)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped only so that it comes before the cluster: a missing browser skips at once."""
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, check: Any, what: str, timeout_s: float = 30.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(
        lambda d: check(d), message=f"timed out waiting for {what}")


def _sign_in(browser: Any, admin_port: int, token: str) -> None:
    """Sign in on a node's login page and wait until the dashboard itself is the loaded page (the
    login page is still the document for a moment after the click: nothing on it may be read)."""
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{admin_port}/dashboard/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    _wait(browser, lambda d: d.current_url.endswith("/dashboard")
          and d.execute_script("return document.readyState") == "complete", "the dashboard")


def test_the_dashboard_in_chromium(browser: Any, opened: tuple[Companies, str],
                                   tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    c, cid = opened
    man = c.manufacturer
    base = f"http://127.0.0.1:{man.admin_port}"
    browser.get(f"{base}/dashboard")
    assert browser.current_url.endswith("/dashboard/login")
    browser.find_element(By.ID, "token").send_keys(man.token)
    browser.find_element(By.ID, "sign-in").click()
    _wait(browser, lambda d: d.current_url.endswith("/dashboard"), "the dashboard")

    row_css = f'#channels tr[data-channel="{cid}"] td'

    def cells(d: Any) -> list[str]:  # read in one go: the page redraws when data changes
        texts: list[str] = d.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)",
            row_css)
        return texts

    _wait(browser, cells, "the channel row")
    detail = man.api("GET", f"/api/channels/{cid}")
    cells_now = cells(browser)
    assert cells_now[1] == "carrier"  # the peer by its name
    assert cells_now[3] == "open"
    assert cells_now[4] == f"{detail['balance']['amount']} EUR" == "5000.00 EUR"
    assert cells_now[5] == "5100.00 EUR"
    settlements = browser.execute_script(
        "return document.getElementById('settlements').textContent")
    assert "deposit" in settlements
    assert "booked" in settlements

    page_id = browser.execute_script("return window.performance.timeOrigin")
    man.api("POST", f"/api/channels/{cid}/pay",
            {"units": {"km": "1000"}, "reference": "TRIP-9", "repeat": 3})
    after = man.api("GET", f"/api/channels/{cid}")["balance"]["amount"]
    assert after == "4963.10"
    _wait(browser, lambda d: cells(d)[4] == f"{after} EUR", "the balance to move")
    # no reload: the same document
    assert browser.execute_script("return window.performance.timeOrigin") == page_id
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#usage figure[data-unit="km"] rect'),
          "the usage chart")
    assert browser.execute_script("return meterline.closesIn(11_520_000 + 30_000)") == \
        "closes in 3 h 12 min"

    shot = tmp_path / "dashboard.png"
    browser.save_screenshot(str(shot))
    print(f"dashboard screenshot: {shot}")
    assert shot.stat().st_size > 10_000

    # the payee's page, in the same browser (its own cookie: the payer's session stays), follows
    # the event stream: payment.received arrives and the balance moves
    car = c.carrier
    _sign_in(browser, car.admin_port, car.token)
    _wait(browser, lambda d: d.execute_script(
        "const e = document.getElementById('live'); return e ? e.textContent : ''")
        == "live (event stream)",
        "the event stream")
    _wait(browser, lambda d: cells(d) and cells(d)[4] == "136.90 EUR", "the payee's balance")
    seen = browser.execute_script("return meterline.events()")
    man.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "100"}, "repeat": 2})
    _wait(browser, lambda d: cells(d)[4] == "139.36 EUR", "the payee's balance to move")
    assert browser.execute_script("return meterline.events()") > seen

    # a unilateral close: the dispute deadline, as the time left
    disputed = c.open_channel(dispute_window="3h")
    man.api("POST", f"/api/channels/{disputed}/close", {"force": True})
    wait_for(lambda: car.api("GET", f"/api/channels/{disputed}")["dispute_deadline"] is not None,
             "the arbiter's dispute notice to reach the carrier")
    deadline_css = f'#disputes li[data-channel="{disputed}"] strong'
    _wait(browser, lambda d: d.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.textContent",
        deadline_css), "the dispute deadline")
    shown = browser.execute_script(
        "return document.querySelector(arguments[0]).textContent", deadline_css)
    assert re.fullmatch(r"closes in 2 h 5[0-9] min", shown), shown
    shot = tmp_path / "dashboard-payee.png"
    browser.save_screenshot(str(shot))
    print(f"dashboard screenshot (payee): {shot}")

    # the arbiter's page: the escrows it holds, and the same deadline
    arb = c.arbiter
    _sign_in(browser, arb.admin_port, arb.token)
    escrow_css = f'#escrows tr[data-channel="{cid}"] td'
    _wait(browser, lambda d: d.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)",
        escrow_css)[1:4] == ["open", "5000.00 EUR", "100.00 EUR"], "the arbiter's escrow")
    _wait(browser, lambda d: re.fullmatch(r"closes in 2 h 5[0-9] min", d.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
        deadline_css)), "the arbiter's dispute deadline")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
