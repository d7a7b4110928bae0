"""A deployment rule: its type, mode, scope and type-specific settings, and how a definition is validated.

The admin API, the CLI and the database all hold the same JSON definition; `parse_rule` is the one
place that checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deploytrack.errors import BadRequest
from deploytrack.model import Fields, Limits, integer
from deploytrack.rules.schedule import Window, parse_window
from deploytrack.settings import canonical_environment

TYPES = ("schedule", "flow", "concurrency")
MODES = ("enabled", "report-only", "disabled")
# How a rule type answers a blocked deployment, and its Versioner pre-flight code.
ANSWERS = {"schedule": (423, "NO_DEPLOY_WINDOW"), "flow": (428, "FLOW_PREREQUISITE"),
           "concurrency": (409, "CONCURRENT_DEPLOYMENT")}
DEFAULT_STALE_MINUTES = 360
DEFAULT_OVERRIDE_MINUTES = 24 * 60
# What became of a deployment a rule objected to (rule_violations.outcome).
OUTCOMES = ("blocked", "reported", "recorded", "overridden")
MAX_NAME = 100
MAX_REASON = 1000
MAX_SCOPE = 100
MAX_MINUTES = 525_600  # a year
_FIELDS = {"name", "type", "mode", "products", "environments", "reason", "schedule", "flow", "concurrency"}


@dataclass(frozen=True)
class Rule:
    """One stored rule. `products`/`environments` None means all of them."""

    name: str
    type: str
    mode: str
    products: tuple[str, ...] | None
    environments: tuple[str, ...] | None
    reason: str | None
    window: Window | None = None
    prerequisites: tuple[str, ...] = ()
    strict: bool = False
    soak_minutes: int = 0
    stale_after_minutes: int = DEFAULT_STALE_MINUTES
    id: int | None = None
    created_at: int | None = None
    updated_at: int | None = None
    created_by: str | None = field(default=None, compare=False)

    def applies_to(self, product: str, environment: str) -> bool:
        return ((self.products is None or product in self.products)
                and (self.environments is None or environment in self.environments))

    def definition(self) -> dict[str, Any]:
        """The JSON definition `parse_rule` reads back (what the API takes and the database stores)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "mode": self.mode,
                               "products": list(self.products) if self.products is not None else None,
                               "environments": list(self.environments) if self.environments is not None else None,
                               "reason": self.reason}
        out.update(self.settings())
        return out

    def settings(self) -> dict[str, Any]:
        """The type-specific part of the definition."""
        if self.type == "schedule":
            assert self.window is not None
            return {"schedule": self.window.as_json()}
        if self.type == "flow":
            return {"flow": {"prerequisites": list(self.prerequisites), "strict": self.strict,
                             "soak_minutes": self.soak_minutes}}
        return {"concurrency": {"stale_after_minutes": self.stale_after_minutes}}

    def describe(self) -> str:
        """One line for lists: what the rule checks."""
        if self.window is not None:
            return f"no deploys {self.window.describe()}"
        if self.type == "flow":
            order = " then ".join(self.prerequisites) if self.strict else ", ".join(self.prerequisites)
            soak = f", soaked {self.soak_minutes} min" if self.soak_minutes else ""
            in_order = " (in order)" if self.strict and len(self.prerequisites) > 1 else ""
            return f"completed in {order}{in_order}{soak} first"
        return f"one deployment at a time per product and environment (open ones older than " \
               f"{self.stale_after_minutes} min are ignored)"


def parse_rule(body: object, aliases: Mapping[str, str], stored: bool = False) -> Rule:
    """Validate a rule definition (JSON object); a 400 names the field and the problem.

    `stored`: read back from the database (see `parse_window`)."""
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object describing the rule")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"Field '{unknown[0]}' is not a rule field (expected {', '.join(sorted(_FIELDS))})",
                         unknown[0])
    name = text(body.get("name"), "name", MAX_NAME, required=True)
    kind = body.get("type")
    if kind not in TYPES:
        raise BadRequest(f"Field 'type' must be one of {', '.join(TYPES)}", "type")
    mode = body.get("mode", "enabled")
    if mode == "report_only":
        mode = "report-only"
    if mode not in MODES:
        raise BadRequest(f"Field 'mode' must be one of {', '.join(MODES)}", "mode")
    products = _names(body.get("products"), "products", None)
    environments = _names(body.get("environments"), "environments", aliases)
    reason = text(body.get("reason"), "reason", MAX_REASON)
    for other in set(TYPES) - {kind}:
        if body.get(other) is not None:
            raise BadRequest(f"Field '{other}' does not belong to a {kind} rule", other)
    rule = Rule(name=name or "", type=kind, mode=mode, products=products, environments=environments, reason=reason)
    settings = body.get(kind)
    if kind == "schedule":
        return _replace(rule, window=parse_window(settings, "schedule", stored))
    if kind == "flow":
        return _flow(rule, settings, aliases)
    return _concurrency(rule, settings)


def _flow(rule: Rule, settings: object, aliases: Mapping[str, str]) -> Rule:
    if not isinstance(settings, dict):
        raise BadRequest("Field 'flow' must be an object with prerequisites (and strict, soak_minutes)", "flow")
    unknown = sorted(set(settings) - {"prerequisites", "strict", "soak_minutes"})
    if unknown:
        raise BadRequest(f"Field 'flow.{unknown[0]}' is not a flow field", f"flow.{unknown[0]}")
    prerequisites = _names(settings.get("prerequisites"), "flow.prerequisites", aliases)
    if not prerequisites:
        raise BadRequest("Field 'flow.prerequisites' must list at least one environment", "flow.prerequisites")
    if not rule.environments:
        raise BadRequest("Field 'environments' must name the target environment(s) of a flow rule", "environments")
    overlap = sorted(set(prerequisites) & set(rule.environments))
    if overlap:
        raise BadRequest(f"Field 'flow.prerequisites' must not include a target environment ({overlap[0]})",
                         "flow.prerequisites")
    strict = settings.get("strict", False)
    if not isinstance(strict, bool):
        raise BadRequest("Field 'flow.strict' must be true or false", "flow.strict")
    soak = minutes(settings.get("soak_minutes", 0), "flow.soak_minutes", 0)
    return _replace(rule, prerequisites=prerequisites, strict=strict, soak_minutes=soak)


def _concurrency(rule: Rule, settings: object) -> Rule:
    if settings is None:
        return rule
    if not isinstance(settings, dict) or set(settings) - {"stale_after_minutes"}:
        raise BadRequest("Field 'concurrency' may hold only stale_after_minutes", "concurrency")
    stale = minutes(settings.get("stale_after_minutes", DEFAULT_STALE_MINUTES), "concurrency.stale_after_minutes", 1)
    return _replace(rule, stale_after_minutes=stale)


def _replace(rule: Rule, **changes: Any) -> Rule:
    return Rule(**{**rule.__dict__, **changes})


def text(value: object, name: str, limit: int, required: bool = False) -> str | None:
    """A text field of a rule or an override, by the APIs' rule (`Fields.str`): stripped, at most `limit`
    characters, no NUL; None when empty."""
    return Fields({name: value}, Limits()).str(name, required=required, max_chars=limit)


def _names(value: object, name: str, aliases: Mapping[str, str] | None) -> tuple[str, ...] | None:
    """A list of names (environments folded through the aliases); None or absent means all."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > MAX_SCOPE:
        raise BadRequest(f"Field '{name}' must be a list of 1 to {MAX_SCOPE} names, or null for all", name)
    names: list[str] = []
    for item in value:
        found = text(item, name, 512, required=True) or ""
        found = canonical_environment(found, aliases) if aliases is not None else found
        if found not in names:
            names.append(found)
    return tuple(names)


def minutes(value: object, name: str, least: int) -> int:
    """A count of minutes, at most a year."""
    return integer(value, name, least, MAX_MINUTES, "a whole number of minutes")
