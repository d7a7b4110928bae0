"""Ingestion benchmark: deploytrack vs its durable floor and a bare Starlette ceiling, same uvicorn
settings, same run.

    python -m bench.ingest [--seconds 5] [--connections 32] [--rounds 3] [--batch 1000] [--devgrid-connections 1]

Each round loads the bare app, then the durable floor (the bare app storing each event as one
index-free row through deploytrack's group-commit writer, answering after COMMIT), then a real
`deploytrack serve` on a fresh database, with wrk posting Versioner deployment events (32
connections) and DevGrid batches of 1000 from one client (issue 20's two loads). Prints events/s,
p50/p99 and the ratios deploytrack/durable floor (issue 20's targets) and deploytrack/bare; medians
over the rounds, ratios as the median of each round's own ratio.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import servers, wrk

# Issue 20: single Versioner events >= 0.7x the durable floor with p99 < 20 ms at 32 connections;
# DevGrid batches of 1000 from one client >= 0.5x the durable floor.
TARGET_VERSIONER_FLOOR = 0.7
TARGET_P99_MS = 20.0
TARGET_DEVGRID_FLOOR = 0.5


def has_devgrid(url: str) -> bool:
    """True when the server routes POST /events (the DevGrid API)."""
    req = urllib.request.Request(url + "/events", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code not in (404, 405)


def stored_events(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        staged = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'event_log'").fetchone()
        return int(conn.execute("SELECT (SELECT COUNT(*) FROM events)"
                                + (" + (SELECT COUNT(*) FROM event_log)" if staged else "")).fetchone()[0])


def writer_counters(url: str) -> dict[str, float]:
    """The server's deploytrack_write_* Prometheus counters (commits, tasks, busy and commit seconds)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {ln.split()[0][len("deploytrack_write_"):]: float(ln.split()[1]) for ln in text.splitlines()
            if ln.startswith("deploytrack_write_")}


def group_stats(url: str) -> tuple[int, int]:
    """(commits, tasks) so far: tasks/commits is the mean group size."""
    values = writer_counters(url)
    return int(values.get("commits_total", 0)), int(values.get("tasks_total", 0))


def drain(server: servers.Server, timeout: float = 60) -> None:
    """Wait until the server has finished the writes wrk left behind when it hung up."""
    if server.kind != "deploytrack":
        return
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        now = group_stats(server.url)
        if now == last:
            return
        last = now
        time.sleep(0.3)


def load(server: servers.Server, mode: str, seconds: float, connections: int, threads: int, token: str,
         run_id: str, batch: int) -> wrk.Run:
    env = {"BENCH_MODE": mode, "BENCH_TOKEN": token, "BENCH_RUN": run_id, "BENCH_BATCH": str(batch)}
    drain(server)
    wrk.run(server.url, 1, connections, threads, env={**env, "BENCH_RUN": run_id + "0"})  # warm-up
    drain(server)
    cpu, by_thread = server.cpu_seconds(), server.thread_cpu_seconds()
    writer = writer_counters(server.url) if server.kind == "deploytrack" else {}
    started = time.monotonic()
    res = wrk.run(server.url, seconds, connections, threads, env={**env, "BENCH_RUN": run_id + "1"})
    elapsed = time.monotonic() - started
    res.server_cpu = server.cpu_seconds() - cpu
    res.thread_cpu = {name: t - by_thread.get(name, 0.0) for name, t in server.thread_cpu_seconds().items()}
    if writer:  # read after wrk's requests are answered: the writer's share of the run's wall time
        drain(server)
        after = writer_counters(server.url)
        res.writer_busy = (after["busy_seconds_total"] - writer["busy_seconds_total"]) / elapsed
        res.writer_commit = (after["commit_seconds_total"] - writer["commit_seconds_total"]) / elapsed
    return res


def one_round(workdir: Path, r: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with servers.bare(workdir) as bare:
        res = load(bare, "versioner", args.seconds, args.connections, args.threads, "", f"{r}", 1)
        out["bare versioner"] = _figures(res, 1)
        res = load(bare, "devgrid", args.seconds, args.devgrid_connections, args.threads, "", f"{r}", args.batch)
        out["bare devgrid"] = _figures(res, args.batch)
    with servers.bare(workdir, durable=workdir / f"floor{r}.db") as floor:
        res = load(floor, "versioner", args.seconds, args.connections, args.threads, "", f"{r}", 1)
        out["floor versioner"] = _figures(res, 1)
        res = load(floor, "devgrid", args.seconds, args.devgrid_connections, args.threads, "", f"{r}", args.batch)
        out["floor devgrid"] = _figures(res, args.batch)
    db = workdir / f"round{r}.db"
    token = servers.create_token(db, "bench", "ingest", "read")
    with servers.deploytrack(db) as server:
        before = stored_events(db)
        res = load(server, "versioner", args.seconds, args.connections, args.threads, token, f"{r}", 1)
        out["deploytrack versioner"] = _figures(res, 1)
        commits, tasks = group_stats(server.url)
        out["deploytrack versioner"]["mean_group"] = tasks / max(commits, 1)
        out["deploytrack versioner"]["rss_mb"] = server.rss_kb() / 1024
        drain(server)
        out["deploytrack versioner"]["stored"] = stored_events(db) - before
        res = load(server, "versioner", args.seconds, args.light, args.threads, token, f"{r}l", 1)
        out[f"deploytrack versioner c{args.light}"] = _figures(res, 1)
        if has_devgrid(server.url):
            res = load(server, "devgrid", args.seconds, args.devgrid_connections, args.threads, token, f"{r}",
                       args.batch)
            out["deploytrack devgrid"] = _figures(res, args.batch)
            out["deploytrack devgrid"]["rss_mb"] = server.rss_kb() / 1024
        drain(server)
    return out


def _figures(res: wrk.Run, per_request: int) -> dict[str, float]:
    if res.socket_errors:
        print(f"  warning: {res.socket_errors} socket errors")
    events = max(res.requests * per_request, 1)
    return {"events_s": res.rps * per_request, "requests": res.requests, "non2xx": res.non2xx,
            "cpu_us": res.server_cpu / events * 1e6,
            **{f"cpu_us {name}": t / events * 1e6 for name, t in res.thread_cpu.items() if t > 0},
            "writer_busy": res.writer_busy, "writer_commit": res.writer_commit,
            "p50_ms": res.p50_ms, "p99_ms": res.p99_ms, "max_ms": res.max_ms}


def _round_ratios(rounds: list[dict[str, dict[str, float]]], name: str, base: str) -> tuple[float, str]:
    """The median over rounds of name/base events/s, and each round's ratio as text."""
    ratios = [rd[name]["events_s"] / rd[base]["events_s"] for rd in rounds if name in rd]
    return statistics.median(ratios), ", ".join(f"{x:.2f}" for x in ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds per load (after 1 s warm-up)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the server has the other core)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--light", type=int, default=4, help="connections for the light-load latency run")
    parser.add_argument("--devgrid-connections", type=int, default=1, help="connections for the DevGrid batches")
    parser.add_argument("--batch", type=int, default=1000, help="events per DevGrid request")
    parser.add_argument("--source", type=Path, help="run deploytrack from this checkout (default: this one)")
    args = parser.parse_args()
    servers.use_source(args.source)
    if not (0 < args.seconds <= 30 and 0 < args.connections <= 256 and 0 < args.rounds <= 10):
        raise SystemExit("bounded runs only: --seconds <= 30, --connections <= 256, --rounds <= 10")
    wrk.require_wrk()
    started = time.monotonic()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="dt-bench-") as tmp:
        for r in range(args.rounds):
            rounds.append(one_round(Path(tmp), r, args))
            for name, f in rounds[-1].items():
                print(f"round {r + 1}: {name:26} {f['events_s']:9.0f} events/s  p50 {f['p50_ms']:6.2f} ms  "
                      f"p99 {f['p99_ms']:6.2f} ms  CPU {f['cpu_us']:6.1f} us/event  non-2xx {int(f['non2xx'])}",
                      flush=True)
    med = {name: {k: statistics.median(rd[name].get(k, 0.0) for rd in rounds) for k in rounds[0][name]}
           for name in rounds[0]}
    print(f"\nmedians of {args.rounds} rounds, {args.connections} connections, {args.seconds:g} s each "
          f"({time.monotonic() - started:.0f} s total)")
    print(f"{'':26} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'server CPU us/event':>20}")
    for name, f in med.items():
        print(f"{name:26} {f['events_s']:10.0f} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} {f['max_ms']:8.2f} "
              f"{f['cpu_us']:20.1f}")
    print("\nserver CPU per event by thread (us): python = the event loop (HTTP, validation, answers), "
          "dt-writer = SQLite writes and commits, dt-checkpoint = WAL copy-back")
    for name, f in med.items():
        parts = [f"{k[7:]} {v:.0f}" for k, v in f.items() if k.startswith("cpu_us ")]
        print(f"  {name:26} {', '.join(parts)}")
    print("\nwriter busy (in transactions) / of which in COMMIT, share of the run's wall time:")
    for name, f in med.items():
        if name.startswith("deploytrack"):
            print(f"  {name:26} {f['writer_busy']:.0%} / {f['writer_commit']:.0%}")
    dv, fv = med["deploytrack versioner"], med["floor versioner"]
    # Each round's ratio compares loads run a few seconds apart; the median of those is steadier
    # than a ratio of medians when other work shares the machine.
    floor_ratio = _round_ratios(rounds, "deploytrack versioner", "floor versioner")
    bare_ratio = _round_ratios(rounds, "deploytrack versioner", "bare versioner")
    ok = floor_ratio[0] >= TARGET_VERSIONER_FLOOR
    print(f"\nversioner deploytrack/durable floor: {floor_ratio[0]:.2f} (rounds {floor_ratio[1]}; target >= "
          f"{TARGET_VERSIONER_FLOOR}) {'OK' if ok else 'MISSED'}; deploytrack/bare {bare_ratio[0]:.2f} "
          f"(rounds {bare_ratio[1]}); durable floor/bare {fv['events_s'] / med['bare versioner']['events_s']:.2f}")
    print(f"versioner deploytrack p99: {dv['p99_ms']:.2f} ms (target < {TARGET_P99_MS:g}) "
          f"{'OK' if dv['p99_ms'] < TARGET_P99_MS else 'MISSED'}; durable floor p99 {fv['p99_ms']:.2f} ms; at "
          f"{args.light} connections {med[f'deploytrack versioner c{args.light}']['p99_ms']:.2f} ms")
    print(f"versioner CPU per event deploytrack/durable floor: {dv['cpu_us'] / fv['cpu_us']:.2f}x")
    print(f"versioner: mean write group {dv['mean_group']:.1f} requests per commit; "
          f"{int(dv['stored'])} events stored by the warm-up and measured runs; server RSS {dv['rss_mb']:.0f} MB")
    if "deploytrack devgrid" in med:
        dd, fd = med["deploytrack devgrid"], med["floor devgrid"]
        ratio = _round_ratios(rounds, "deploytrack devgrid", "floor devgrid")
        print(f"devgrid ({args.batch}/request, {args.devgrid_connections} connection(s)): deploytrack "
              f"{dd['events_s']:.0f} events/s, durable floor {fd['events_s']:.0f}; deploytrack/durable floor "
              f"{ratio[0]:.2f} (rounds {ratio[1]}; target >= {TARGET_DEVGRID_FLOOR}) "
              f"{'OK' if ratio[0] >= TARGET_DEVGRID_FLOOR else 'MISSED'}; "
              f"deploytrack/bare {dd['events_s'] / med['bare devgrid']['events_s']:.2f}")
    else:
        print("devgrid: this server has no POST /events yet; measured the bare ceiling only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
