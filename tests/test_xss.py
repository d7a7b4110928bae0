"""Server-side XSS check: events whose every text field holds script, markup and `javascript:` links
render inert in every HTML page (the real-browser check is the UI's browser test).

Every page is found from the app's route table and filled with the hostile data's ids, so a new
page is checked too. The HTML must contain the hostile text only escaped: no `<script` but the
package's own, no event-handler attribute, no `javascript:` (or other non-http) link.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

from starlette.routing import Route

from tests.conftest import auth

MARK = "zq9"  # appears inside every payload, so we can tell data from the template's own markup
PAYLOAD = (f'"><script>alert("{MARK}")</script><img src=x onerror=alert("{MARK}")>'
           f'<a href="javascript:alert(\'{MARK}\')">{MARK}</a><svg/onload=alert(1)>{{{{7*7}}}}</textarea>')
BAD_HREFS = [f"javascript:alert('{MARK}')", f"JaVaScRiPt:alert('{MARK}')", f" javascript:alert('{MARK}')",
             f"java\tscript:alert('{MARK}')", f"data:text/html,<script>alert('{MARK}')</script>",
             f"vbscript:msgbox('{MARK}')", f"//evil.example/{MARK}"]
SAFE_SCHEMES = ("http://", "https://", "/", "#", "?", "mailto:")  # what the templates themselves link to


class Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and not (values.get("src") or "").startswith("/static/"):
            self.problems.append(f"<script> not from /static: {attrs}")
        if tag in ("iframe", "object", "embed", "frame") or (tag in ("base", "meta") and MARK in str(attrs)):
            self.problems.append(f"<{tag}> in a page: {attrs}")
        for name, value in attrs:  # data may sit, escaped, in text attributes (title, aria-label), not in these
            if name in ("src", "srcdoc", "style", "data", "xlink:href", "formaction") and MARK in (value or ""):
                self.problems.append(f"<{tag} {name}={value!r}> built from data")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"event handler attribute {name}={value!r} on <{tag}>")
            if name in ("href", "src", "action", "formaction", "xlink:href", "srcdoc") and value is not None:
                link = value.strip()
                if link == "data:," and tag == "link":  # the empty favicon in base.html
                    continue
                if not link.startswith(SAFE_SCHEMES) or link.startswith("//"):
                    self.problems.append(f"<{tag} {name}={value!r}>: not an http(s) or same-site link")


def inspect_page(html: str, where: str) -> None:
    inspector = Inspector()
    inspector.feed(html)
    assert not inspector.problems, (where, inspector.problems[:5])
    for raw in ("<script>alert", "<img src=x", "<svg/onload", f"<a href=\"javascript:alert('{MARK}')"):
        assert raw not in html, (where, raw)


def hostile_world(client: Any, token: str) -> dict[str, list[str]]:
    """Store hostile events through every dialect and the native API; return ids for path parameters."""
    h = auth(token)
    ids: dict[str, list[str]] = {"event_id": [], "incident_id": [], "name": [PAYLOAD[:60]],
                                 "metric": ["deployment_frequency", "lead_time", "change_failure_rate",
                                            "time_to_restore", PAYLOAD[:60]]}
    text = {k: PAYLOAD for k in ("deployed_by", "scm_branch", "scm_repository", "description", "change_id",
                                 "source_system", "build_number")}
    for n, href in enumerate(BAD_HREFS):
        resp = client.post("/deployment-events/", headers=h, json={
            **text, "invoke_id": f"{PAYLOAD[:100]}{n}", "product_name": PAYLOAD[:60], "version": f"{PAYLOAD[:40]}{n}",
            "environment_name": PAYLOAD[:50],
            "status": "success", "scm_sha": PAYLOAD[:40] + str(n), "build_url": href,
            "extra_metadata": {PAYLOAD[:100]: PAYLOAD, "nested": {"html": PAYLOAD, "list": [PAYLOAD, href]}}})
        assert resp.status_code == 200, resp.text
        ids["event_id"].append(resp.json()["id"])
    resp = client.post("/build-events/", headers=h, json={**text, "product_name": PAYLOAD[:60], "version": "b1",
                                                          "status": "built", "built_by": PAYLOAD})
    assert resp.status_code == 200, resp.text
    ids["event_id"].append(resp.json()["id"])
    resp = client.post("/api/events/push", headers={"Authorization": f"Token {token}"}, json={
        "type": "comment", "content": PAYLOAD, "product": PAYLOAD[:60], "user": PAYLOAD, "environment": PAYLOAD[:30],
        PAYLOAD[:20]: PAYLOAD})
    assert resp.status_code == 200, resp.text
    ids["event_id"].append(resp.json()["id"])
    resp = client.post("/events", headers={"x-api-key": token}, json={"events": [{
        "type": "event-deploy", "entityId": PAYLOAD[:60], "attributes": {
            "env": "prod", "status": "success", "description": PAYLOAD, "initiator": PAYLOAD,
            "build_url": BAD_HREFS[0], "build_commit_sha": PAYLOAD[:30], PAYLOAD[:30]: PAYLOAD}}]})
    assert resp.status_code == 201, resp.text
    ids["event_id"] += [e["id"] for e in resp.json()["events"]]
    resp = client.post("/api/deployment-events", json={
        "integrationKey": token, "summary": PAYLOAD, "userEmail": PAYLOAD,
        "links": [{"href": href, "text": PAYLOAD} for href in [*BAD_HREFS, "https://ok.example/"]],
        "customDetails": {PAYLOAD[:50]: PAYLOAD}})
    assert resp.status_code == 202, resp.text
    ids["event_id"].append(resp.json()["id"])
    resp = client.post("/api/v1/incidents", headers=h, json={
        "product": PAYLOAD[:60], "title": PAYLOAD, "severity": PAYLOAD[:50], "environment": "production",
        "change_id": PAYLOAD[:50], "metadata": {PAYLOAD[:30]: PAYLOAD}})
    assert resp.status_code == 201, resp.text
    ids["incident_id"].append(str(resp.json()["id"]))
    deployments = client.get("/api/v1/deployments", headers=h)
    assert deployments.status_code == 200, deployments.text
    ids["deployment_id"] = [str(d["id"]) for d in deployments.json()["deployments"]]
    assert len(set(ids["event_id"])) == len(ids["event_id"]) == len(BAD_HREFS) + 4
    return ids


def page_urls(app: Any, ids: dict[str, list[str]]) -> list[str]:
    """Every GET route that answers HTML, with each hostile id, plus hostile query strings."""
    urls = []
    for route in app.routes:
        if not isinstance(route, Route) or "GET" not in (route.methods or set()):
            continue
        if route.path.startswith(("/api/", "/healthz", "/metrics", "/openapi.json")):
            continue
        params = re.findall(r"\{([^}:]+)(?::[^}]*)?\}", route.path)
        if not params:
            urls.append(route.path)
            urls.append(f"{route.path}?q={quote(PAYLOAD)}&product={quote(PAYLOAD[:60])}&next={quote(BAD_HREFS[0])}")
            continue
        assert len(params) == 1 and params[0] in ids, f"no hostile value for {route.path}: extend hostile_world"
        for value in ids[params[0]]:
            urls.append(re.sub(r"\{[^}]+\}", quote(value, safe=""), route.path))
    return urls


def test_hostile_data_renders_inert_in_every_page(client, token) -> None:
    ids = hostile_world(client, token)
    urls = page_urls(client.app, ids)
    assert "/" in urls and any(u.startswith("/events/") for u in urls)
    rendered_escaped = 0
    for url in urls:
        resp = client.get(url, headers={**auth(token), "Accept": "text/html"})
        assert resp.status_code in (200, 400, 404), (url, resp.status_code)
        assert resp.headers["content-type"].startswith("text/html"), url
        inspect_page(resp.text, url)
        rendered_escaped += "&lt;script&gt;alert(" in resp.text
        csp = resp.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, url
    assert rendered_escaped >= len(ids["event_id"]), "the hostile text was not rendered at all: nothing was checked"


def test_hostile_error_pages_and_signin_are_inert(client, token) -> None:
    for url in (f"/events/{quote(PAYLOAD, safe='')}", f"/no-such-page/{quote(PAYLOAD, safe='')}",
                f"/signin?next={quote(BAD_HREFS[0])}", f"/signin?next={quote(PAYLOAD)}", "/signin?next=//evil.example"):
        resp = client.get(url, headers={**auth(token), "Accept": "text/html"})
        assert resp.headers["content-type"].startswith("text/html"), url
        inspect_page(resp.text, url)
        assert "evil.example" not in resp.text and "javascript" not in resp.text.lower(), url
