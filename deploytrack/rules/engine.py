"""Judging one deployment attempt against one rule: pure functions of the attempt and the facts given.

Each check returns a `Violation` (what Versioner's pre-flight answer needs) or None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploytrack.rules import schedule
from deploytrack.rules.model import ANSWERS, Rule
from deploytrack.timeutil import to_iso

MINUTE_US = 60_000_000
# Answer precedence when several rules object: a window is the reason whatever else holds.
PRECEDENCE = {"schedule": 0, "flow": 1, "concurrency": 2}


@dataclass(frozen=True)
class Attempt:
    """The first event of a deployment happening now."""

    product: str
    environment: str
    version: str | None
    status: str
    at: int


@dataclass
class Violation:
    rule: Rule
    message: str
    retry_after: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return ANSWERS[self.rule.type][0]

    @property
    def code(self) -> str:
        return ANSWERS[self.rule.type][1]

    def summary(self) -> dict[str, Any]:
        return {"rule_id": self.rule.id, "rule_name": self.rule.name, "rule_type": self.rule.type,
                "mode": self.rule.mode, "code": self.code, "message": self.message,
                "retry_after": to_iso(self.retry_after), "details": self.details}


def check_schedule(rule: Rule, attempt: Attempt, span: tuple[int, int] | None) -> Violation | None:
    """`span`: the rule's window occurrence active at the attempt's time, if any."""
    assert rule.window is not None
    if span is None:
        return None
    zone = rule.window.timezone
    ends = schedule.local_iso(span[1], zone)
    reason = rule.reason or f"No deployments to {attempt.environment} during this window"
    return Violation(rule, f"{reason} (until {ends})", span[1], {
        "window_name": rule.name, "window_start": schedule.local_iso(span[0], zone), "window_end": ends,
        "timezone": zone, "reason": rule.reason})


def check_flow(rule: Rule, attempt: Attempt, completions: Mapping[str, int]) -> Violation | None:
    """`completions`: per prerequisite environment, when this version first completed there."""
    what = f"{attempt.product} {attempt.version}" if attempt.version else attempt.product
    base = {"prerequisites": list(rule.prerequisites), "strict": rule.strict, "soak_minutes": rule.soak_minutes,
            "target": attempt.environment, "version": attempt.version, "reason": rule.reason,
            "completed": {env: to_iso(at) for env, at in completions.items()}}
    if attempt.version is None:
        return Violation(rule, f"A deployment to {attempt.environment} must name its version: rule "
                               f"'{rule.name}' checks it was deployed to {', '.join(rule.prerequisites)} first",
                         None, {**base, "missing": list(rule.prerequisites)})
    missing = [env for env in rule.prerequisites if env not in completions]
    if missing:
        return Violation(rule, f"{what} must complete in {', '.join(missing)} before {attempt.environment}"
                               f"{' (' + rule.reason + ')' if rule.reason else ''}", None, {**base, "missing": missing})
    if rule.strict:
        times = [completions[env] for env in rule.prerequisites]
        pairs = zip(times, times[1:], rule.prerequisites, rule.prerequisites[1:], strict=False)  # neighbours
        for earlier, later, env_a, env_b in pairs:
            if later < earlier:
                return Violation(rule, f"{what} reached {env_b} before {env_a}; rule '{rule.name}' needs "
                                       f"{' then '.join(rule.prerequisites)} in that order", None,
                                 {**base, "out_of_order": [env_a, env_b]})
    if rule.soak_minutes:
        ready = max(completions[env] for env in rule.prerequisites) + rule.soak_minutes * MINUTE_US
        if attempt.at < ready:
            soaked = (attempt.at - max(completions[env] for env in rule.prerequisites)) // MINUTE_US
            return Violation(rule, f"{what} has soaked {soaked} min in {rule.prerequisites[-1]}; rule "
                                   f"'{rule.name}' needs {rule.soak_minutes} min before {attempt.environment}",
                             ready, {**base, "soak_remaining_seconds": (ready - attempt.at) // 1_000_000})
    return None


def check_concurrency(rule: Rule, attempt: Attempt, open_deployments: Sequence[Mapping[str, Any]]) -> Violation | None:
    """`open_deployments`: records of the same product and environment still pending or started."""
    fresh = [d for d in open_deployments if d["last_at"] >= attempt.at - rule.stale_after_minutes * MINUTE_US]
    if not fresh:
        return None
    other = max(fresh, key=lambda d: d["last_at"])
    started = other["started_at"] or other["first_at"]
    return Violation(rule, f"Another deployment of {attempt.product} to {attempt.environment} is in progress "
                           f"(deployment {other['id'] or 'just started'}, version {other['version'] or '-'}, "
                           f"{other['status']} since {to_iso(started)})", None, {
        "conflicting_deployment_id": other["id"], "conflicting_deployment_status": other["status"],
        "conflicting_deployment_started": to_iso(started), "conflicting_version": other["version"],
        "reason": rule.reason})
