"""Timestamps: stored as integer epoch microseconds (UTC), rendered as ISO 8601 at the edges."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from deploytrack.errors import BadRequest

HOUR = 3_600_000_000  # µs
DAY = 86_400_000_000  # µs: the one definition
_MIN_US = 0  # 1970-01-01
_MAX_US = 253402300799_000000  # 9999-12-31T23:59:59
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
# The instants a datetime can hold (years 1 to 9999): what a UTC instant must fit to be written as a date.
CALENDAR_US = ((datetime.min - _EPOCH) // _US, (datetime.max - _EPOCH) // _US)
_CYCLE_US = 146_097 * 86_400_000_000  # 400 Gregorian years: the calendar repeats after them


def now_us() -> int:
    return time.time_ns() // 1000


def to_iso(us: int | None) -> str | None:
    """Render epoch microseconds as ISO 8601 UTC with a Z (seconds unless there are fractions)."""
    if us is None:
        return None
    if CALENDAR_US[0] <= us <= CALENDAR_US[1]:
        dt = _EPOCH + timedelta(microseconds=us)
        return dt.isoformat(timespec="microseconds" if us % 1_000_000 else "seconds") + "Z"
    # Past year 9999 (or before year 1), e.g. a rule stored before windows were checked: render the
    # same day 400-year cycles away and write the year as ISO 8601's expanded form, +010000.
    cycles = (us - CALENDAR_US[0]) // _CYCLE_US
    text = to_iso(us - cycles * _CYCLE_US) or ""
    return f"{int(text[:4]) + 400 * cycles:+07d}{text[4:]}"


def parse_timestamp(value: object, field: str = "timestamp") -> int:
    """Accept ISO 8601 (no offset = UTC), epoch seconds or epoch milliseconds; return epoch µs.

    Numbers below 10^11 are seconds (that is year 5138), larger ones milliseconds, as ilert reads them.
    Only the format and the representable range are checked here: the span of time an event,
    incident or commit may claim is `TimeBounds.check`.
    """
    if isinstance(value, bool) or value is None:
        raise BadRequest(f"Field '{field}' must be an ISO 8601 string or epoch seconds/milliseconds", field)
    # isascii: str.isdigit() also accepts digits such as '²' that float() refuses
    if isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value.strip())
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise BadRequest(f"Field '{field}' is not a finite number", field)
        try:
            us = int(value * 1_000_000) if abs(value) < 1e11 else int(value * 1000)
        except OverflowError:  # e.g. 1e308 milliseconds: far out of range, not a crash
            us = -1
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("z", "Z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"Field '{field}' is not a valid ISO 8601 timestamp: {value[:64]!r}", field) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        try:  # exact to the microsecond: datetime arithmetic, not float seconds
            us = (dt.replace(tzinfo=None) - dt.utcoffset() - _EPOCH) // timedelta(microseconds=1)  # type: ignore[operator]
        except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00
            us = -1
    else:
        raise BadRequest(f"Field '{field}' must be an ISO 8601 string or epoch seconds/milliseconds", field)
    if not _MIN_US <= us <= _MAX_US:
        raise BadRequest(f"Field '{field}' is out of range (before 1970 or after 9999)", field)
    return us


EARLIEST_DEFAULT = "2000-01-01T00:00:00Z"


@dataclass(frozen=True)
class TimeBounds:
    """The span of time a recorded event, incident or commit may claim (settings
    `earliest_timestamp` and `max_future_seconds`): a 1970 timestamp is a client bug, not a backfill,
    and would send the metrics job recomputing decades of empty days."""

    earliest_us: int = parse_timestamp(EARLIEST_DEFAULT)
    max_future_us: int = DAY  # clock skew between a CI runner and this server

    def check(self, us: int, field: str) -> int:
        """`us` if it lies within the bounds; else a BadRequest naming `field`."""
        if us < self.earliest_us:
            raise BadRequest(f"Field '{field}' is before {to_iso(self.earliest_us)}, the earliest time accepted", field)
        if us > now_us() + self.max_future_us:
            raise BadRequest(f"Field '{field}' is more than {_span(self.max_future_us)} in the future", field)
        return us


def _span(us: int) -> str:
    """A duration in the largest unit that divides it: '1 day', '36 hours', '90 seconds'."""
    seconds = us // 1_000_000
    unit, size = next((u, n) for u, n in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))
                      if seconds % n == 0)
    count = seconds // size
    return f"{count} {unit}{'' if count == 1 else 's'}"


def day_start_us(us: int) -> int:
    """Start of the UTC day that contains `us`."""
    return us - us % DAY
