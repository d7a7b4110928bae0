"""The HTML pages through the real app: sign-in, CSRF, public reading, each page's content, escaping."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from deploytrack.timeutil import day_start_us, now_us
from tests.conftest import auth, create_token, execute, run_cli

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "form has no CSRF field"
    return match.group(1)


def sign_in(client: TestClient, secret: str, next_path: str = "/"):
    form = client.get("/signin")
    return client.post("/signin", data={"csrf": csrf_of(form.text), "token": secret, "next": next_path},
                       follow_redirects=False)


def deploy(client: TestClient, token: str, **body: object) -> dict:
    payload = {"product_name": "api", "version": "1.0.0", "environment_name": "production", "status": "success",
               **body}
    resp = client.post("/deployment-events/", headers=auth(token), json=payload)
    assert resp.status_code == 200, resp.text
    return resp.json()


def db_execute(db_path: Path, sql: str, params: tuple = ()) -> None:
    execute(db_path, sql, params)


def add_incident(db_path: Path, title: str, *, product: str = "api", deployment_id: int | None = None,
                 resolved: bool = False, change_id: str | None = None, link_rule: str | None = None) -> None:
    opened = now_us() - 7_200_000_000
    db_execute(db_path, "INSERT INTO incidents (product, environment, title, severity, status, opened_at, resolved_at, "
               "change_id, deployment_id, requested_deployment_id, link_rule, metadata, created_at, updated_at) "
               "VALUES (?, 'production', ?, 'sev2', ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
               (product, title, "resolved" if resolved else "open", opened,
                opened + 1_800_000_000 if resolved else None, change_id, deployment_id, deployment_id, link_rule,
                opened, opened))


# -- signing in and out ----------------------------------------------------------------------


def test_pages_redirect_to_sign_in_without_a_session(ui):
    for path in ("/", "/events", "/deployments", "/environments", "/dora", "/dora/lead_time", "/incidents",
                 "/incidents/1", "/products/api"):
        resp = ui.get(path, follow_redirects=False)
        assert resp.status_code == 303, path
        assert resp.headers["location"].startswith("/signin?next=")


def test_sign_in_sets_a_strict_httponly_session_and_sign_out_ends_it(ui, token):
    resp = sign_in(ui, token, "/deployments")
    assert resp.status_code == 303 and resp.headers["location"] == "/deployments"
    cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith("dt_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    page = ui.get("/", follow_redirects=False)
    assert page.status_code == 200 and ">ci</span>" in page.text  # the token's name, with a sign-out form
    out = ui.post("/signout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert ui.get("/", follow_redirects=False).status_code == 303


def test_wrong_token_and_ingest_only_token_are_refused(ui, db_path):
    resp = sign_in(ui, "dt_not-a-real-token")
    assert resp.status_code == 401 and "That token is not valid." in resp.text
    assert "dt_session" not in ui.cookies
    ingest_only = create_token(db_path, "pipeline", "ingest")
    resp = sign_in(ui, ingest_only)
    assert resp.status_code == 403 and "lacks the &#39;read&#39; scope" in resp.text
    assert ui.get("/", follow_redirects=False).status_code == 303


def test_sign_in_without_or_with_a_wrong_csrf_token_is_refused(ui, token):
    ui.get("/signin")  # sets the CSRF cookie
    for data in ({"token": token}, {"token": token, "csrf": "x" * 43}):
        resp = ui.post("/signin", data=data, follow_redirects=False)
        assert resp.status_code == 403 and "CSRF" in resp.text
    assert ui.get("/", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_csrf_token(ui, token):
    sign_in(ui, token)
    resp = ui.post("/signout", data={"csrf": "forged"}, follow_redirects=False)
    assert resp.status_code == 403
    assert ui.get("/", follow_redirects=False).status_code == 200  # still signed in


def test_sign_in_never_redirects_off_site(ui, token):
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        resp = sign_in(ui, token, target)
        assert resp.headers["location"] == "/"


def test_public_read_flag_opens_the_pages_without_a_session(make_client, token):
    closed = make_client()
    assert closed.get("/deployments", follow_redirects=False).status_code == 303
    public = make_client(public_read=True)
    deploy(public, token)
    for path in ("/", "/events", "/deployments", "/environments", "/dora", "/dora/change_failure_rate", "/incidents",
                 "/products/api"):
        resp = public.get(path, follow_redirects=False)
        assert resp.status_code == 200, path
        assert 'href="/signin">Sign in</a>' in resp.text and "Sign out" not in resp.text


def test_pages_carry_a_strict_content_security_policy(ui, token):
    sign_in(ui, token)
    for path in ("/", "/events", "/deployments", "/environments", "/dora", "/incidents", "/signin"):
        csp = ui.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp


# -- the pages -------------------------------------------------------------------------------


def test_event_list_links_builds_and_commits_and_shows_both_times(ui, token):
    deploy(ui, token, scm_sha="0123456789abcdef", scm_repository="github.com/acme/api",
           build_url="https://ci.example.com/b/7", build_number="7", timestamp="2026-01-02T03:04:05Z")
    sign_in(ui, token)
    html = ui.get("/events").text
    assert 'href="https://github.com/acme/api/commit/0123456789abcdef"' in html
    assert 'href="https://ci.example.com/b/7"' in html and "CI build #7" in html
    assert "2026-01-02 03:04:05 UTC" in html and 'datetime="2026-01-02T03:04:05Z"' in html
    assert "d ago</time>" in html
    assert 'class="badge status-completed"' in html


def test_event_list_filters_and_rejects_bad_filters(ui, token):
    deploy(ui, token, product_name="web", description="first rollout of web")
    deploy(ui, token, product_name="api", description="hotfix for api")
    sign_in(ui, token)
    html = ui.get("/events?q=rollout").text
    assert "first rollout of web" in html and "hotfix for api" not in html
    html = ui.get("/events?product=api").text
    assert "hotfix for api" in html and "first rollout of web" not in html
    resp = ui.get("/events?status=bogus")
    assert resp.status_code == 400 and "status" in resp.text


def test_event_page_shows_every_field_and_metadata(ui, token):
    event = deploy(ui, token, extra_metadata={"ticket": "OPS-1", "nested": {"a": [1, 2]}}, change_id="CHG0012345")
    sign_in(ui, token)
    html = ui.get(f"/events/{event['id']}").text
    assert "CHG0012345" in html and "&#34;ticket&#34;: &#34;OPS-1&#34;" in html
    assert ui.get("/events/nope").status_code == 404


def test_deployments_page_filters_shows_duration_and_marks_failures(ui, token):
    deploy(ui, token, version="2.0", status="started", invoke_id="run-1", timestamp="2026-03-01T10:00:00Z")
    deploy(ui, token, version="2.0", status="success", invoke_id="run-1", timestamp="2026-03-01T10:02:05Z")
    deploy(ui, token, version="2.1", status="failed", environment_name="staging", deployed_by="carol")
    sign_in(ui, token)
    html = ui.get("/deployments").text
    assert "2m 05s" in html  # started -> completed
    assert html.count('<tr class="row-failed">') == 1 and "carol" in html
    failed_only = ui.get("/deployments?status=failed").text
    assert "2.1" in failed_only and "<code>2.0</code>" not in failed_only
    staging = ui.get("/deployments?environment=stg").text  # the alias folds to staging
    assert "2.1" in staging and "<code>2.0</code>" not in staging
    assert ui.get("/deployments?status=nope").status_code == 400


def test_deployments_page_keyset_paging_visits_each_deployment_once(ui, token):
    for i in range(57):
        deploy(ui, token, version=f"0.{i}", timestamp=1_767_225_600 + i * 60)
    sign_in(ui, token)
    first = ui.get("/deployments").text
    next_url = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = ui.get(next_url).text
    seen = re.findall(r"<code>(0\.\d+)</code>", first) + re.findall(r"<code>(0\.\d+)</code>", second)
    assert len(seen) == 57 and len(set(seen)) == 57
    assert 'rel="next"' not in second
    assert ui.get("/deployments?cursor=garbage").status_code == 400


def test_environments_matrix_shows_what_runs_where(ui, token):
    deploy(ui, token, version="1.0", environment_name="staging", deployed_by="ann")
    deploy(ui, token, version="1.0", deployed_by="ann")
    deploy(ui, token, version="1.1", environment_name="staging", deployed_by="bob")
    deploy(ui, token, version="1.1", status="failed", deployed_by="bob")  # production stays on 1.0
    sign_in(ui, token)
    html = ui.get("/environments").text
    row = html[html.index('<th scope="row">'):]
    staging, production = row.split("<td>")[1:3]  # environments in pipeline order: staging, production
    assert "<code>1.1</code>" in staging and "by bob" in staging
    assert "<code>1.0</code>" in production and "by ann" in production
    assert "newer: <code>1.1</code>" in production and "status-failed" in production


def test_product_page_has_a_timeline_and_validates_its_span(ui, token):
    deploy(ui, token, version="3.0")
    resp = ui.post("/build-events/", headers=auth(token), json={"product_name": "api", "version": "3.0",
                                                                  "status": "success"})
    assert resp.status_code == 200
    sign_in(ui, token)
    html = ui.get("/products/api").text
    # drawn twice: at desktop width and, for phones, at 360 units wide
    assert html.count('<svg class="timeline"') == 2 and html.count('class="dot status-completed"') == 4
    assert '<a href="/deployments/1"' in html
    assert ui.get("/products/api?days=5").status_code == 400
    assert ui.get("/products/unknown").status_code == 404


def test_dora_dashboard_empty_state_on_a_new_install(ui, token):
    sign_in(ui, token)
    html = ui.get("/dora").text
    assert "No metrics yet" in html and "DORA 2023 report" in html
    assert ui.get("/dora?window=12d").status_code == 400


def test_dora_dashboard_shows_the_metrics_module_numbers_and_trends(ui, token, db_path):
    day = 86_400
    base = (day_start_us(now_us()) // 1_000_000) - 10 * day
    for n in range(6):  # a production deployment each day for six days, then a failure linked to the last
        deploy(ui, token, version=f"5.{n}", timestamp=base + n * day + 3600, commit_timestamp=base + n * day)
    resp = ui.post("/api/v1/incidents", headers=auth(token), json={
        "product": "api", "title": "errors", "opened_at": base + 5 * day + 7200,
        "resolved_at": base + 5 * day + 7200 + 1800})
    assert resp.status_code == 201, resp.text
    sign_in(ui, token)
    live_only = ui.get("/dora?window=30d").text  # numbers are live; no snapshots stored yet
    assert "No metrics yet" not in live_only and "No daily snapshots yet" in live_only
    code, out = run_cli("metrics", "recompute", "--db", str(db_path))
    assert code == 0, out
    report = ui.get("/api/v1/metrics?window=30d", headers=auth(token)).json()["latest"]
    html = ui.get("/dora?window=30d").text
    assert "No daily snapshots yet" not in html
    per_week = report["deployment_frequency"]["per_week"]
    assert f"{per_week:.1f} / week" in html and "6 data points" in html
    assert f'class="badge band-{report["deployment_frequency"]["band"]}"' in html
    assert "60 min" in html  # lead time: one hour from commit to deployment, every time
    assert f"{report['change_failure_rate']['value'] * 100:.1f}%" in html and "1 deployment led to a failure" in html
    assert "30 min" in html  # time to restore
    assert html.count('<polyline class="line"') >= 3
    assert "No metrics yet" in ui.get("/dora?product=nothing-here").text


def test_incidents_page_shows_state_and_the_deployment_it_is_linked_to(ui, token, db_path):
    deploy(ui, token)
    add_incident(db_path, "checkout down", deployment_id=1, link_rule="deployment_id")
    add_incident(db_path, "slow search", resolved=True, change_id="CHG7")
    sign_in(ui, token)
    html = ui.get("/incidents").text
    assert '<a href="/deployments/1">deployment 1</a>' in html and "linked by: deployment id" in html
    assert "30m 00s" in html and "still open" in html
    open_only = ui.get("/incidents?state=open").text
    assert "checkout down" in open_only and "slow search" not in open_only
    assert "checkout down" in ui.get("/deployments/1").text


# -- escaping ----------------------------------------------------------------------------------


def test_client_strings_are_escaped_on_every_page_and_bad_links_stay_text(ui, token, db_path):
    event = deploy(ui, token, product_name=f"p{XSS}", version=f"v{XSS}", environment_name=f"e{XSS}",
                   deployed_by=XSS, description=XSS, scm_branch=XSS, scm_sha="abcdef1234567",
                   scm_repository="javascript:alert(1)//github.com/a/b", build_url="javascript:alert(document.cookie)",
                   change_id=XSS, invoke_id=XSS, extra_metadata={XSS: XSS})
    deploy(ui, token, product_name='q"><img src=x onerror=alert(1)>')
    add_incident(db_path, XSS, product=f"p{XSS}", deployment_id=1, change_id=XSS, link_rule=XSS)
    sign_in(ui, token)
    html = ui.get("/events").text
    product_path = "/products/" + re.search(r'href="/products/(q[^"]+)"', html).group(1)
    slashed_path = "/products/" + re.search(r'href="/products/(p%3Cscript%3E[^"]+)"', html).group(1)  # has a slash
    for path in ("/", "/events", f"/events/{event['id']}", "/deployments", "/deployments/1", "/environments",
                 product_path, slashed_path, "/incidents", "/incidents/1", "/dora", "/dora/lead_time",
                 "/dora/change_failure_rate", "/dora/time_to_restore"):
        resp = ui.get(path)
        assert resp.status_code == 200, path
        assert "<script>" not in resp.text and "<img src=x" not in resp.text, path
        assert 'href="javascript:' not in resp.text.lower(), path
    detail = ui.get(f"/events/{event['id']}").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in detail
    assert "javascript:alert(document.cookie)" in detail  # shown as text
