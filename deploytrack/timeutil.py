"""Timestamps: stored as integer epoch microseconds (UTC), rendered as ISO 8601 at the edges."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from deploytrack.errors import BadRequest

HOUR = 3_600_000_000  # µs
DAY = 86_400_000_000  # µs: the one definition
_MIN_US = 0  # 1970-01-01
_MAX_US = 253402300799_000000  # 9999-12-31T23:59:59
FUTURE_SLACK_US = DAY  # a day of clock skew
_EPOCH = datetime(1970, 1, 1)


def now_us() -> int:
    return time.time_ns() // 1000


def to_iso(us: int | None) -> str | None:
    """Render epoch microseconds as ISO 8601 UTC with a Z (seconds unless there are fractions)."""
    if us is None:
        return None
    dt = _EPOCH + timedelta(microseconds=us)
    return dt.isoformat(timespec="microseconds" if us % 1_000_000 else "seconds") + "Z"


def parse_timestamp(value: object, field: str = "timestamp") -> int:
    """Accept ISO 8601 (no offset = UTC), epoch seconds or epoch milliseconds; return epoch µs.

    Numbers below 10^11 are seconds (that is year 5138), larger ones milliseconds, as ilert reads them.
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
            dt = dt.replace(tzinfo=timezone.utc)
        try:  # exact to the microsecond: datetime arithmetic, not float seconds
            us = (dt.replace(tzinfo=None) - dt.utcoffset() - _EPOCH) // timedelta(microseconds=1)  # type: ignore[operator]
        except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00
            us = -1
    else:
        raise BadRequest(f"Field '{field}' must be an ISO 8601 string or epoch seconds/milliseconds", field)
    if not _MIN_US <= us <= _MAX_US:
        raise BadRequest(f"Field '{field}' is out of range (before 1970 or after 9999)", field)
    if us > now_us() + FUTURE_SLACK_US:
        raise BadRequest(f"Field '{field}' is more than a day in the future", field)
    return us


def day_start_us(us: int) -> int:
    """Start of the UTC day that contains `us`."""
    return us - us % 86_400_000_000
