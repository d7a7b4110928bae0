"""What explains one deployment: the commits it shipped with their lead times, and why it failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from deploytrack.errors import BadRequest
from deploytrack.metrics import rules
from deploytrack.storage import deployment_queries as dq
from deploytrack.storage.database import Database
from deploytrack.timeutil import parse_timestamp

MAX_COMMITS = 50
# metadata keys CI systems use for why a step failed, in the order they are trusted
REASON_KEYS = ("error", "error_message", "failure_reason", "reason", "message", "status_message", "details")
SOURCE_TEXT = {"commit": "recorded commit", "event": "commit time sent with the deployment",
               "build": "first build of the commit (no commit time known)"}


@dataclass
class Shipped:
    sha: str  # a commit SHA, or "#" + the version when no SHA is known
    repository: str
    committed_at: int | None
    source: str | None  # commit, event or build: where the time comes from
    lead_us: int | None
    counted: bool  # this deployment is the change's first here: its lead time counts in the metric

    @property
    def source_text(self) -> str:
        return SOURCE_TEXT.get(self.source or "", "no commit time known")


def _time(value: Any) -> int | None:
    try:
        return parse_timestamp(value, "committed_at") if value is not None else None
    except BadRequest:
        return None


def _metadata(event: dict[str, Any]) -> Any:
    try:
        return orjson.loads(event["metadata"]) if event.get("metadata") else {}
    except orjson.JSONDecodeError:
        return {}


async def shipped_commits(db: Database, deployment: dict[str, Any], events: list[dict[str, Any]]) -> list[Shipped]:
    """Each commit the deployment carried (its SHA and any metadata `commits` list), with its lead time.

    Where the deployment is a change's first here, the lead time is the one the metric counts
    (metric_lead_facts); otherwise it is worked out the same way for reading (a recorded commit,
    else a time sent with the deployment, else the commit's first build) and marked as not counted.
    """
    refs: dict[str, tuple[str, int | None]] = {}
    for event in events:
        if event.get("scm_sha"):
            known = refs.get(event["scm_sha"], ("", None))
            refs[event["scm_sha"]] = (event.get("scm_repository") or known[0], event.get("commit_time") or known[1])
        for sha, repo, at in rules.listed_commits(_metadata(event), _time):
            refs.setdefault(sha, (repo, at))
    if deployment.get("scm_sha") and deployment["scm_sha"] not in refs:
        refs[deployment["scm_sha"]] = ("", None)
    counted = await dq.lead_facts(db, deployment)
    out = []
    for sha, (repo, sent) in list(refs.items())[:MAX_COMMITS]:
        at, source = await dq.commit_time(db, sha, repo)
        if sent is not None and source != "commit":
            at, source = sent, "event"
        fact = counted.pop(sha, None)
        if fact is not None and fact["lead_us"] is not None:
            source = rules.SOURCES[fact["source"]] if fact["source"] is not None else source
            out.append(Shipped(sha, repo or fact["repository"] or "", at, source, int(fact["lead_us"]), True))
            continue
        finished = deployment.get("finished_at") if deployment.get("status") == "completed" else None
        lead = max(0, finished - at) if finished is not None and at is not None else None
        out.append(Shipped(sha, repo, at, source, lead, False))
    for change, fact in counted.items():  # a change known by its version alone (no SHA)
        source = rules.SOURCES[fact["source"]] if fact["source"] is not None else None
        out.append(Shipped(change, fact["repository"] or "", None, source, fact["lead_us"], True))
    return out


def failure_reason(deployment: dict[str, Any], events: list[dict[str, Any]]) -> str | None:
    """Why a failed or aborted deployment failed, in the words its last failing event used."""
    if deployment.get("status") not in ("failed", "aborted"):
        return None
    for event in reversed(events):
        if event.get("status") not in ("failed", "aborted"):
            continue
        meta = _metadata(event)
        for key in REASON_KEYS:
            value = meta.get(key) if isinstance(meta, dict) else None
            if isinstance(value, str) and value.strip():
                return value.strip()[:2000]
        if event.get("summary"):
            return str(event["summary"])[:2000]
    return None
