"""Event search (`q`) through a real server on both backends: what matches, what is refused, and
that the index answers (in one request) while a search it cannot answer is windowed and pages on."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest

from tests.conftest import LiveServer, auth, create_token, query
from tests.pg_cluster import Cluster

SUMMARIES = [
    "Deploy API to Production",
    "rollback of web 2.1",
    "100% done_ok",
    'quote "x" here',
    "back\\slash",
    "Émile's release",
    "tabs\tand\nlines",
]


def send(server: LiveServer, token: str, summaries: list[str], product: str = "shop") -> list[str]:
    """DevGrid batches, one event per summary, a second apart, oldest first; their ids."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [{"type": "event-deploy", "entityId": product,
               "timestamp": (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "attributes": {"env": "staging", "status": "success", "description": text}}
              for i, text in enumerate(summaries)]
    ids = []
    for first in range(0, len(events), 2500):
        resp = httpx.post(server.url + "/events", headers={"x-api-key": token},
                          json={"events": events[first:first + 2500]}, timeout=60)
        assert resp.status_code == 201, resp.text
        ids += [e["id"] for e in resp.json()["events"]]
    return ids


def search(server: LiveServer, token: str, term: str, extra: str = "") -> dict[str, Any]:
    resp = httpx.get(f"{server.url}/api/v1/events?q={quote(term, safe='')}{extra}", headers=auth(token), timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def found(server: LiveServer, token: str, term: str) -> list[str]:
    """Summaries of every match, newest first, following cursors to the end."""
    out, cursor = [], ""
    for _ in range(100):
        page = search(server, token, term, f"&cursor={cursor}" if cursor else "")
        out += [e["summary"] for e in page["events"]]
        cursor = page["next_cursor"]
        if not cursor:
            return out
    raise AssertionError("more than 100 pages")


def caught_up(db: Path | str, timeout: float = 20) -> None:
    """Wait until the server's search indexer has every event (SQLite; PostgreSQL's index is always current)."""
    if not isinstance(db, Path):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [(done, last)] = query(db, "SELECT (SELECT CAST(value AS INTEGER) FROM kv WHERE key = 'search_indexed_seq'), "
                                   "(SELECT COALESCE(MAX(seq), 0) FROM events)")
        if done == last:
            return
        time.sleep(0.1)
    raise AssertionError("the search indexer did not catch up")


@pytest.fixture
def server(db_path: Path | str, token: str) -> Iterator[LiveServer]:
    """A live server whose windowed searches examine 4 events a request (so an index may name 0 candidates)."""
    live = LiveServer(db_path, "--search-window", "4").start()
    try:
        yield live
    finally:
        live.stop()


def test_a_term_matches_the_summary_anywhere_in_any_case_of_a_to_z(live_server, token, db_path):
    send(live_server, token, SUMMARIES, product="web-shop")
    for indexed in (False, True):  # the unindexed tail (SQLite) first, then through the index
        if indexed:
            caught_up(db_path)
        assert found(live_server, token, "api to prod") == ["Deploy API to Production"]
        assert found(live_server, token, "DEPLOY api") == ["Deploy API to Production"]
        assert found(live_server, token, "Émile") == ["Émile's release"]
        assert found(live_server, token, "web") == ["rollback of web 2.1"]  # the summary, not the product
        assert found(live_server, token, "nothing like this") == []
        assert found(live_server, token, "and\nlines") == ["tabs\tand\nlines"]


def test_special_characters_are_plain_text(live_server, token, db_path):
    send(live_server, token, SUMMARIES)
    caught_up(db_path)
    assert found(live_server, token, "100%") == ["100% done_ok"]
    assert found(live_server, token, "% d") == ["100% done_ok"]
    assert found(live_server, token, "e_o") == ["100% done_ok"]
    assert found(live_server, token, "D%y") == []  # not "D, anything, y"
    assert found(live_server, token, "o_e") == []  # not "o, one character, e"
    assert found(live_server, token, '"x"') == ['quote "x" here']
    assert found(live_server, token, 'e "') == ['quote "x" here']
    assert found(live_server, token, "k\\s") == ["back\\slash"]
    assert found(live_server, token, "\\") == ["back\\slash"]
    assert found(live_server, token, "OR x*") == []  # no FTS5 query syntax either


def test_short_terms_match_too(live_server, token, db_path):
    send(live_server, token, SUMMARIES)
    caught_up(db_path)
    assert found(live_server, token, "2.") == ["rollback of web 2.1"]
    assert found(live_server, token, "%") == ["100% done_ok"]
    assert found(live_server, token, "_") == ["100% done_ok"]
    assert found(live_server, token, "É") == ["Émile's release"]
    assert found(live_server, token, "x") == ['quote "x" here']
    assert found(live_server, token, "q") == ['quote "x" here']


def test_nul_and_overlong_terms_are_a_400_naming_q(live_server, token):
    for term in ("a\x00b", "\x00", "x" * 513):
        resp = httpx.get(f"{live_server.url}/api/v1/events?q={quote(term, safe='')}", headers=auth(token), timeout=10)
        assert resp.status_code == 400, (term[:5], resp.text)
        assert resp.json()["error"]["field"] == "q"
    resp = httpx.get(f"{live_server.url}/events?q=a%00b", headers=auth(token), timeout=10)
    assert resp.status_code == 400
    assert httpx.get(live_server.url + "/healthz", timeout=10).json()["status"] == "ok"


def test_the_index_answers_a_term_that_matches_nothing_in_one_request(server, token, db_path):
    send(server, token, [f"release {i} of the shop" for i in range(12)])
    caught_up(db_path)
    # 12 events and a window of 4: only the index can say "none" without a cursor to go on.
    assert search(server, token, "no such words") == {"events": [], "next_cursor": None}
    # A short term the index cannot answer examines 4 events, finds none, and hands back a cursor.
    first = search(server, token, "zz")
    assert first["events"] == [] and first["next_cursor"]


def test_a_windowed_search_pages_through_every_match(server, token, db_path):
    summaries = [f"step {i}" + (" xy" if i in (0, 1, 10, 11) else "") for i in range(12)]
    send(server, token, summaries)
    caught_up(db_path)
    pages, cursor = [], ""
    while True:
        page = search(server, token, "xy", f"&limit=2{'&cursor=' + cursor if cursor else ''}")
        pages.append([e["summary"] for e in page["events"]])
        cursor = page["next_cursor"]
        if not cursor:
            break
    # Each request examines the next 4 events: 11-8, 7-4 (no match: an empty page, with a cursor), 3-0.
    assert pages == [["step 11 xy", "step 10 xy"], [], ["step 1 xy", "step 0 xy"]]
    # More candidates than the index may sort (a fifth of the window) is windowed the same way.
    assert found(server, token, "p 1") == ["step 11 xy", "step 10 xy", "step 1 xy"]


def test_a_windowed_search_looks_past_its_first_window_in_one_request(db_path, token):
    """A windowed search first looks at 5,000 events (a common term fills its page there), then at the
    whole window: a match in the oldest of 5,500 events, with a window of 8,000, needs no cursor."""
    server = LiveServer(db_path, "--search-window", "8000").start()
    try:
        send(server, token, ["xy first"] + [f"step {i}" for i in range(1, 5500)])
        oldest = search(server, token, "xy")
        assert [e["summary"] for e in oldest["events"]] == ["xy first"] and oldest["next_cursor"] is None
        page = search(server, token, "st", "&limit=3")
        assert [e["summary"] for e in page["events"]] == ["step 5499", "step 5498", "step 5497"] and page["next_cursor"]
    finally:
        server.stop()


def test_the_page_says_how_far_back_a_windowed_search_looked(make_client, token):
    client = make_client(public_read=True, search_window=4)
    resp = client.post("/events", headers={"x-api-key": token}, json={"events": [
        {"type": "event-deploy", "entityId": "shop", "timestamp": f"2026-01-0{i + 1}T00:00:00Z",
         "attributes": {"env": "staging", "status": "success", "description": f"step {i}"}} for i in range(6)]})
    assert resp.status_code == 201
    html = client.get("/events?q=zz").text
    assert "No match so far." in html and "Searched the events back to 2026-01-03 00:00:00 UTC" in html
    assert 'rel="next">Older events</a>' in html


def test_the_index_follows_deletions(live_server, token, db_path):
    admin = create_token(db_path, "admin", "admin")
    ids = send(live_server, token, ["first alpha", "second beta", "third gamma"])
    caught_up(db_path)
    resp = httpx.delete(f"{live_server.url}/api/v1/events/{ids[2]}", headers=auth(admin), timeout=10)
    assert resp.status_code == 200, resp.text
    assert found(live_server, token, "gamma") == []
    # SQLite numbers the next event as the deleted one was: the index must take it as new.
    send(live_server, token, ["fourth delta"])
    caught_up(db_path)
    assert found(live_server, token, "delta") == ["fourth delta"] and found(live_server, token, "gamma") == []
    if isinstance(db_path, Path):  # the FTS5 index holds exactly the summaries of the events it covers
        query(db_path, "INSERT INTO events_search (events_search) VALUES ('integrity-check')")
    resp = httpx.delete(f"{live_server.url}/api/v1/products/shop/events", headers=auth(admin), timeout=10)
    assert resp.status_code == 200, resp.text
    assert found(live_server, token, "alpha") == [] and found(live_server, token, "delta") == []
    if isinstance(db_path, Path):
        query(db_path, "INSERT INTO events_search (events_search) VALUES ('integrity-check')")


@pytest.mark.postgres
def test_without_pg_trgm_the_server_starts_and_search_is_windowed(pg_cluster: Cluster):
    """A role that may not create pg_trgm (no CREATE on its database, which lacks it): m020 goes on
    without the index and every search is windowed, with the same answers."""
    database = f"plain_{os.getpid()}"
    pg_cluster.psql(f"CREATE DATABASE {database}")
    pg_cluster.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'plain') THEN "
                    "CREATE ROLE plain LOGIN; END IF; END $$")
    pg_cluster.psql("REVOKE CREATE ON DATABASE " + database + " FROM PUBLIC; GRANT CREATE ON SCHEMA public TO plain",
                    database=database)
    url = f"postgresql://plain@127.0.0.1:{pg_cluster.port}/{database}"
    token = create_token(url, "ci", "ingest", "read")
    assert query(url, "SELECT to_regclass('events_summary_trgm') IS NULL, "
                      "(SELECT COUNT(*) FROM pg_extension WHERE extname = 'pg_trgm')") == [(True, 0)]
    server = LiveServer(url, "--search-window", "4").start()
    try:
        send(server, token, [f"release {i} of the shop" for i in range(11)] + ["the last release"])
        first = search(server, token, "no such words")
        assert first["events"] == [] and first["next_cursor"]  # 4 of 12 examined: no index to ask
        assert found(server, token, "no such words") == []
        assert found(server, token, "LAST rel") == ["the last release"]
    finally:
        server.stop()
