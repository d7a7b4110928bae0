"""The rules' place in ingestion: judged inside the single writer, so two deployments starting at
once are decided one after the other and exactly one wins a concurrency rule.

`storage.ingest` asks a `RuleGate` about the deployments a request would open (their first event,
happening now), before staging anything. The gate answers with a `Judgement`: refuse the request
(a `DeploymentBlocked`, after recording the blocked attempt) or let it through and record what the
rules objected to once the events have ids.
"""

from __future__ import annotations

import dataclasses
import itertools
import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from deploytrack.errors import DeploymentBlocked
from deploytrack.model import Event
from deploytrack.rules import engine, schedule
from deploytrack.rules import store as rule_store
from deploytrack.rules.model import Rule
from deploytrack.storage.database import Connection
from deploytrack.timeutil import to_iso

# An event older than this on arrival is a backfill: rules never judge the past.
BACKFILL_US = 5 * 60_000_000
GATED_STATUSES = frozenset({"pending", "started", "completed"})
BLOCK = "block"  # the other policy, "record", lets every deployment through


def happening_now(event: Event, received_at: int) -> bool:
    """Rules judge deployments happening now, never backfilled ones."""
    return event.occurred_at is None or event.occurred_at >= received_at - BACKFILL_US


@dataclass
class Candidate:
    """An event that opens a new deployment record, with what the rules objected to."""

    index: int
    event: Event
    attempt: engine.Attempt
    violations: list[engine.Violation]
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)  # rule id -> override used

    def blocking(self, policy: str) -> list[engine.Violation]:
        return [v for v in self.violations if v.rule.mode == "enabled" and policy == BLOCK]

    def outcome(self, policy: str) -> str:
        if self.overrides:
            return "overridden"
        if any(v.rule.mode == "enabled" for v in self.violations):
            return "blocked" if policy == BLOCK else "recorded"
        return "reported"


@dataclass
class Judgement:
    """What the gate decided for one request that it let through."""

    gate: RuleGate
    candidates: list[Candidate]
    policy: str
    token_id: int | None
    received_at: int

    def record(self, event_ids: dict[int, str]) -> None:
        """Store the violations and use the overrides, now that the events have ids."""
        for c in self.candidates:
            event_id = event_ids[c.index]
            for override in {o["id"]: o for o in c.overrides.values()}.values():
                rule_store.use_override(self.gate.conn, override["id"], self.received_at, event_id)
            self.gate.store(c, c.outcome(self.policy), self.token_id, self.received_at, event_id)


class RuleGate:
    """Rules and facts for one writer group (one transaction)."""

    def __init__(self, conn: Connection, pairs: Iterable[tuple[str, str]] = ()) -> None:
        """`pairs`: the (product, environment) pairs the group deploys to, looked up at once when a
        concurrency rule needs their open deployments."""
        self.conn = conn
        self.rules: list[Rule] = rule_store.active_rules(conn)
        self._open: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if any(r.type == "concurrency" for r in self.rules):
            self._open = rule_store.open_deployments_of(conn, set(pairs))
        # per schedule rule: (computed at, valid until, active span); a group's requests arrive
        # within milliseconds of each other, so each window is worked out once per group
        self._windows: dict[int, tuple[int, int | None, tuple[int, int] | None]] = {}
        # the deployment records the group staged, by (product, environment); they only ever get added
        self._staged: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._staged_seen = 0

    def judge(self, events: list[tuple[int, Event, str]], policy: str, token_id: int | None, received_at: int,
              staged: Collection[dict[str, Any]], batch: bool = False) -> Judgement | None:
        """Judge the events that open deployments; raise DeploymentBlocked (after recording the
        attempt) when an enabled rule refuses one and no override covers it. `batch`: the request
        holds several events (the answer names the refused one's index)."""
        if not self.rules:
            return None
        for dep in itertools.islice(staged, self._staged_seen, None):
            self._staged.setdefault((dep["product"], dep["environment"]), []).append(dep)
        self._staged_seen = len(staged)
        candidates = []
        for index, event, environment in events:
            attempt = engine.Attempt(event.product, environment, event.version, event.status, received_at)
            violations = [v for rule in self.rules if rule.applies_to(event.product, environment)
                          for v in [self._check(rule, attempt)] if v is not None]
            if violations:
                candidates.append(Candidate(index, event, attempt, violations))
        if not candidates:
            return None
        taken: set[int] = set()
        for c in candidates:
            blocking = c.blocking(policy)
            if blocking and not self._cover(c, blocking, received_at, taken):
                self._refuse(c, blocking, token_id, received_at, batch)
        return Judgement(self, candidates, policy, token_id, received_at)

    def _check(self, rule: Rule, attempt: engine.Attempt) -> engine.Violation | None:
        if rule.type == "schedule":
            return engine.check_schedule(rule, attempt, self._window(rule, attempt.at))
        if rule.type == "flow":
            completions = self._completions(attempt, rule.prerequisites) if attempt.version else {}
            return engine.check_flow(rule, attempt, completions)
        return engine.check_concurrency(rule, attempt, self._open_now(attempt.product, attempt.environment))

    def _window(self, rule: Rule, now: int) -> tuple[int, int] | None:
        assert rule.window is not None
        known = self._windows.get(id(rule))
        if known is None or not (known[0] <= now and (known[1] is None or now < known[1])):
            span, until = schedule.state(rule.window, now)
            known = (now, until, span)
            self._windows[id(rule)] = known
        return known[2]

    def _open_now(self, product: str, environment: str) -> list[dict[str, Any]]:
        """Open deployments of the pair: the database's, as changed by what this group staged."""
        pair = (product, environment)
        if pair not in self._open:
            self._open[pair] = rule_store.open_deployments(self.conn, product, environment)
        merged: dict[Any, dict[str, Any]] = {d["id"]: d for d in self._open[pair]}
        for dep in self._staged.get(pair, ()):
            key = dep["id"] if dep["id"] is not None else id(dep)
            record = dep["record"]  # the record as the group's events folded it so far
            if record.status in rule_store.OPEN_STATUSES:
                merged[key] = {"id": dep["id"], "version": dep["version"], "status": record.status,
                               "first_at": record.first_at, "started_at": record.started_at,
                               "last_at": record.last_at}
            else:
                merged.pop(key, None)
        return list(merged.values())

    def _completions(self, attempt: engine.Attempt, environments: tuple[str, ...]) -> dict[str, int]:
        assert attempt.version is not None
        found = rule_store.first_completions(self.conn, attempt.product, attempt.version, environments)
        for env in environments:
            for dep in self._staged.get((attempt.product, env), ()):
                record = dep["record"]
                if dep["version"] == attempt.version and record.status == "completed" and record.finished_at:
                    found[env] = min(found.get(env, record.finished_at), record.finished_at)
        return found

    def _cover(self, c: Candidate, blocking: list[engine.Violation], now: int, taken: set[int]) -> bool:
        """Find an unused override for every blocking rule (rule-specific before general); all or none."""
        available = [o for o in rule_store.usable_overrides(self.conn, c.event.product, c.attempt.environment,
                                                              c.event.version, now) if o["id"] not in taken]
        chosen: dict[int, dict[str, Any]] = {}
        for violation in blocking:
            rule_id = violation.rule.id or 0
            match = next((o for o in available if o["rule_id"] == rule_id), None) or \
                next((o for o in available if o["rule_id"] is None), None)
            if match is None:
                return False
            chosen[rule_id] = match
        c.overrides = chosen
        taken.update(o["id"] for o in chosen.values())
        return True

    def _refuse(self, c: Candidate, blocking: list[engine.Violation], token_id: int | None,
                received_at: int, batch: bool) -> None:
        c.overrides = {}
        primary = min(blocking, key=lambda v: engine.PRECEDENCE[v.rule.type])
        violation_id = self.store(c, "blocked", token_id, received_at, None)
        details: dict[str, Any] = {"rule_id": primary.rule.id, "rule_name": primary.rule.name,
                                   "rule_type": primary.rule.type, **primary.details,
                                   "blocked_by": [v.rule.name for v in blocking], "violation_id": violation_id,
                                   "override": "an admin can let one deployment through: deploytrack rule override "
                                               f"--product {shlex.quote(c.event.product)} --environment "
                                               f"{shlex.quote(c.attempt.environment)} --reason WHY"}
        if batch:
            details["index"] = c.index
        seconds = (primary.retry_after - received_at + 999_999) // 1_000_000 if primary.retry_after else None
        raise DeploymentBlocked(primary.http_status, primary.code,
                                f"Deployment blocked by rule '{primary.rule.name}': {primary.message}",
                                to_iso(primary.retry_after), details, seconds)

    def store(self, c: Candidate, outcome: str, token_id: int | None, received_at: int,
              event_id: str | None) -> int:
        """One row per attempt a rule objected to; the primary rule's answer is in its columns."""
        ranked = sorted(c.violations, key=lambda v: (v.rule.mode != "enabled", engine.PRECEDENCE[v.rule.type]))
        primary = ranked[0]
        override_ids = sorted({o["id"] for o in c.overrides.values()})
        return rule_store.insert_violation(self.conn, {
            "at": received_at, "outcome": outcome, "rule_id": primary.rule.id, "rule_name": primary.rule.name,
            "rule_type": primary.rule.type, "code": primary.code, "http_status": primary.http_status,
            "message": primary.message, "retry_after": primary.retry_after, "dialect": c.event.dialect,
            "token_id": token_id, "product": c.event.product, "environment": c.attempt.environment,
            "version": c.event.version, "status": c.event.status, "actor": c.event.actor, "event_id": event_id,
            "override_id": override_ids[0] if override_ids else None,
            "violations": orjson.dumps([{**v.summary(), "override_id": c.overrides.get(v.rule.id or 0, {}).get("id")}
                                        for v in ranked]).decode(),
            "attempt": orjson.dumps(dataclasses.asdict(c.event)).decode()})
