"""The UI in a real headless Chromium against a real server holding data posted through its API.

Debian's chromium (/usr/bin/chromium, installed by .ci/run) is driven by Playwright; no browser is
ever downloaded. Without chromium these tests are skipped, unless the CI variable is set: in CI
they must run. Screenshots go to tests/screenshots/ (not committed).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from deploytrack.timeutil import now_us
from tests.conftest import LiveServer, auth, create_token, run_cli

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
IN_CI = bool(os.environ.get("CI"))
if not IN_CI:
    if CHROMIUM is None:
        pytest.skip("no chromium at /usr/bin/chromium (install Debian's chromium, as .ci/run does); "
                    "set CI=1 to make this a failure", allow_module_level=True)
    pytest.importorskip("playwright.sync_api",
                        reason="the playwright package is not installed (pip install -e '.[test]')")

from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1400, "height": 900}
WIDTHS = {"phone": PHONE, "desktop": DESKTOP}
DAY_S = 86400
XSS = '<script>alert("xss")</script><img src=x onerror=alert(1)><b id=injected>bold</b>'
EVIL_PRODUCT = 'evil"><img src=x onerror=alert(5)><b id=injected>'  # no slash: it gets its own product page


def _post(client: httpx.Client, path: str, token: str, body: dict[str, Any]) -> None:
    resp = client.post(path, headers=auth(token), json=body)
    assert resp.status_code == 200, resp.text


def _seed(server: LiveServer, token: str) -> None:
    """A month of builds and deployments for three products, a failure, a rollback, and a hostile event."""
    now = int(now_us() / 1_000_000)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for n, product in enumerate(("checkout", "search", "billing")):
            for release in range(6):
                version = f"{n + 1}.{release}.0"
                at = now - (30 - release * 5 - n) * DAY_S
                sha = f"{n}{release}" + "abcdef0123456789" * 2
                _post(client, "/build-events/", token, {
                    "product_name": product, "version": version, "status": "success", "built_by": "ci-bot",
                    "scm_sha": sha, "scm_repository": f"https://github.com/acme/{product}",
                    "build_url": f"https://ci.example.com/{product}/{release}", "build_number": str(100 + release),
                    "timestamp": at})
                for step, env in enumerate(("staging", "production")):
                    start = at + 3600 * (step + 1)
                    failed = product == "search" and release == 5 and env == "production"
                    invoke = f"{product}-{release}-{env}"
                    common = {"product_name": product, "version": version, "environment_name": env,
                              "deployed_by": ["ann", "bob", "carol"][release % 3], "scm_sha": sha,
                              "scm_repository": f"https://github.com/acme/{product}", "invoke_id": invoke,
                              "build_url": f"https://ci.example.com/{product}/{release}",
                              "description": f"Deploy {product} {version} to {env}"}
                    _post(client, "/deployment-events/", token, {**common, "status": "started", "timestamp": start})
                    _post(client, "/deployment-events/", token, {
                        **common, "status": "failed" if failed else "success", "timestamp": start + 95 + 30 * step})
        _post(client, "/deployment-events/", token, {
            "product_name": "checkout", "version": "1.4.0", "environment_name": "production", "status": "success",
            "deployed_by": "ann", "description": "Rollback checkout after errors", "timestamp": now - 1800,
            "extra_metadata": {"deployment_type": "rollback"}})
        _post(client, "/deployment-events/", token, {
            "product_name": EVIL_PRODUCT, "version": f"6.6.6{XSS}", "environment_name": f"qa{XSS}",
            "status": "success", "deployed_by": XSS, "description": XSS, "scm_branch": XSS, "change_id": XSS,
            "scm_sha": "abcdef1234567", "scm_repository": "javascript:alert(2)//github.com/a/b",
            "build_url": "javascript:alert(3)", "extra_metadata": {XSS: XSS, "href": "javascript:alert(4)"}})
        deployments = client.get("/api/v1/deployments?product=search&status=failed", headers=auth(token)).json()
        opened = now - 5 * 3600
        for body in ({"product": "search", "environment": "production", "title": "Search errors after 2.5.0",
                      "severity": "sev2", "opened_at": opened, "resolved_at": opened + 2700,
                      "deployment_id": deployments["deployments"][0]["id"]},
                     {"product": "checkout", "environment": "production", "title": "Checkout latency",
                      "severity": "sev3", "opened_at": now - 3 * DAY_S, "resolved_at": now - 3 * DAY_S + 5400},
                     {"product": EVIL_PRODUCT, "environment": "production", "title": XSS, "severity": XSS[:50],
                      "change_id": XSS[:100], "opened_at": opened, "metadata": {XSS[:30]: XSS}}):
            resp = client.post("/api/v1/incidents", headers=auth(token), json=body)
            assert resp.status_code == 201, resp.text
    code, out = run_cli("metrics", "recompute", "--db", str(server.db))  # the daily snapshots, now
    assert code == 0, out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    db = tmp_path_factory.mktemp("browser") / "deploytrack.db"
    token = create_token(db, "browser-test", "ingest", "read")
    live = LiveServer(db).start()
    try:
        _seed(live, token)
        yield live, token
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page whose console errors, uncaught exceptions and dialogs are recorded."""

    def __init__(self, page: Page, width: str) -> None:
        self.page, self.width = page, width
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{self.width}-full.png"), full_page=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{self.width}.png"))  # what the first screen shows

    def no_sideways_scroll(self) -> None:
        """The page itself never scrolls sideways (wide tables scroll inside their own box)."""
        overflow = self.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{self.page.url} is {overflow}px wider than the {self.width} viewport"


def _open(browser: Browser, width: str) -> Watched:
    context = browser.new_context(viewport=WIDTHS[width], java_script_enabled=True)
    return Watched(context.new_page(), width)


def _signed_in(browser: Browser, server: tuple[LiveServer, str], width: str) -> Watched:
    live, token = server
    watched = _open(browser, width)
    watched.page.goto(live.url + "/")
    assert "/signin" in watched.page.url
    watched.page.get_by_label("API token").fill(token)
    watched.page.get_by_role("button", name="Sign in").click()
    watched.page.wait_for_url(live.url + "/")
    return watched


@pytest.mark.parametrize("width", WIDTHS)
def test_sign_in_filter_the_events_and_open_one(browser, server, width):
    live, _ = server
    w = _signed_in(browser, server, width)
    page = w.page
    assert page.get_by_role("heading", name="Production", exact=True).is_visible()
    page.get_by_role("link", name="Events", exact=True).click()
    page.wait_for_url("**/events")
    assert page.get_by_role("heading", name="Events").is_visible()
    w.shot("events")
    w.no_sideways_scroll()
    page.get_by_label("Product", exact=True).select_option("search")
    page.get_by_label("Status", exact=True).select_option("failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**status=failed**")
    statuses = page.locator("table.events tbody .badge").all_inner_texts()
    assert statuses and all("failed" in s for s in statuses)
    assert page.locator("table.events tbody tr").count() == 1
    w.shot("events-filtered")
    page.locator("table.events tbody td.when a").first.click()
    page.wait_for_url("**/events/**")
    assert page.get_by_role("heading", name="deployment of search").is_visible()
    assert page.locator('a[href="https://github.com/acme/search/commit/' + "15abcdef0123456789abcdef0123456789" + '"]'
                        ).count() == 1
    w.shot("event")
    w.no_sideways_scroll()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    page.goto(live.url + "/deployments")
    assert "/signin" in page.url
    assert w.errors == []


def _detail_paths(live: LiveServer, token: str) -> list[str]:
    """One event, deployment and incident page of the seeded data (ids read through the API)."""
    with httpx.Client(base_url=live.url, timeout=10, headers=auth(token)) as client:
        event = client.get("/api/v1/events?limit=1").json()["events"][0]["id"]
        failed = client.get("/api/v1/deployments?product=search&status=failed").json()["deployments"][0]["id"]
        incident = client.get("/api/v1/incidents?product=search").json()["incidents"][0]["id"]
    return [f"/events/{event}", f"/deployments/{failed}", f"/incidents/{incident}"]


PAGES = (("/", "Production"), ("/events", "Events"), ("/deployments", "Deployments"),
         ("/environments", "What runs where"), ("/products/checkout", "checkout"),
         ("/products/checkout?days=90", "checkout"), ("/products/search?days=7", "search"), ("/dora", "DORA metrics"),
         ("/dora?product=search&window=90d", "DORA metrics"),
         ("/dora/deployment_frequency", "Deployment frequency: what it counts"),
         ("/dora/lead_time", "Lead time for changes: what it counts"),
         ("/dora/change_failure_rate?window=90d", "Change failure rate: what it counts"),
         ("/dora/time_to_restore?window=90d", "Time to restore service: what it counts"),
         ("/incidents", "Incidents"), ("/incidents?environment=production", "Incidents"))


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_loads_cleanly_and_never_scrolls_sideways(browser, server, width):
    live, token = server
    w = _signed_in(browser, server, width)
    page = w.page
    pages = [*PAGES, *((path, None) for path in _detail_paths(live, token))]
    for path, heading in pages:
        response = page.goto(live.url + path)
        assert response is not None and response.status == 200, path
        if heading:
            assert page.get_by_role("heading", name=heading, exact=True).is_visible(), path
        w.no_sideways_scroll()
        w.shot(path.strip("/").replace("/", "-").replace("?", "-").replace("&", "-").replace("=", "") or "home")
    assert w.errors == []


def test_charts_text_is_at_least_12px_wherever_it_is_drawn(browser, server):
    live, _ = server
    for width in WIDTHS:
        w = _signed_in(browser, server, width)
        page = w.page
        for path in ("/dora?product=search&window=90d", "/products/checkout?days=90"):
            page.goto(live.url + path)
            sizes = page.evaluate("""() => [...document.querySelectorAll('svg text')]
                .filter(t => t.getClientRects().length)
                .map(t => t.getScreenCTM().a * parseFloat(getComputedStyle(t).fontSize))""")
            assert sizes and min(sizes) >= 12, (width, path, min(sizes))


def test_on_a_phone_the_matrix_is_cards_with_production_first(browser, server):
    live, _ = server
    w = _signed_in(browser, server, "phone")
    page = w.page
    page.goto(live.url + "/environments")
    assert not page.locator("table.matrix").is_visible()
    card = page.locator(".product-card", has=page.get_by_role("link", name="search", exact=True))
    assert card.is_visible()
    assert card.locator("dt").all_inner_texts() == ["production", "staging"]
    assert "2.4.0" in card.locator("dd").first.inner_text()
    page.goto(live.url + "/products/checkout?days=90")
    visible = [s for s in page.locator("svg.timeline").all() if s.is_visible()]  # the phone-width copy only
    assert len(visible) == 1
    box = visible[0].bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]


def test_home_page_puts_what_needs_attention_first(browser, server):
    live, _ = server
    w = _signed_in(browser, server, "desktop")
    page = w.page
    attention = page.locator("section.attention")
    assert attention.get_by_role("heading", name="Open incidents").is_visible()
    assert attention.get_by_text(XSS).is_visible()  # the open incident of the hostile product, as text
    rows = page.locator("table.home tbody tr")
    assert "needs attention" in rows.first.inner_text()
    search = page.locator("table.home tbody tr", has=page.get_by_role("link", name="search", exact=True))
    assert "2.4.0" in search.inner_text() and "newer 2.5.0" in search.inner_text()  # 2.5.0 failed in production
    checkout = page.locator("table.home tbody tr", has=page.get_by_role("link", name="checkout", exact=True))
    checkout.get_by_role("link", name=re.compile("^Change failure rate of checkout")).click()
    page.wait_for_url("**/dora/change_failure_rate**")
    failed = page.locator("table.deployments tbody tr.row-failed")
    assert failed.count() >= 1 and "rolled back" in failed.first.inner_text()  # 1.5.0, rolled back to 1.4.0
    assert w.errors == []


def test_the_pages_show_the_right_things(browser, server):
    live, _ = server
    w = _signed_in(browser, server, "desktop")
    page = w.page
    page.goto(live.url + "/deployments?status=failed")
    rows = page.locator("table.deployments tbody tr")
    assert rows.count() == 1 and "row-failed" in (rows.first.get_attribute("class") or "")
    assert "2m 05s" in rows.first.inner_text()
    page.goto(live.url + "/environments")
    search_row = page.locator("table.matrix tbody tr", has=page.get_by_role("link", name="search", exact=True))
    headers = page.locator("table.matrix thead th").all_inner_texts()
    cells = search_row.locator("td")  # the first column is the product's row header
    production = cells.nth(headers.index("production") - 1).inner_text()
    assert "2.4.0" in production and "newer: 2.5.0" in production  # 2.5.0 failed there; 2.4.0 still runs
    assert "2.5.0" in cells.nth(headers.index("staging") - 1).inner_text()
    page.goto(live.url + "/dora")
    assert page.locator("svg.chart polyline").count() >= 2
    assert page.locator(".card").first.get_by_text("data points").is_visible()
    page.goto(live.url + "/dora?window=90d&product=search")
    assert page.locator(".card", has_text="Change failure rate").locator(".badge").count() == 1
    assert page.locator(".card", has_text="Time to restore").locator(".value", has_text="45 min").is_visible()
    w.shot("dora-search")
    page.goto(live.url + "/dora?product=no-such-product")
    assert page.get_by_role("heading", name="No metrics yet").is_visible()
    w.shot("dora-empty")
    assert w.errors == []


def test_keyboard_reaches_the_skip_link_and_main_content(browser, server):
    w = _signed_in(browser, server, "desktop")
    page = w.page
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
    focused = page.evaluate("document.activeElement.id || document.activeElement.closest('main')?.id")
    assert focused == "main"


def test_hostile_strings_render_inert(browser, server):
    live, _ = server
    w = _signed_in(browser, server, "desktop")
    page = w.page
    page.goto(live.url + "/events?q=xss")
    page.locator("table.events tbody td.when a").first.click()
    page.wait_for_url("**/events/**")
    event_url = page.url
    page.goto(live.url + "/environments")
    product_href = page.locator('a[href^="/products/evil"]').first.get_attribute("href")
    page.goto(live.url + product_href)
    deployment_href = page.locator('.lane-list a[href^="/deployments/"]').first.get_attribute("href")
    for path in (event_url.removeprefix(live.url), "/", "/events", "/deployments", "/environments", product_href,
                 "/incidents", deployment_href, "/dora"):
        page.goto(live.url + path)
        page.mouse.move(200, 300)
        for link in [a for a in page.locator("main a").all()[:60] if a.is_visible()][:40]:
            link.hover()  # onmouseover-style payloads would fire here
        injected = page.evaluate("""() => ({
            scripts: document.scripts.length,
            injected: document.querySelectorAll('#injected, img[src="x"], [onerror], [onmouseover]').length,
            jsLinks: [...document.querySelectorAll('a[href]')].filter(a => !/^https?:|^\\//.test(a.getAttribute('href'))
                       && !a.getAttribute('href').startsWith('?') && !a.getAttribute('href').startsWith('#')).length,
        })""")
        assert injected == {"scripts": 0, "injected": 0, "jsLinks": 0}, path
        assert XSS in page.locator("main").inner_text() or path in ("/dora",), path
    w.shot("xss")
    assert w.dialogs == []
    assert w.errors == []
