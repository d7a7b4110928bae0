"""Crash safety: a 2xx means the event is on disk, even when the server is killed with SIGKILL.

A real server takes events from concurrent client threads; it is killed mid-load, restarted, and
every acknowledged event must be in the file, with nothing half-written. SIGTERM must drain the
requests in flight instead of dropping them.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import LiveServer, auth
from tests.dbcheck import consistency_problems, stored_ids
from tests.loadgen import Load

pytestmark = pytest.mark.slow  # SIGKILL and SIGTERM under load, three times


def versioner_requests(token: str, tag: str):
    """Deployments (started then finished, one invoke id each) and builds, some with Idempotency-Key."""
    headers = {**auth(token), "Content-Type": "application/json"}

    def make(t: int, n: int) -> tuple[str, str, dict[str, str], bytes]:
        product = f"svc-{tag}-{t % 3}"
        version = f"1.{t}.{n // 3}"
        sha = f"{t:04x}{n // 3:08x}{tag}"
        extra = {"Idempotency-Key": f"{tag}-{t}-{n}"} if n % 5 == 0 else {}
        if n % 3 == 2:
            body = {"product_name": product, "version": version, "status": "built", "scm_sha": sha}
            return "POST", "/build-events/", {**headers, **extra}, orjson.dumps(body)
        body = {"product_name": product, "version": version, "environment_name": "prod" if t % 2 else "staging",
                "status": "started" if n % 3 == 0 else "success", "invoke_id": f"{tag}-{t}-{n // 3}",
                "scm_sha": sha, "deployed_by": "load", "extra_metadata": {"n": n, "t": t}}
        return "POST", "/deployment-events/", {**headers, **extra}, orjson.dumps(body)

    return make


def check_file(db: Path, acked: set[str]) -> None:
    stored = stored_ids(db)
    lost = acked - stored
    assert not lost, f"{len(lost)} acknowledged events are not in the database: {sorted(lost)[:5]}"
    assert consistency_problems(db) == []


def test_sigkill_mid_load_loses_no_acknowledged_event(db_path: Path, token: str) -> None:
    rng = random.Random(9)
    all_acked: set[str] = set()
    for round_no in range(3):
        server = LiveServer(db_path).start()
        load = Load(server.url, versioner_requests(token, f"k{round_no}"), threads=4).start()
        time.sleep(0.6 + rng.random() * 0.9)
        deadline = time.monotonic() + 15  # a slower backend (PostgreSQL on a busy machine) takes longer to 20 acks
        while len(load.acked_ids) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.proc is not None
        server.stop(signal.SIGKILL)
        load.join()
        acked = load.acked_ids
        assert len(acked) >= 20, f"round {round_no}: too little load to mean anything ({len(acked)} acks)"
        assert load.statuses() <= {200}, f"round {round_no}: unexpected answers {load.statuses()}"
        all_acked |= acked
        check_file(db_path, all_acked)
    # A restarted server opens the killed server's WAL and serves every acknowledged event.
    server = LiveServer(db_path).start()
    try:
        for event_id in sorted(all_acked)[:: max(1, len(all_acked) // 20)]:
            resp = httpx.get(f"{server.url}/api/v1/events/{event_id}", headers=auth(token), timeout=10)
            assert resp.status_code == 200, resp.text
        resp = httpx.post(f"{server.url}/deployment-events/", headers=auth(token), timeout=10,
                          json={"product_name": "after", "version": "1", "environment_name": "prod",
                                "status": "success"})
        assert resp.status_code == 200, resp.text
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()
    check_file(db_path, all_acked)


def test_sigterm_drains_in_flight_writes(db_path: Path, token: str) -> None:
    drained = 0
    for round_no in range(3):
        server = LiveServer(db_path).start()
        load = Load(server.url, versioner_requests(token, f"t{round_no}"), threads=6).start()
        time.sleep(0.8)
        signalled = time.monotonic()
        code = server.stop(signal.SIGTERM)
        load.join()
        # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit too.
        assert code in (0, -signal.SIGTERM), f"shutdown exited {code}: {server.log.read_text()[-2000:]}"
        assert load.statuses() <= {200}, f"answers during shutdown: {load.statuses()}"
        check_file(db_path, load.acked_ids)
        drained += sum(1 for a in load.answers if a.at >= signalled and a.status == 200)
        log = server.log.read_text()
        assert "Application shutdown complete" in log, log[-2000:]
        assert "Traceback" not in log and "write transaction failed" not in log, log[-2000:]
        if drained:
            break
    assert drained > 0, "no request in flight at SIGTERM was answered: shutdown did not drain"

