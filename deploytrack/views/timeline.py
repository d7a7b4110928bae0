"""The lanes of a product's timeline: each build at its final status, deployments per environment
(rollbacks ringed), incidents as diamonds; over long spans, one mark per lane and day."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from deploytrack.timeutil import DAY, to_iso
from deploytrack.views.charts import TimelineItem

AGGREGATE_FROM_DAYS = 90
# which status a day's mark shows when it holds several: the one that needs a look
_WORST = ("failed", "aborted", "started", "pending", "completed")

Lane = tuple[str, list[TimelineItem]]


def final_builds(builds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per build (version and build number or id), newest first, at its final status: the
    newest outcome (completed, failed, aborted) when there is one, else its newest event."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    order: list[tuple[Any, ...]] = []
    for b in builds:  # newest first
        key = (b["version"], b.get("build_number") or b.get("build_id") or (None if b["version"] else b["id"]))
        if key not in seen:
            seen[key] = b
            order.append(key)
        elif seen[key]["status"] in ("pending", "started") and b["status"] not in ("pending", "started"):
            seen[key] = {**b, "occurred_at": seen[key]["occurred_at"]}
    return [seen[k] for k in order]


def _when(us: int) -> str:
    return (to_iso(us) or "")[:16].replace("T", " ") + " UTC"


def lanes(product: str, builds: list[dict[str, Any]], deployments: list[dict[str, Any]],
          incidents: list[dict[str, Any]], environments: list[str]) -> list[Lane]:
    """Builds, one lane per environment, and incidents, as (time, status, text, href) marks."""
    out: list[Lane] = [("builds", [
        (b["occurred_at"], b["status"], f"build {b['version'] or ''} {b['status']}, {_when(b['occurred_at'])}",
         f"/events/{b['id']}") for b in builds])]
    for env in environments:
        items: list[TimelineItem] = []
        for d in deployments:
            if d["environment"] != env:
                continue
            at = d["finished_at"] or d["first_at"]
            rollback = d.get("label") == "rollback"
            items.append((at, d["status"] + (" rollback" if rollback else ""),
                          f"{env}: {d['version'] or '(no version)'} {d['status']}{' (rollback)' if rollback else ''}, "
                          f"{_when(at)}", f"/deployments/{d['id']}"))
        out.append((env, items))
    if incidents:
        out.append(("incidents", [(i["opened_at"], "incident",
                                   f"incident: {i['title'][:80]}, opened {_when(i['opened_at'])}",
                                   f"/incidents/{i['id']}") for i in incidents]))
    return out


def per_day(product: str, lanes_in: list[Lane]) -> list[Lane]:
    """One mark per lane and UTC day: the day's most telling status and how many it stands for."""
    out: list[Lane] = []
    for name, items in lanes_in:
        days: dict[int, list[TimelineItem]] = defaultdict(list)
        for item in items:
            days[item[0] - item[0] % DAY].append(item)
        marks: list[TimelineItem] = []
        for day, group in sorted(days.items()):
            if len(group) == 1:
                marks.append(group[0])
                continue
            bases = [s.partition(" ")[0] for _, s, _, _ in group]
            worst = ("incident" if name == "incidents"
                     else min(bases, key=lambda s: _WORST.index(s) if s in _WORST else 9))
            ringed = any(s.endswith(" rollback") for _, s, _, _ in group)
            counts = ", ".join(f"{bases.count(s)} {s}" for s in dict.fromkeys(bases))
            what = "builds" if name == "builds" else "incidents" if name == "incidents" else "deployments"
            text = f"{name}: {len(group)} {what} on {(to_iso(day) or '')[:10]}: {counts}"
            if name == "incidents":
                href = "/incidents?" + urlencode({"product": product})
            else:
                query = {"product": product, "kind": "build" if name == "builds" else "deployment",
                         "since": (to_iso(day) or "")[:10], "until": (to_iso(day + DAY) or "")[:10]}
                if name != "builds":
                    query["environment"] = name
                href = "/events?" + urlencode(query)
            marks.append((day + DAY // 2, worst + (" rollback" if ringed else ""), text, href))
        out.append((name, marks))
    return out
