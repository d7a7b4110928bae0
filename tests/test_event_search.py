"""Event search (`q`) through a real server on both backends: what matches, what is refused, that
the index answers in one request, and that a search it cannot answer is windowed and pages on.

Most servers here run with `--search-window 10`: a search looks at the newest 10 events first, the
index may then name up to 2 (a fifth of the window), and a windowed search examines 10 a request.
FILLER events sent after the ones searched for keep those out of the first look, so that the index
(FTS5 on SQLite, pg_trgm on PostgreSQL) is what finds them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
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
FILLER = [f"filler {i}" for i in range(10)]


def send(server: LiveServer, token: str, summaries: list[str], product: str = "shop") -> list[str]:
    """DevGrid batches, one event per summary, in that order (they arrive in it); their ids."""
    ids = []
    for first in range(0, len(summaries), 2500):
        events = [{"type": "event-deploy", "entityId": product,
                   "attributes": {"env": "staging", "status": "success", "description": text}}
                  for text in summaries[first:first + 2500]]
        resp = httpx.post(server.url + "/events", headers={"x-api-key": token}, json={"events": events}, timeout=60)
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


def answered(server: LiveServer, token: str, term: str) -> list[str]:
    """Summaries of every match, which must come in one request (the index answered: no cursor)."""
    page = search(server, token, term)
    assert page["next_cursor"] is None, (term, page)
    return [e["summary"] for e in page["events"]]


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


def integrity_check(db: Path | str) -> None:
    """FTS5's own check that its index holds exactly the summaries of the events it covers (SQLite)."""
    if isinstance(db, Path):
        query(db, "INSERT INTO events_search (events_search) VALUES ('integrity-check')")


@contextlib.contextmanager
def live(db: Path | str, window: int) -> Iterator[LiveServer]:
    server = LiveServer(db, "--search-window", str(window)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(db_path: Path | str, token: str) -> Iterator[LiveServer]:
    with live(db_path, 10) as started:
        yield started


@pytest.fixture
def tiny(db_path: Path | str, token: str) -> Iterator[LiveServer]:
    """Windows of 4 events: the index may name none (a fifth of 4), so it answers only "no match"."""
    with live(db_path, 4) as started:
        yield started


def test_a_term_matches_the_summary_anywhere_in_any_case_of_a_to_z(server, token, db_path):
    send(server, token, SUMMARIES + FILLER, product="web-shop")
    # At once, however the server finds them (on SQLite its indexer may not have caught up yet) ...
    assert found(server, token, "api to prod") == ["Deploy API to Production"]
    assert found(server, token, "Émile") == ["Émile's release"]
    # ... and from the index, in one request.
    caught_up(db_path)
    assert answered(server, token, "api to prod") == ["Deploy API to Production"]
    assert answered(server, token, "DEPLOY api") == ["Deploy API to Production"]
    assert answered(server, token, "Émile") == ["Émile's release"]
    assert answered(server, token, "web") == ["rollback of web 2.1"]  # the summary, not the product
    assert answered(server, token, "nothing like this") == []
    assert answered(server, token, "and\nlines") == ["tabs\tand\nlines"]
    assert answered(server, token, "s\ta") == ["tabs\tand\nlines"]


def test_special_characters_are_plain_text(server, token, db_path):
    send(server, token, SUMMARIES + FILLER)
    caught_up(db_path)
    assert answered(server, token, "100%") == ["100% done_ok"]
    assert answered(server, token, "% d") == ["100% done_ok"]
    assert answered(server, token, "e_o") == ["100% done_ok"]
    assert answered(server, token, "D%y") == []  # not "D, anything, y"
    assert answered(server, token, "o_e") == []  # not "o, one character, e"
    assert answered(server, token, '"x"') == ['quote "x" here']
    assert answered(server, token, 'e "') == ['quote "x" here']
    assert answered(server, token, "k\\s") == ["back\\slash"]
    assert answered(server, token, "OR x*") == []  # no FTS5 query syntax either
    assert answered(server, token, "x* OR") == []


def test_short_terms_match_too(server, token, db_path):
    send(server, token, SUMMARIES + FILLER)
    caught_up(db_path)
    assert found(server, token, "2.") == ["rollback of web 2.1"]
    assert found(server, token, "%") == ["100% done_ok"]
    assert found(server, token, "_") == ["100% done_ok"]
    assert found(server, token, "\\") == ["back\\slash"]
    assert found(server, token, "É") == ["Émile's release"]
    assert found(server, token, "q") == ['quote "x" here']
    assert found(server, token, "X") == ['quote "x" here']


def test_nul_and_overlong_terms_are_a_400_naming_q(server, token):
    for term in ("a\x00b", "\x00", "x" * 513):
        resp = httpx.get(f"{server.url}/api/v1/events?q={quote(term, safe='')}", headers=auth(token), timeout=10)
        assert resp.status_code == 400, (term[:5], resp.text)
        assert resp.json()["error"]["field"] == "q"
    resp = httpx.get(f"{server.url}/events?q=a%00b", headers=auth(token), timeout=10)
    assert resp.status_code == 400
    assert httpx.get(server.url + "/healthz", timeout=10).json()["status"] == "ok"


def test_a_term_in_many_events_is_windowed_and_pages_through_every_match(tiny, token, db_path):
    summaries = [f"step {i}" + (" xy" if i in (0, 1, 10, 11) else "") for i in range(12)]
    send(tiny, token, summaries)
    caught_up(db_path)
    # 12 events and windows of 4: only the index can say "none" without a cursor to go on.
    assert search(tiny, token, "no such words") == {"events": [], "next_cursor": None}
    pages, cursor = [], ""
    while True:
        page = search(tiny, token, "xy", f"&limit=2{'&cursor=' + cursor if cursor else ''}")
        pages.append([e["summary"] for e in page["events"]])
        cursor = page["next_cursor"]
        if not cursor:
            break
    # Each request examines the next 4 events: 11-8, 7-4 (no match: an empty page, with a cursor), 3-0.
    assert pages == [["step 11 xy", "step 10 xy"], [], ["step 1 xy", "step 0 xy"]]
    # A term of 3+ characters in more events than the index may name is windowed the same way.
    first = search(tiny, token, "p 1")
    assert [e["summary"] for e in first["events"]] == ["step 11 xy", "step 10 xy"] and first["next_cursor"]
    assert found(tiny, token, "p 1") == ["step 11 xy", "step 10 xy", "step 1 xy"]


def test_a_windowed_search_looks_past_its_first_window_in_one_request(db_path, token):
    """A search first looks at 5,000 events (a common term fills its page there), then at the whole
    window: a match in the oldest of 5,500 events, with a window of 8,000, needs no cursor."""
    with live(db_path, 8000) as server:
        send(server, token, ["xy first"] + [f"step {i}" for i in range(1, 5500)])
        assert answered(server, token, "xy") == ["xy first"]
        page = search(server, token, "st", "&limit=3")
        assert [e["summary"] for e in page["events"]] == ["step 5499", "step 5498", "step 5497"] and page["next_cursor"]


def test_the_page_says_how_far_back_a_windowed_search_looked(make_client, token):
    client = make_client(public_read=True, search_window=4)
    resp = client.post("/events", headers={"x-api-key": token}, json={"events": [
        {"type": "event-deploy", "entityId": "shop", "timestamp": f"2026-01-0{i + 1}T00:00:00Z",
         "attributes": {"env": "staging", "status": "success", "description": f"step {i}"}} for i in range(6)]})
    assert resp.status_code == 201
    html = client.get("/events?q=zz").text
    assert "No match so far." in html and "Searched the events back to 2026-01-03 00:00:00 UTC" in html
    assert 'rel="next">Older events</a>' in html


def test_the_index_follows_new_and_deleted_events(server, token, db_path):
    admin = create_token(db_path, "admin", "admin")
    ids = send(server, token, ["first alpha", "second beta", "third gamma"])
    send(server, token, FILLER)
    caught_up(db_path)
    # Events the SQLite indexer has not reached yet are searched directly, beside the index.
    send(server, token, ["tail omega"])
    assert answered(server, token, "omega") == ["tail omega"]
    resp = httpx.delete(f"{server.url}/api/v1/events/{ids[2]}", headers=auth(admin), timeout=10)
    assert resp.status_code == 200, resp.text
    assert answered(server, token, "gamma") == []
    # SQLite numbers the next event as the deleted newest one was: the index must take it as new.
    newest = send(server, token, ["fourth delta"])
    caught_up(db_path)
    resp = httpx.delete(f"{server.url}/api/v1/events/{newest[0]}", headers=auth(admin), timeout=10)
    assert resp.status_code == 200, resp.text
    send(server, token, ["fifth epsilon"] + FILLER)
    caught_up(db_path)
    assert answered(server, token, "epsilon") == ["fifth epsilon"] and answered(server, token, "delta") == []
    integrity_check(db_path)
    resp = httpx.delete(f"{server.url}/api/v1/products/shop/events", headers=auth(admin), timeout=10)
    assert resp.status_code == 200, resp.text
    assert found(server, token, "alpha") == [] and found(server, token, "epsilon") == []
    integrity_check(db_path)


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
    with live(url, 4) as server:
        send(server, token, ["the last release"] + [f"release {i} of the shop" for i in range(11)])
        first = search(server, token, "no such words")
        assert first["events"] == [] and first["next_cursor"]  # 4 of 12 examined: no index to ask
        assert found(server, token, "no such words") == []
        assert found(server, token, "LAST rel") == ["the last release"]
