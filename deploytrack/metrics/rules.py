"""The domain rules of deployments and the DORA metrics, each written once.

Everything that decides what a deployment is, how it is labelled, what it rolled back, what a
"change" is and when a failure is known lives here as plain functions over plain values. The
ingestion fold, the refold, the stored facts, the deployment list and the metrics all call them;
no rule is restated in SQL. docs/metrics.md states each rule in words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import orjson

from deploytrack.timeutil import DAY, HOUR

# -- the deployment lifecycle ----------------------------------------------------------------

EVER = -(1 << 62)  # a time before any data: "from the beginning"
STATUS_RANK: Mapping[str, int] = {"pending": 0, "started": 1, "completed": 2, "failed": 3, "aborted": 4}
TERMINAL = frozenset({"completed", "failed", "aborted"})
OPEN = frozenset({"pending", "started"})


def fold_status(current: str, finished_at: int | None, new: str, at: int) -> str:
    """The lifecycle only moves forward (pending -> started -> an outcome) whatever order events arrive
    in; between two outcomes the later one wins, at the same instant the higher rank
    (aborted > failed > completed)."""
    rank_current, rank_new = STATUS_RANK[current], STATUS_RANK[new]
    if min(rank_new, 2) != min(rank_current, 2):
        return new if rank_new > rank_current else current
    if rank_new < 2:
        return max(current, new, key=STATUS_RANK.__getitem__)
    last = finished_at if finished_at is not None else at
    return new if at > last or (at == last and rank_new >= rank_current) else current


def starts_new_run(previous: str, new: str) -> bool:
    """Without an invoke id, events of one product/environment/version form one deployment until it
    finishes; an event after an outcome, or one that does not move the lifecycle forward (a second
    `started`), begins the next deployment."""
    return previous in TERMINAL or STATUS_RANK[new] <= STATUS_RANK[previous]


# -- labels -----------------------------------------------------------------------------------

LABELS = ("rollback", "hotfix")
_LABEL_KEYS = ("deployment_type", "type", "label")
# Where a forge's hook keeps the deployment's own payload (GitHub's `deployment.payload`): its marks count too.
_PAYLOAD_KEY = "deployment_payload"


def event_label(metadata: Any, summary: str | None) -> str | None:
    """'rollback' or 'hotfix' when the event says so (an attribute, a metadata flag, the same in a forge's
    deployment payload, or a description starting with rollback/revert/hotfix); a rollback mark wins over
    a hotfix mark."""
    if not metadata and not summary:  # most events: nothing to read
        return None
    meta = _json_object(metadata)
    marks = _marks(meta) | _marks(_json_object(meta.get(_PAYLOAD_KEY)))
    text = (summary or "").lower()
    if text.startswith(("rollback", "roll back", "rolled back", "revert")):
        marks.add("rollback")
    elif text.startswith("hotfix"):
        marks.add("hotfix")
    return combine_labels(*marks)


def _json_object(value: Any) -> dict[str, Any]:
    """A JSON object, given as one or as its text; anything else is empty."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


def _marks(meta: dict[str, Any]) -> set[str]:
    marks = {v.strip().lower() for v in (meta.get(k) for k in _LABEL_KEYS) if isinstance(v, str)} & set(LABELS)
    if meta.get("rollback") is True:
        marks.add("rollback")
    return marks


def combine_labels(*labels: str | None) -> str | None:
    """The label of a deployment from its events' labels: rollback on any event wins, then hotfix."""
    return "rollback" if "rollback" in labels else "hotfix" if "hotfix" in labels else None


def duration_us(first_at: int, started_at: int | None, finished_at: int | None) -> int | None:
    """From start (or first event) to outcome. None while the deployment has no outcome, and for one
    known only from its final event (no duration, rather than a duration of zero)."""
    start = started_at if started_at is not None else first_at
    if finished_at is None or (started_at is None and start >= finished_at):
        return None
    return max(0, finished_at - start)


# -- folding events into deployments ------------------------------------------------------------


@dataclass(slots=True)
class FoldEvent:
    """What the fold reads of one deployment event."""

    seq: int
    occurred_at: int
    status: str
    invoke_id: str  # '' when none
    scm_sha: str | None = None
    actor: str | None = None
    change_id: str | None = None
    label: str | None = None
    deployment_id: int | None = None  # the record it belonged to before this fold


@dataclass(slots=True)
class Folded:
    """One deployment record as the events make it."""

    invoke_id: str
    status: str
    first_at: int
    last_at: int
    started_at: int | None
    finished_at: int | None
    scm_sha: str | None
    actor: str | None
    change_id: str | None
    label: str | None
    event_count: int
    seqs: list[int] = field(default_factory=list)
    previous_ids: list[int | None] = field(default_factory=list)


def new_record(event: FoldEvent) -> Folded:
    at, status = event.occurred_at, event.status
    return Folded(invoke_id=event.invoke_id, status=status, first_at=at, last_at=at,
                  started_at=at if status == "started" else None, finished_at=at if status in TERMINAL else None,
                  scm_sha=event.scm_sha, actor=event.actor, change_id=event.change_id, label=event.label,
                  event_count=1, seqs=[event.seq], previous_ids=[event.deployment_id])


def fold_into(record: Folded, event: FoldEvent) -> None:
    """Add one event to a deployment record (the same step for ingestion and for a refold)."""
    at, status = event.occurred_at, event.status
    record.status = fold_status(record.status, record.finished_at, status, at)
    record.first_at, record.last_at = min(at, record.first_at), max(at, record.last_at)
    if status == "started":
        record.started_at = at if record.started_at is None else min(at, record.started_at)
    if status in TERMINAL:
        record.finished_at = at if record.finished_at is None else max(at, record.finished_at)
    record.scm_sha = event.scm_sha if event.scm_sha is not None else record.scm_sha
    record.actor = record.actor if record.actor is not None else event.actor
    record.change_id = record.change_id if record.change_id is not None else event.change_id
    record.label = combine_labels(record.label, event.label)
    record.event_count += 1
    record.seqs.append(event.seq)
    record.previous_ids.append(event.deployment_id)


_TIME_ORDER = attrgetter("occurred_at", "seq")  # ties by arrival


def fold(events: Iterable[FoldEvent]) -> list[Folded]:
    """The deployment records of one product/environment/version, from its events in any order.

    Events are taken in `occurred_at` order (ties by arrival); events sharing an invoke id form one
    deployment; the others form runs split by `starts_new_run`.
    """
    records: list[Folded] = []
    by_invoke: dict[str, Folded] = {}
    run: Folded | None = None
    for event in sorted(events, key=_TIME_ORDER):
        if event.invoke_id:
            record = by_invoke.get(event.invoke_id)
            if record is None:
                records.append(by_invoke.setdefault(event.invoke_id, new_record(event)))
            else:
                fold_into(record, event)
        elif run is None or starts_new_run(run.status, event.status):
            run = new_record(event)
            records.append(run)
        else:
            fold_into(run, event)
    return records


def keep_ids(records: Sequence[Folded], taken: set[int]) -> list[int | None]:
    """Record ids to keep: each record keeps the id its earliest-arrived event had, unless an earlier
    record (by first arrival) took it or it is in `taken`; None means a fresh id."""
    if all(old is None for record in records for old in record.previous_ids):  # new records (a first build)
        return [None] * len(records)
    kept: dict[int, int] = {}
    for index in sorted(range(len(records)), key=lambda i: min(records[i].seqs)):
        record = records[index]
        old = record.previous_ids[record.seqs.index(min(record.seqs))]
        if old is not None and old not in taken:
            taken.add(old)
            kept[index] = old
    return [kept.get(i) for i in range(len(records))]


# -- per product/environment: rollbacks and recovery -------------------------------------------


@dataclass(slots=True)
class Outcome:
    """A finished deployment of one product/environment, as the facts need it."""

    id: int
    version: str | None
    status: str
    finished_at: int
    label: str | None


@dataclass(slots=True)
class OutcomeFacts:
    """What the history of its product/environment says about one finished deployment."""

    is_rollback: bool = False
    rollback_of: int | None = None
    rolled_back_by: int | None = None
    rolled_back_at: int | None = None
    recovered_at: int | None = None  # a failed deployment: when the next one completed


def effective_label(label: str | None, is_rollback: bool) -> str | None:
    """A deployment's label once its history is known: an inferred rollback is a rollback."""
    return combine_labels("rollback" if is_rollback else None, label)


def outcome_order(o: Outcome) -> tuple[int, int]:
    return o.finished_at, o.id


def outcome_facts(outcomes: Iterable[Outcome], previous: Outcome | None = None,
                  seen_versions: Iterable[str] = ()) -> dict[int, OutcomeFacts]:
    """Rollbacks and recovery over the history of one product/environment: all of it, or the part
    from some time on given the completed deployment just before (`previous`) and the versions
    completed before it (`seen_versions`).

    A completed deployment is a rollback when any of its events marks it so, or when it brings back a
    version completed there before that is not the one running; it rolls back the completed
    deployment just before it. A failed deployment is recovered by the next completed one.
    """
    out: dict[int, OutcomeFacts] = {}
    seen_versions = set(seen_versions)
    waiting: list[int] = []  # failed deployments not yet recovered
    for o in sorted(outcomes, key=outcome_order):
        facts = out[o.id] = OutcomeFacts()
        if o.status == "failed":
            waiting.append(o.id)
        if o.status != "completed":
            continue
        for failed in waiting:
            out[failed].recovered_at = o.finished_at
        waiting.clear()
        returns = (o.version is not None and previous is not None and previous.version != o.version
                   and o.version in seen_versions)
        if o.label == "rollback" or returns:
            facts.is_rollback = True
            if previous is not None:
                facts.rollback_of = previous.id
                if previous.id in out:
                    out[previous.id].rolled_back_by = o.id
                    out[previous.id].rolled_back_at = o.finished_at
        if o.version is not None:
            seen_versions.add(o.version)
        previous = o
    return out


def failure_known_at(rolled_back_at: int | None, incident_opened: Iterable[int]) -> int | None:
    """When a completed deployment became a failure: rolled back, or a linked incident opened."""
    times = [t for t in (rolled_back_at, *incident_opened) if t is not None]
    return min(times) if times else None


# -- changes, for lead time ---------------------------------------------------------------------

SOURCES = ("commit", "event", "build")  # what a lead time is measured from, in order of preference


@dataclass(frozen=True, slots=True)
class ChangeRef:
    """One change a deployment shipped: a commit SHA (with its repository when known), or the version
    itself when no SHA is known; `commit_time` is a time sent with the deployment."""

    change: str
    sha: str | None
    repository: str
    commit_time: int | None


def change_refs(version: str | None, sha: str | None, listed: Iterable[tuple[str, str, int | None]],
                event_commit_time: int | None) -> list[ChangeRef]:
    """The changes of one deployment: its SHA (sent with it, else its version's SHA from a build),
    else its version; plus commits listed in its events' metadata. One ref per change."""
    refs: dict[str, ChangeRef] = {}
    if sha:
        refs[sha] = ChangeRef(sha, sha, "", event_commit_time)
    elif version is not None:
        refs["#" + version] = ChangeRef("#" + version, None, "", event_commit_time)
    for item_sha, repository, at in listed:
        known = refs.get(item_sha)
        if known is None or (known.commit_time is None and at is not None):
            refs[item_sha] = ChangeRef(item_sha, item_sha, repository, at)
    return list(refs.values())


def listed_commits(metadata: Any, parse_time: Any) -> list[tuple[str, str, int | None]]:
    """(sha, repository, commit time or None) of each well-formed item of metadata['commits']."""
    meta = orjson.loads(metadata) if isinstance(metadata, str) else metadata
    items = meta.get("commits") if isinstance(meta, dict) else None
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("sha"), str) or not item["sha"].strip():
            continue
        repository = item.get("repository")
        out.append((item["sha"].strip()[:128], repository.strip()[:512] if isinstance(repository, str) else "",
                    parse_time(item.get("committed_at", item.get("timestamp")))))
    return out


def lead_start(commit_at: int | None, event_commit_at: int | None, build_at: int | None
               ) -> tuple[int, int] | None:
    """(start time, source index) a lead time is measured from: a recorded commit, else a commit time
    sent with the deployment, else the first build; None when nothing is known."""
    for source, at in enumerate((commit_at, event_commit_at, build_at)):
        if at is not None:
            return at, source
    return None


# -- incidents ----------------------------------------------------------------------------------

LINK_RULES = ("deployment_id", "change_id", "last_deployment")
LINK_EXPLANATIONS = {
    "deployment_id": "linked to the deployment named when the incident was recorded",
    "change_id": "linked to the completed deployment with the same change id in the incident's product and "
                 "environment (the latest before it opened, else the first after)",
    "last_deployment": "no explicit link: linked to the last completed deployment of the product in the "
                       "incident's environment (production when it names none) before the incident opened",
}


# -- bands (DORA 2023 report, as Apache DevLake encodes them) -----------------------------------

BANDS_SOURCE = "DORA 2023 report, as Apache DevLake encodes it"


def frequency_band(deploy_days: int, window_days: int) -> str:
    """Deploy days >= 5 a week elite, >= 1 a week high, >= 1 a month medium, else low."""
    if deploy_days * 7 >= 5 * window_days:
        return "elite"
    if deploy_days * 7 >= window_days:
        return "high"
    if deploy_days * 30 >= window_days:
        return "medium"
    return "low"


def lead_time_band(us: float) -> str:
    return "elite" if us < DAY else "high" if us < 7 * DAY else "medium" if us < 30 * DAY else "low"


def failure_rate_band(rate: float) -> str:
    return "elite" if rate <= 0.05 else "high" if rate <= 0.10 else "medium" if rate <= 0.15 else "low"


def restore_band(us: float) -> str:
    return "elite" if us < HOUR else "high" if us < DAY else "medium" if us < 7 * DAY else "low"
