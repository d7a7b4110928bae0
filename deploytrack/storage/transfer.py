"""Moving events out of and into a database: export as JSON Lines or CSV, import JSON Lines.

Export writes every column of every event, in arrival order (`seq`), times as ISO 8601 UTC
with microseconds kept; in JSON Lines, the commits and incidents follow (transfer_records.py).
Import is the backfill path: it takes that format (or hand-written lines with just `kind`,
`product` and a few fields), keeps each event's id and times, and builds products, environments,
versions and deployments with the same store functions ingestion uses (`seq` and `deployment_id`
belong to the exporting database and are assigned anew; `token_id` is left empty, as tokens are
not carried over). Re-importing a file stores nothing new: an event whose id (or client key) is
already stored is skipped; a line without an id gets a client key from its content.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from deploytrack.errors import BadRequest, DeploytrackError
from deploytrack.model import (
    KINDS,
    MAX_KEY_BYTES,
    Event,
    Fields,
    Limits,
    check_links,
    check_metadata,
    new_event_id,
    normalize_status,
)
from deploytrack.settings import Settings
from deploytrack.storage import commits, transfer_records
from deploytrack.storage import ingest as store
from deploytrack.storage.database import Connection, transaction
from deploytrack.timeutil import now_us, to_iso

COLUMNS = store.EVENT_COLUMNS
TIME_COLUMNS = ("occurred_at", "received_at", "commit_time")
JSON_COLUMNS = ("links", "metadata")
IMPORT_BATCH = 500  # events per transaction: a running server's writer never waits long
MAX_LINE_BYTES = 1_048_576
FORMULA_STARTS = frozenset("=+-@\t\r")


class TransferError(RuntimeError):
    pass


# -- export --------------------------------------------------------------------------------


def event_rows(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every event, every column, oldest arrival first; times ISO 8601, links/metadata decoded."""
    cursor = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq")
    for row in cursor:
        out = dict(zip(COLUMNS, row, strict=True))
        for column in TIME_COLUMNS:
            out[column] = to_iso(out[column])
        for column in JSON_COLUMNS:
            out[column] = orjson.loads(out[column]) if out[column] else None
        yield out


def export_rows(conn: Connection) -> Iterator[dict[str, Any]]:
    """What a JSON Lines export holds: every event, then every commit, then every incident, read on one
    snapshot (a read transaction on either backend), so writes landing mid-export appear in none of them."""
    conn.begin_read()
    try:
        yield from event_rows(conn)
        yield from transfer_records.commit_rows(conn)
        yield from transfer_records.incident_rows(conn)
    finally:
        conn.rollback()


def write_jsonl(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(orjson.dumps(row).decode())
        out.write("\n")
        count += 1
    return count


def write_csv(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    """One header line, then one line per event; links and metadata as JSON text, NULL as empty,
    client text that a spreadsheet would run as a formula neutralised (csv_cell)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(["" if row[c] is None else orjson.dumps(row[c]).decode() if c in JSON_COLUMNS
                         else csv_cell(row[c]) for c in COLUMNS])
        count += 1
    return count


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would read as a formula (=, +, -, @, tab, CR first) gets a leading
    apostrophe (OWASP's CSV injection advice): the cell then shows as the text it is."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


# -- import --------------------------------------------------------------------------------


@dataclass
class ImportLine:
    number: int
    event: Event
    event_id: str
    received_at: int


@dataclass
class ImportResult:
    stored: int = 0  # events
    skipped: int = 0  # events and incidents already stored
    commits: int = 0
    incidents: int = 0


def parse_line(data: object, number: int, limits: Limits, now: int) -> ImportLine:
    """One line of an import file as an event; raises TransferError naming the line and field."""
    try:
        return _parse(data, number, limits, now)
    except DeploytrackError as exc:
        raise TransferError(f"line {number}: {exc.message}") from None


def _parse(data: object, number: int, limits: Limits, now: int) -> ImportLine:
    if not isinstance(data, dict):
        raise BadRequest("each line must be a JSON object (one event)")
    f = Fields(data, limits)
    unknown = sorted(set(f.body) - set(COLUMNS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; the fields are those `deploytrack export` writes",
                         unknown[0])
    kind = f.str("kind", required=True)
    if kind not in KINDS:
        raise BadRequest(f"Field 'kind' must be one of {', '.join(KINDS)}", "kind")
    status_value = f.raw("status")
    status, raw = normalize_status("completed" if status_value is None else status_value)
    # An exported line carries status_raw (maybe null); a hand-written one keeps the status it gives.
    status_raw = f.str("status_raw") if "status_raw" in f.body else raw if status_value is not None else None
    times = {c: f.time(c) for c in TIME_COLUMNS}
    received = times["received_at"] if times["received_at"] is not None else now
    links = f.raw("links")
    metadata = f.raw("metadata")
    try:
        links = orjson.loads(links) if isinstance(links, str) else links
        metadata = orjson.loads(metadata) if isinstance(metadata, str) else metadata
    except orjson.JSONDecodeError:
        raise BadRequest("Fields 'links' and 'metadata' must be JSON", "metadata") from None
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest("Field 'metadata' must be a JSON object", "metadata")
    event = Event(
        dialect=f.str("dialect") or "import", kind=kind, product=f.name("product", required=True) or "",
        status=status, status_raw=status_raw,
        version=f.name("version", allow_number=True),
        environment_raw=f.name("environment_raw") or f.name("environment"),
        occurred_at=times["occurred_at"] if times["occurred_at"] is not None else received,
        scm_sha=f.name("scm_sha"), scm_branch=f.str("scm_branch"), scm_repository=f.str("scm_repository"),
        commit_time=times["commit_time"], build_url=f.str("build_url"),
        build_number=f.str("build_number", allow_number=True), build_id=f.name("build_id", allow_number=True),
        source_system=f.str("source_system"), invoke_id=f.name("invoke_id", allow_number=True),
        actor=f.str("actor"), summary=f.str("summary", max_chars=limits.max_summary_chars),
        change_id=f.name("change_id"), links=check_links(links, limits),
        metadata=check_metadata(metadata or {}, limits), client_key=f.name("client_key", max_bytes=MAX_KEY_BYTES),
    )
    event_id = f.str("id", max_chars=64)
    if event_id is not None and not _EVENT_ID.fullmatch(event_id):
        raise BadRequest("Field 'id' may hold only letters, digits and . _ ~ : @ - (it is a path of the API and "
                         "the pages: /events/{id})", "id")
    if event_id is None and event.client_key is None:
        # A hand-written backfill line: the same line imported twice must be stored once.
        event.client_key = "import:" + hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return ImportLine(number, event, event_id or new_event_id(), received)


_EVENT_ID = re.compile(r"[A-Za-z0-9._~:@-]+")  # (what a URL path segment holds as it is)
Line = ImportLine | transfer_records.Record


def read_lines(path: Path, limits: Limits, aliases: Mapping[str, str], now: int) -> Iterator[Line]:
    """The file's events, commits and incidents in order; blank lines are allowed, anything else is an error."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise TransferError(f"line {number}: longer than {MAX_LINE_BYTES} bytes")
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise TransferError(f"line {number}: not valid JSON ({exc})") from None
            if isinstance(data, dict) and data.get("kind") in transfer_records.KINDS:
                try:
                    yield transfer_records.parse(data, number, limits, aliases, now)
                except DeploytrackError as exc:
                    raise TransferError(f"line {number}: {exc.message}") from None
            else:
                yield parse_line(data, number, limits, now)


def import_file(conn: Connection, path: Path, settings: Settings, limits: Limits) -> ImportResult:
    """Check the whole file first (nothing is written if a line is bad), then store it in batches:
    events and commits in file order, then the incidents (their links need the deployments).

    A conflict found while storing (a version already recorded with another SHA) stops the
    import at that line; the batches before it stay stored, and re-running after fixing the
    line skips them.
    """
    now = now_us()
    aliases = settings.environment_aliases
    for _ in read_lines(path, limits, aliases, now):
        pass
    result = ImportResult()
    batch: list[Line] = []
    for line in read_lines(path, limits, aliases, now):
        if isinstance(line, transfer_records.Record) and line.kind == "incident":
            continue
        batch.append(line)
        if len(batch) >= IMPORT_BATCH:
            _store(conn, batch, aliases, result, now)
            batch = []
    if batch:
        _store(conn, batch, aliases, result, now)
    incidents = [line for line in read_lines(path, limits, aliases, now)
                 if isinstance(line, transfer_records.Record) and line.kind == "incident"]
    for start in range(0, len(incidents), IMPORT_BATCH):
        with transaction(conn):
            for record in incidents[start:start + IMPORT_BATCH]:
                try:
                    stored = transfer_records.store_incident(conn, record, settings, now)
                except DeploytrackError as exc:
                    raise TransferError(f"line {record.number}: {exc.message}; the events and commits are "
                                        f"stored, and the incidents of earlier batches of {IMPORT_BATCH}; "
                                        "re-running the import after fixing the line skips them") from None
                result.incidents += stored
                result.skipped += not stored
    return result


def _store(conn: Connection, batch: list[Line], aliases: Mapping[str, str], result: ImportResult,
           now: int) -> None:
    stored = events = 0
    with transaction(conn):
        given = [line.row for line in batch if isinstance(line, transfer_records.Record) and line.row is not None]
        rows = commits.changed(conn, given)  # re-importing leaves the others, and their days, alone
        if rows:
            commits.store(conn, rows, now)
        for line in batch:
            if not isinstance(line, ImportLine):
                continue
            events += 1
            try:
                row = store.import_event(conn, line.event, line.event_id, line.received_at, aliases)
            except DeploytrackError as exc:
                raise TransferError(
                    f"line {line.number}: {exc.message}; {result.stored} events before this batch are stored, "
                    "re-running the import after fixing the line skips them") from None
            stored += row is not None
    result.stored += stored
    result.skipped += events - stored + len(given) - len(rows)
    result.commits += len(rows)
