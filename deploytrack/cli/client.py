"""`deploytrack send deployment|build|incident` and `deploytrack wrap -- CMD`: the CI client.

Deployments and builds go to the Versioner endpoints (they carry every field); incidents go to
the native `POST /api/v1/incidents`. Fields the flags leave out are filled from the CI's own
variables (see ci_env.py). By default a send that cannot be delivered — server down, token
rejected, no URL or token configured — prints a warning and does not fail the pipeline;
`--strict` makes it fail (exit 1). A deployment a rule blocks is not an undelivered send: the
server answered "not now", so `send` and `wrap` print the rule and reason and exit 5 (as
Versioner's CLI does), and `wrap` does not run the command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deploytrack.client import ci_env
from deploytrack.client import http as client
from deploytrack.model import STATUS_SYNONYMS
from deploytrack.timeutil import now_us, to_iso

EXIT_USAGE = 2
EXIT_UNDELIVERED = 1  # only with --strict
EXIT_BLOCKED = 5  # a deployment rule refused it (Versioner's CLI uses the same code)
PATHS = {"deployment": "/deployment-events/", "build": "/build-events/", "incident": "/api/v1/incidents"}
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class UsageError(Exception):
    """A flag combination the client cannot turn into a request (exit 2, whatever --strict says)."""


# -- flags ---------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `send` and `wrap` to the top-level parser."""
    send = subparsers.add_parser("send", help="send one deployment, build or incident event to a server")
    kinds = send.add_subparsers(dest="send_kind", metavar="KIND", required=True)
    for kind in ("deployment", "build"):
        p = kinds.add_parser(kind, help=f"send a {kind} event (Versioner endpoint {PATHS[kind]})")
        _connection_flags(p)
        _event_flags(p, environment_required=kind == "deployment")
        p.add_argument("--timestamp", help="when it happened: ISO 8601 or epoch seconds (default: now)")
        p.add_argument("--status", type=_status, default="completed",
                       help="pending|started|completed|failed|aborted or a synonym (success, failure, ...); "
                            "default: completed")
        p.set_defaults(func=cmd_send)
    incident = kinds.add_parser("incident", help=f"open an incident ({PATHS['incident']})")
    _connection_flags(incident)
    incident.add_argument("--product", required=True)
    incident.add_argument("--environment")
    incident.add_argument("--title", help="what is wrong (or --summary)")
    incident.add_argument("--summary", help=argparse.SUPPRESS)
    incident.add_argument("--severity")
    incident.add_argument("--opened-at", "--timestamp", dest="opened_at",
                          help="when it started: ISO 8601 or epoch seconds (default: now, by the server)")
    incident.add_argument("--change-id", help="change request the incident is caused by")
    incident.add_argument("--deployment-id", type=_deployment_id, help="deployment record (id) that caused it")
    incident.add_argument("--meta", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                          help="extra metadata, repeatable")
    incident.set_defaults(func=cmd_send)

    wrap = subparsers.add_parser(
        "wrap", help="send started, run a command, send completed/failed; exit with the command's code",
        usage="%(prog)s --product P --environment E [--version V] [options] -- COMMAND [ARGS...]")
    _connection_flags(wrap)
    _event_flags(wrap, environment_required=True)
    wrap.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    wrap.set_defaults(func=cmd_wrap, send_kind="deployment")


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="server base URL (or DEPLOYTRACK_URL), e.g. https://deploytrack.example.com")
    p.add_argument("--token", help="ingest token (or DEPLOYTRACK_TOKEN; prefer the variable: flags show in ps)")
    p.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds per attempt (default 10)")
    p.add_argument("--retries", type=_count, default=3,
                   help="retries after the first attempt on connection errors, 5xx and 429 (default 3)")
    p.add_argument("--backoff", type=_positive_float, default=0.5,
                   help="first retry delay in seconds, doubling each time (default 0.5)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when the event cannot be delivered (default: warn and carry on)")
    p.add_argument("--dry-run", action="store_true", help="print the request as JSON (token hidden); send nothing")


def _event_flags(p: argparse.ArgumentParser, environment_required: bool) -> None:
    p.add_argument("--product", required=True, help="product / service name")
    p.add_argument("--version", help="version being built or deployed (default: first 12 characters of the SHA)")
    p.add_argument("--environment", required=environment_required, help="target environment")
    p.add_argument("--sha", help="commit SHA (default: from the CI)")
    p.add_argument("--branch", help="branch (default: from the CI)")
    p.add_argument("--repository", help="repository URL (default: from the CI)")
    p.add_argument("--build-url", help="link to the CI run (default: from the CI)")
    p.add_argument("--build-number", help="CI build number (default: from the CI)")
    p.add_argument("--actor", help="who triggered it (default: from the CI)")
    p.add_argument("--source-system", help="CI name (default: detected, e.g. github, gitlab, jenkins)")
    p.add_argument("--invoke-id", help="id shared by the events of one run (default: the CI job attempt's id)")
    p.add_argument("--summary", help="free text")
    p.add_argument("--change-id", help="change request id, e.g. CHG0012345")
    p.add_argument("--commit-timestamp", help="when the commit was made, for lead time")
    p.add_argument("--meta", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="extra metadata, repeatable")


def _status(value: str) -> str:
    if value.strip().lower() not in STATUS_SYNONYMS:
        raise argparse.ArgumentTypeError(f"unknown status {value!r}; expected one of {', '.join(STATUS_SYNONYMS)}")
    return value.strip()


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < number < 3600:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and 3600 seconds")
    return number


def _count(value: str) -> int:
    if not value.isdigit() or int(value) > 20:
        raise argparse.ArgumentTypeError(f"{value!r} must be a whole number from 0 to 20")
    return int(value)


def _deployment_id(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a deployment id (a positive whole number)")
    return int(value)


def _key_value(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key.strip(), val


# -- building requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sender:
    """Everything one command needs to send: target, options, and what the CI says."""

    target: client.Target
    strict: bool
    dry_run: bool
    ci: ci_env.CIInfo
    configured: str | None  # why the target is unusable (no URL / no token), if it is


def sender(args: argparse.Namespace, environ: Mapping[str, str]) -> Sender:
    server = (args.server or environ.get("DEPLOYTRACK_URL") or "").strip()
    token = (args.token or environ.get("DEPLOYTRACK_TOKEN") or "").strip()
    problem = None
    if not server:
        problem = "no server URL: pass --server or set DEPLOYTRACK_URL"
    elif not server.startswith(("http://", "https://")):
        problem = "the server URL must start with http:// or https://"
    elif not token:
        problem = "no token: pass --token or set DEPLOYTRACK_TOKEN"
    target = client.Target(server or "$DEPLOYTRACK_URL", token, args.timeout, args.retries, args.backoff)
    return Sender(target, args.strict, args.dry_run, ci_env.detect(environ), problem)


def event_body(args: argparse.Namespace, kind: str, ci: ci_env.CIInfo, status: str,
               invoke_id: str | None, extra: Mapping[str, Any] | None = None,
               timestamp: str | None = None) -> dict[str, Any]:
    """A Versioner deployment-event or build-event body: flags first, then the CI's variables."""
    sha = args.sha or ci.sha
    version = args.version or (sha[:12] if sha else None)
    if not version:
        raise UsageError("--version is required when no commit SHA is known (--sha or a CI variable)")
    metadata = {key: value for key, value in args.meta}
    metadata.update(extra or {})
    body: dict[str, Any] = {
        "product_name": args.product,
        "version": version,
        "environment_name": args.environment,
        "status": status,
        "deployed_by" if kind == "deployment" else "built_by": args.actor or ci.actor,
        "scm_sha": sha,
        "scm_branch": args.branch or ci.branch,
        "scm_repository": args.repository or ci.repository,
        "build_url": args.build_url or ci.build_url,
        "build_number": args.build_number or ci.build_number,
        "source_system": args.source_system or ci.source_system,
        "invoke_id": invoke_id,
        "summary": args.summary,
        "change_id": args.change_id,
        "timestamp": timestamp or getattr(args, "timestamp", None),
        "commit_timestamp": args.commit_timestamp,
        "extra_metadata": metadata or None,
    }
    return {k: v for k, v in body.items() if v is not None}


def incident_body(args: argparse.Namespace) -> dict[str, Any]:
    """The native incidents API body: product, environment, title, severity, opened_at, links, metadata."""
    title = args.title or args.summary
    if not title:
        raise UsageError("an incident needs --title")
    body = {"product": args.product, "environment": args.environment, "title": title,
            "severity": args.severity, "opened_at": args.opened_at, "change_id": args.change_id,
            "deployment_id": args.deployment_id, "metadata": dict(args.meta) or None}
    return {k: v for k, v in body.items() if v is not None}


def deliver(s: Sender, what: str, path: str, body: dict[str, Any]) -> client.Outcome | None:
    """Send (or print, with --dry-run) one logical request; warn on failure. None means undelivered."""
    # The incidents endpoint creates a row per request and ignores Idempotency-Key.
    request = client.build_request(s.target, path, body, replay_safe=path != PATHS["incident"])
    if s.dry_run:
        print(json.dumps(request.redacted(), indent=2, ensure_ascii=False), flush=True)
        return client.Outcome(True, None, None, None, 0)
    if s.configured:
        _warn(s, f"not sending the {what}: {s.configured}")
        return None
    outcome = client.send(s.target, request)
    if outcome.ok:
        return outcome
    if blocked(outcome):
        _report_block(outcome.body)
        return outcome
    reason = outcome.error or "unknown error"
    if outcome.status in (401, 403):
        reason = f"the server rejected the token ({reason})"
    tries = f"after {outcome.attempts} attempts" if outcome.attempts > 1 else "in 1 attempt"
    _warn(s, f"could not send the {what} to {client.redact_url(request.url)} {tries}: {reason}")
    return None


def blocked(outcome: client.Outcome) -> bool:
    """Whether the server refused the deployment under a rule (Versioner's pre-flight answer)."""
    body = outcome.body
    return (not outcome.ok and outcome.status in (409, 423, 428) and isinstance(body, dict)
            and body.get("error") == "deployment_blocked")


def _report_block(body: dict[str, Any]) -> None:
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    lines = [f"deploytrack: deployment blocked ({body.get('code', 'rule')})",
             f"  rule: {details.get('rule_name', '?')}", f"  {body.get('message', '')}"]
    if details.get("reason"):
        lines.append(f"  reason: {details['reason']}")
    if body.get("retry_after"):
        lines.append(f"  retry after: {body['retry_after']}")
    if details.get("override"):
        lines.append(f"  {details['override']}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _warn(s: Sender, message: str) -> None:
    if len(s.target.token) >= client.MIN_REDACTED:  # shorter strings are not worth mangling text over
        message = message.replace(s.target.token, "***")
    tail = "" if s.strict else " (not failing the pipeline; --strict would)"
    print(f"deploytrack: {'error' if s.strict else 'warning'}: {message}{tail}", file=sys.stderr, flush=True)


# -- send ----------------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    """`deploytrack send KIND ...`: one event; prints the server's answer as JSON on success."""
    s = sender(args, os.environ)
    kind = args.send_kind
    try:
        if kind == "incident":
            body = incident_body(args)
        else:
            body = event_body(args, kind, s.ci, args.status, args.invoke_id or s.ci.build_id)
    except UsageError as exc:
        print(f"deploytrack: {exc}", file=sys.stderr)
        return EXIT_USAGE
    outcome = deliver(s, f"{kind} event", PATHS[kind], body)
    if outcome is None:
        return EXIT_UNDELIVERED if s.strict else 0
    if not outcome.ok:
        return EXIT_BLOCKED
    if not s.dry_run:
        print(json.dumps(outcome.body, ensure_ascii=False))
    return 0


# -- wrap ----------------------------------------------------------------------------------


def cmd_wrap(args: argparse.Namespace) -> int:
    """`deploytrack wrap ... -- CMD`: started, run CMD (output untouched), completed/failed/aborted."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("deploytrack: wrap needs a command after --", file=sys.stderr)
        return EXIT_USAGE
    s = sender(args, os.environ)
    invoke_id = args.invoke_id or s.ci.job_id or str(uuid.uuid4())
    try:
        started = event_body(args, "deployment", s.ci, "started", invoke_id, timestamp=to_iso(now_us()))
    except UsageError as exc:  # e.g. no version: nothing to record, but the deployment itself goes on
        _warn(s, f"not recording the deployment: {exc}")
        if s.strict:
            print("deploytrack: not running the command because --strict is set", file=sys.stderr)
            return EXIT_UNDELIVERED
        return run_passthrough(command)[0]
    outcome = deliver(s, "started event", PATHS["deployment"], started)
    if outcome is None and s.strict:
        print("deploytrack: not running the command because --strict is set", file=sys.stderr)
        return EXIT_UNDELIVERED
    if outcome is not None and not outcome.ok:
        print("deploytrack: not running the command: the deployment is blocked", file=sys.stderr)
        return EXIT_BLOCKED
    t0 = time.monotonic()
    code, signame, cancelled = run_passthrough(command)
    duration = time.monotonic() - t0
    status = "aborted" if cancelled else ("completed" if code == 0 else "failed")
    extra: dict[str, Any] = {"duration_seconds": round(duration, 3), "exit_code": code}
    if signame:
        extra["signal"] = signame
    final = event_body(args, "deployment", s.ci, status, invoke_id, extra=extra, timestamp=to_iso(now_us()))
    delivered = deliver(s, f"{status} event", PATHS["deployment"], final) is not None
    if not delivered and s.strict and code == 0:
        return EXIT_UNDELIVERED
    return code


def run_passthrough(command: list[str]) -> tuple[int, str | None, bool]:
    """Run `command` with the wrapper's stdin/stdout/stderr; forward INT/TERM/HUP to it.

    Returns (exit code as a shell reports it: 128+N for signal N, 127 not found, 126 not
    runnable; the signal's name if it died of one; whether the wrapper itself was signalled).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    received: list[int] = []
    early: list[int] = []
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if not children:
            early.append(signum)
        elif children[0].returncode is None:
            children[0].send_signal(signum)

    # Handlers go in before the child starts, so a cancellation can never slip between the two.
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        try:
            children.append(subprocess.Popen(command))
        except FileNotFoundError:
            print(f"deploytrack: command not found: {command[0]}", file=sys.stderr, flush=True)
            return 127, None, bool(received)
        except OSError as exc:
            print(f"deploytrack: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr, flush=True)
            return 126, None, bool(received)
        for signum in early:  # arrived while the child was being started
            children[0].send_signal(signum)
        rc = children[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if rc < 0:
        return 128 - rc, signal.Signals(-rc).name, bool(received)
    return rc, None, bool(received)
