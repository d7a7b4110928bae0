"""Every page stays bounded when one ingest token floods the server with products and environments.

    python -m bench.ui_scale [--products 5000] [--environments 5000] [--repeat 5]

Starts a real `deploytrack serve` on a fresh database, makes an ingest token, and sends DevGrid
batches (the cheapest way an attacker has) that create N products and N environments: product i
deployed to environment i and to production, one hostile product deployed to every environment,
and an open incident per 100 products. Then it times every page (median of --repeat after one
warm-up) signed in through the UI's own form, and reads the server's RSS from /proc.

The baseline is the same pages on a small database (20 products × 20 environments) measured in the
same run: the ratio shows how much of the cost grows with the number of products/environments.
Targets (issue 17): every page < 500 ms, the server < 300 MB RSS.
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
import time
from pathlib import Path

import orjson

from bench import servers
from bench.reads import Client, timed

TARGET_MS = 500.0
TARGET_RSS_MB = 300.0
BATCH = 2500


def _post(port: int, path: str, headers: dict[str, str], body: object) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, body=orjson.dumps(body), headers={"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status >= 300:
        raise RuntimeError(f"POST {path}: {resp.status} {data[:300]!r}")


def flood(port: int, secret: str, products: int, environments: int) -> int:
    """Create the products, environments and pairs through DevGrid batches; return the events sent."""
    now = int(time.time()) - 3600
    events = []
    for i in range(max(products, environments)):
        product, env = f"svc-{i % products:05d}", f"env-{i % environments:05d}"
        for where in (env, "production"):
            events.append({"type": "event-deploy", "entityId": product, "timestamp": now - i,
                           "attributes": {"env": where, "status": "success", "build_id": f"b{i}-{where}",
                                          "build_commit_sha": f"{i:040x}"}})
    for i in range(environments):  # one product in every environment: the widest product page
        events.append({"type": "event-deploy", "entityId": "svc-00000-everywhere", "timestamp": now - i,
                       "attributes": {"env": f"env-{i:05d}", "status": "failed" if i % 7 == 0 else "success",
                                      "build_id": f"wide-{i}"}})
    headers = {"x-api-key": secret}
    for start in range(0, len(events), BATCH):
        _post(port, "/events", headers, {"events": events[start:start + BATCH]})
    for i in range(0, products, 100):
        _post(port, "/api/v1/incidents", {"Authorization": f"Bearer {secret}"},
              {"product": f"svc-{i:05d}", "environment": "production", "title": f"errors in svc-{i:05d}"})
    return len(events)


PAGES = ("/", "/?after=svc-00010", "/events", "/events?environment=env-04999", "/deployments",
         "/deployments?product=svc-00000-everywhere", "/environments", "/environments?after=svc-00010",
         "/products/svc-00000-everywhere", "/products/svc-00000-everywhere?days=90", "/products/svc-00012",
         "/dora", "/dora?product=svc-00000-everywhere&environment=env-00001",
         "/dora/deployment_frequency", "/dora/lead_time", "/dora/change_failure_rate", "/dora/time_to_restore",
         "/incidents", "/incidents?environment=production", "/incidents/1", "/deployments/1")


def first_read(port: int, secret: str) -> float:
    """Seconds the first read after the flood takes: the metrics core derives its facts (deployment
    records, rollbacks, lead times) from the new events before any page or API answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request("GET", "/api/v1/deployments?limit=1", headers={"Authorization": f"Bearer {secret}"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"first read: {resp.status}")
    return time.perf_counter() - started


def measure(products: int, environments: int, repeat: int) -> tuple[dict[str, float], float, int, float, float]:
    """(median ms per page, peak RSS MB, events sent, seconds to ingest, seconds of the first read) on a
    fresh database, before any nightly metrics job: every DORA number on the pages is counted live."""
    with tempfile.TemporaryDirectory(prefix="deploytrack-ui-scale-") as tmp:
        db = Path(tmp) / "deploytrack.db"
        secret = servers.create_token(db, "flood", "ingest", "read")
        with servers.deploytrack(db) as server:
            started = time.perf_counter()
            sent = flood(server.port, secret, products, environments)
            ingest_s = time.perf_counter() - started
            derive_s = first_read(server.port, secret)
            ui = Client(server.port)
            ui.sign_in(secret)
            times = {path: timed(ui, path, repeat)[0] for path in PAGES}
            peak = server.peak_rss_kb() / 1024
    return times, peak, sent, ingest_s, derive_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--environments", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5, help="timed GETs per page (after one warm-up)")
    args = parser.parse_args()
    if not (1 <= args.repeat <= 50 and 20 <= args.products <= 20000 and 20 <= args.environments <= 20000):
        raise SystemExit("bounded runs only: --repeat <= 50, 20 to 20000 products and environments")
    base, base_rss, _, _, base_derive = measure(20, 20, args.repeat)
    times, peak, sent, ingest_s, derive_s = measure(args.products, args.environments, args.repeat)
    print(f"{args.products} products x {args.environments} environments: {sent} events in {ingest_s:.1f} s "
          f"through DevGrid batches of {BATCH}; the first read after them took {derive_s:.1f} s "
          f"(deriving facts; 20x20: {base_derive:.2f} s)")
    print(f"{'page (median ms)':58} {'20x20':>7} {'big':>7} {'ratio':>6}")
    for path in PAGES:
        print(f"{path:58} {base[path]:7.1f} {times[path]:7.1f} {times[path] / max(base[path], 0.01):6.1f}")
    slowest = max(times, key=lambda p: times[p])
    missed = [p for p in PAGES if times[p] >= TARGET_MS]
    print(f"slowest page: {slowest} {times[slowest]:.1f} ms (target < {TARGET_MS:g} ms): "
          f"{'OK' if not missed else 'MISSED: ' + ', '.join(missed)}")
    print(f"server peak RSS: {peak:.0f} MB (20x20 baseline {base_rss:.0f} MB; target < {TARGET_RSS_MB:g} MB) "
          f"{'OK' if peak < TARGET_RSS_MB else 'MISSED'}")
    return 0 if not missed and peak < TARGET_RSS_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
