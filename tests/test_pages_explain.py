"""The pages that answer questions: the production home page, an incident and its admin actions, a
deployment that explains itself, what a DORA number counts, bounded menus and the paged matrix."""

from __future__ import annotations

import re

from deploytrack.timeutil import now_us
from tests.conftest import auth, create_token, query
from tests.test_pages import csrf_of, deploy, sign_in

HOUR = 3600


def devgrid(client, token: str, product: str, env: str, status: str = "success", **attributes: object) -> None:
    resp = client.post("/events", headers={"x-api-key": token}, json={"events": [
        {"type": "event-deploy", "entityId": product, "attributes": {"env": env, "status": status, **attributes}}]})
    assert resp.status_code == 201, resp.text


def incident(client, token: str, **body: object) -> dict:
    resp = client.post("/api/v1/incidents", headers=auth(token), json={"product": "api", "title": "errors", **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


def text(html: str) -> str:
    """The page's main text, tags removed, spaces folded."""
    main = html.split('<main id="main"', 1)[-1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main))


# -- the home page ------------------------------------------------------------------------------


def test_home_shows_the_version_in_production_last_known_version_and_attention_first(ui, token):
    deploy(ui, token, product_name="api", version="1.0")
    devgrid(ui, token, "api", "production")  # the newest production deployment carries no version
    deploy(ui, token, product_name="web", version="2.0", status="failed")  # failed today: needs attention
    deploy(ui, token, product_name="docs", version="0.1", environment_name="staging")
    sign_in(ui, token)
    html = ui.get("/").text
    rows = html.split('<tbody>')[1].split("</tbody>")[0].split("<tr")[1:]
    products = [re.search(r'href="/products/([^"]+)"', r).group(1) for r in rows]
    assert products == ["web", "api", "docs"]  # attention first, then by name (web again is not repeated)
    assert "needs attention" in rows[0] and "needs attention" not in rows[1]
    assert "<code>1.0</code>" in rows[1] and "(last known version)" in rows[1]
    assert "not deployed to production" in rows[2]
    attention = html.split('class="attention"')[1].split("</section>")[0]
    assert "web <code>2.0</code>" in attention and "status-failed" in attention
    assert 'href="/dora/deployment_frequency?product=api&amp;window=30d"' in rows[1]
    assert "0.5 / week" in text(rows[1])  # two completed production deployments in 30 days


def test_home_pages_products_by_name_and_new_installs_get_a_first_step(ui, token):
    sign_in(ui, token)
    assert "Nothing deployed yet" in ui.get("/").text
    for n in range(23):
        deploy(ui, token, product_name=f"p{n:02d}")
    first = ui.get("/").text
    next_url = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = ui.get(next_url).text
    seen = re.findall(r'<a href="/products/(p\d\d)">', first) + re.findall(r'<a href="/products/(p\d\d)">', second)
    assert seen == [f"p{n:02d}" for n in range(23)]  # 20 a page
    assert 'rel="next"' not in second


# -- an incident --------------------------------------------------------------------------------


def test_incident_page_names_the_linked_deployment_its_rule_and_the_deployments_before(ui, token):
    opened = int(now_us() / 1e6) - HOUR
    deploy(ui, token, version="1.0", status="failed", timestamp=opened - 3 * HOUR)
    deploy(ui, token, version="1.1", timestamp=opened - 2 * HOUR)
    deploy(ui, token, version="0.9", timestamp=opened - 30 * HOUR)  # before the 24 hours shown
    inc = incident(ui, token, opened_at=opened, environment="production", severity="sev1")
    sign_in(ui, token)
    page = ui.get(f"/incidents/{inc['id']}").text
    words = text(page)
    assert "api 1.1 to production" in words and "Linked by last deployment" in words
    assert "Open for 1h 00m" in words or "Open for 1h 01m" in words
    before = page.split("in the 24 hours before it opened")[1].split("</ol>")[0]
    assert before.count("<li") == 2 and 'class="row-failed"' in before and "0.9" not in before
    assert "← linked" in before.split("1.1")[1].split("</li>")[0]
    assert 'action="/incidents/' not in page  # a read token sees no admin forms
    listed = ui.get("/incidents").text
    assert f'href="/incidents/{inc["id"]}"' in listed
    assert ui.get("/incidents/999").status_code == 404 and ui.get("/incidents/x").status_code == 404


def test_admins_resolve_and_relink_with_the_csrf_token_and_nothing_else(ui, token, db_path):
    deploy(ui, token, version="1.0")
    deploy(ui, token, version="1.1")
    inc = incident(ui, token)
    path = f"/incidents/{inc['id']}"
    sign_in(ui, token)
    csrf = csrf_of(ui.get(path).text)
    assert ui.post(path, data={"csrf": csrf, "action": "resolve"}, follow_redirects=False).status_code == 403
    boss = create_token(db_path, "boss", "read", "admin")
    sign_in(ui, boss)
    page = ui.get(path).text
    assert "Resolve now" in page
    csrf = csrf_of(page)
    assert ui.post(path, data={"action": "resolve"}, follow_redirects=False).status_code == 403  # no CSRF
    assert ui.post(path, data={"csrf": csrf, "action": "explode"}, follow_redirects=False).status_code == 400
    assert query(db_path, "SELECT resolved_at FROM incidents") == [(None,)]
    resp = ui.post(path, data={"csrf": csrf, "action": "resolve"}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == path
    assert query(db_path, "SELECT status FROM incidents") == [("resolved",)]
    first = query(db_path, "SELECT id FROM deployments WHERE version = '1.0'")[0][0]
    for bad in ("abc", "99999"):
        resp = ui.post(path, data={"csrf": csrf, "action": "link", "deployment_id": bad}, follow_redirects=False)
        assert resp.status_code == 400 and "deployment_id" in resp.text
    assert query(db_path, "SELECT link_rule FROM incidents") == [("last_deployment",)]
    ui.post(path, data={"csrf": csrf, "action": "link", "deployment_id": str(first)})
    assert query(db_path, "SELECT deployment_id, link_rule FROM incidents") == [(first, "deployment_id")]
    assert "Linked by deployment id" in text(ui.get(path).text)
    ui.post(path, data={"csrf": csrf, "action": "link", "deployment_id": ""})  # back to the link rules
    assert query(db_path, "SELECT link_rule FROM incidents") == [("last_deployment",)]
    ui.post(path, data={"csrf": csrf, "action": "reopen"})
    assert query(db_path, "SELECT status, resolved_at FROM incidents") == [("open", None)]


def test_incident_list_filters_by_environment_with_aliases_folded(ui, token):
    incident(ui, token, title="staging broke", environment="staging")
    incident(ui, token, title="prod broke", environment="production")
    sign_in(ui, token)
    html = ui.get("/incidents?environment=stg").text
    assert "staging broke" in html and "prod broke" not in html


# -- a deployment -------------------------------------------------------------------------------


def test_deployment_page_explains_rollbacks_failure_commits_and_incidents(ui, token):
    now = int(now_us() / 1e6)
    repo = "https://github.com/acme/api"
    resp = ui.post("/api/v1/commits", headers=auth(token), json=[
        {"sha": "a" * 40, "repository": repo, "committed_at": now - 10 * HOUR}])
    assert resp.status_code == 201, resp.text
    deploy(ui, token, version="1.0", scm_sha="a" * 40, scm_repository=repo, timestamp=now - 8 * HOUR)
    deploy(ui, token, version="1.1", scm_sha="b" * 40, scm_repository=repo, timestamp=now - 6 * HOUR)
    deploy(ui, token, version="1.2", status="failed", description="migration 42 timed out", timestamp=now - 5 * HOUR)
    deploy(ui, token, version="1.0", scm_sha="a" * 40, scm_repository=repo, timestamp=now - 4 * HOUR)
    incident(ui, token, title="slow checkout", opened_at=now - 5 * HOUR - 600)
    sign_in(ui, token)
    listed = ui.get("/api/v1/deployments", headers=auth(token)).json()["deployments"]
    ids = {d["version"]: d["id"] for d in listed}
    original, rollback = sorted(d["id"] for d in listed if d["version"] == "1.0")
    words = text(ui.get(f"/deployments/{original}").text)
    assert "2h 00m recorded commit" in words  # committed 10 h before, deployed 8 h before
    page = ui.get(f"/deployments/{ids['1.1']}").text
    assert f'Rolled back by <a href="/deployments/{rollback}">' in page
    assert "slow checkout" in page  # the incident was linked to 1.1, the last production deployment before it
    words = text(ui.get(f"/deployments/{rollback}").text)
    assert "A rollback of 1.1" in words and "rollback" in words
    words = text(ui.get(f"/deployments/{ids['1.2']}").text)
    assert "Why it failed: migration 42 timed out" in words
    assert ui.get("/deployments/424242").status_code == 404


# -- what a DORA number counts ------------------------------------------------------------------


def test_each_dora_number_lists_what_it_counts(ui, token):
    now = int(now_us() / 1e6)
    deploy(ui, token, version="1.0", timestamp=now - 8 * HOUR)
    deploy(ui, token, version="1.1", timestamp=now - 6 * HOUR)
    deploy(ui, token, version="1.0", timestamp=now - 4 * HOUR)  # a rollback of 1.1
    deploy(ui, token, product_name="web", version="9", environment_name="staging", timestamp=now - 4 * HOUR)
    incident(ui, token, title="api down", opened_at=now - 5 * HOUR, resolved_at=now - 5 * HOUR + 1800)
    sign_in(ui, token)
    dora = ui.get("/dora?product=api").text
    assert 'href="/dora/change_failure_rate?product=api&amp;window=30d"' in dora
    cfr = ui.get("/dora/change_failure_rate?product=api&window=30d").text
    assert cfr.count('<tr class="row-failed">') == 1 and "rolled back" in cfr and "api down" in cfr
    assert cfr.count("<tr") == 4  # the header and three completed production deployments; staging is not counted
    frequency = ui.get("/dora/deployment_frequency").text
    assert "web" not in text(frequency).split("All products")[1]
    restore = text(ui.get("/dora/time_to_restore?product=api").text)
    assert "api down" in restore and "30m 00s" in restore
    staging = ui.get("/dora/deployment_frequency?environment=stg").text
    assert "<code>9</code>" in staging
    assert ui.get("/dora/no_such_metric").status_code == 404
    assert ui.get("/dora/lead_time?window=12d").status_code == 400


# -- bounded menus, the matrix, small things ----------------------------------------------------


def test_filter_menus_stay_bounded_however_many_products_there_are(ui, token):
    for n in range(3):
        deploy(ui, token, product_name=f"svc{n}")
    sign_in(ui, token)
    assert '<select id="f-product" name="product">' in ui.get("/events").text
    resp = ui.post("/events", headers={"x-api-key": token}, json={"events": [
        {"type": "event-deploy", "entityId": f"bulk{n:03d}", "attributes": {"env": f"e{n:03d}", "status": "success"}}
        for n in range(120)]})
    assert resp.status_code == 201, resp.text
    for path in ("/events", "/deployments", "/incidents", "/dora"):
        html = ui.get(path).text
        assert 'list="dl-product"' in html and '<select id="f-product"' not in html, path
        datalist = html.split('<datalist id="dl-product">')[1].split("</datalist>")[0]
        assert datalist.count("<option") == 100, path
    assert "bulk005" in ui.get("/deployments?product=bulk005").text


def test_matrix_shows_only_deployed_pairs_paged_by_product(ui, token):
    resp = ui.post("/events", headers={"x-api-key": token}, json={"events": [
        {"type": "event-deploy", "entityId": f"p{n:02d}", "attributes": {"env": f"env{n:02d}", "status": "success"}}
        for n in range(30)]})
    assert resp.status_code == 201, resp.text
    sign_in(ui, token)
    first = ui.get("/environments").text
    assert "<table" not in first  # 25 environments on the page: cards, not a 25-column table
    cards = re.findall(r'<section class="product-card" aria-label="([^"]+)">(.*?)</section>', first, re.S)
    assert [name for name, _ in cards] == [f"p{n:02d}" for n in range(25)]
    assert all(body.count("<dt>") == 1 for _, body in cards)  # each product only where it was deployed
    next_url = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = ui.get(next_url).text
    assert re.findall(r'aria-label="(p\d\d)"', second) == [f"p{n:02d}" for n in range(25, 30)]


def test_event_detail_uses_human_labels_and_date_filters_take_iso_days(ui, token):
    event = deploy(ui, token, deployed_by="ann", timestamp="2026-01-02T03:04:05Z")
    sign_in(ui, token)
    words = text(ui.get(f"/events/{event['id']}").text)
    assert "Received through Versioner API" in words and "Happened 2026-01-02 03:04:05 UTC" in words
    assert "By ann" in words and "dialect" not in words
    html = ui.get("/events?since=2026-01-02&until=2026-01-03").text
    assert 'value="2026-01-02"' in html and "ann" in html
    assert "ann" not in text(ui.get("/events?since=2026-01-03").text).split("Search")[1]
    assert 'type="datetime-local"' not in html
    assert ui.get("/events?since=yesterday").status_code == 400
