"""What the rules say right now, for pages: which product/environment cells are frozen, and when
each schedule rule's window next opens."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from deploytrack.rules import schedule
from deploytrack.rules import store as rule_store
from deploytrack.rules.model import Rule
from deploytrack.storage.database import Database
from deploytrack.timeutil import now_us, to_iso


@dataclass(frozen=True)
class Freeze:
    """An active no-deploy window over one product and environment."""

    rule: str
    mode: str  # enabled: deployments are blocked; report-only: they are only recorded
    until: int
    reason: str | None

    @property
    def label(self) -> str:
        return "frozen" if self.mode == "enabled" else "window (report-only)"


def active_freezes(rules: Iterable[Rule], products: Iterable[str], environments: Iterable[str],
                   now: int) -> dict[tuple[str, str], Freeze]:
    """Per (product, environment), the active window that ends last (enabled rules before report-only)."""
    windows = []
    for rule in rules:
        if rule.window is None or rule.mode == "disabled":
            continue
        span = schedule.active(rule.window, now)
        if span is not None:
            windows.append((rule, span[1]))
    found: dict[tuple[str, str], Freeze] = {}
    envs = list(environments)
    for product in products:
        for environment in envs:
            here = [(r, end) for r, end in windows if r.applies_to(product, environment)]
            if here:
                rule, end = max(here, key=lambda w: (w[0].mode == "enabled", w[1]))
                found[(product, environment)] = Freeze(rule.name, rule.mode, end, rule.reason)
    return found


async def freezes(db: Database, products: Iterable[str], environments: Iterable[str],
                  now: int | None = None) -> dict[tuple[str, str], Freeze]:
    """The active no-deploy windows over these products and environments (for the matrix and home page)."""
    return active_freezes(await rule_store.list_rules(db), products, environments, now or now_us())


def window_state(rule: Rule, now: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(the window active now, the next one), each (start, end) in UTC µs or None."""
    if rule.window is None:
        return None, None
    return schedule.active(rule.window, now), schedule.next_start(rule.window, now)


def rule_json(rule: Rule, now: int | None = None) -> dict[str, Any]:
    """A rule as the API and CLI show it: its definition, what it checks, and (schedules) its windows."""
    out: dict[str, Any] = {"id": rule.id, **rule.definition(), "description": rule.describe(),
                           "created_at": to_iso(rule.created_at), "updated_at": to_iso(rule.updated_at),
                           "created_by": rule.created_by}
    if rule.window is not None:
        current, upcoming = window_state(rule, now or now_us())
        out["window"] = {"active": current is not None, "active_until": to_iso(current[1]) if current else None,
                         "next_start": to_iso(upcoming[0]) if upcoming else None,
                         "next_end": to_iso(upcoming[1]) if upcoming else None}
    return out
