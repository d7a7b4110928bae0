"""No-deploy windows: one-time, daily, weekly or monthly, in a time zone (zoneinfo).

A window is written in wall-clock time of its zone and turned into UTC instants per occurrence,
so "Fri 17:00 to Mon 08:00 Europe/Berlin" follows the zone's daylight-saving changes. A wall time
that does not exist (skipped by a spring-forward) is read with the offset before the change, so it
falls an hour later on the clock; a wall time that happens twice (fall-back) is its first instance.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deploytrack.errors import BadRequest
from deploytrack.timeutil import CALENDAR_US, to_iso

RECURRENCES = ("once", "daily", "weekly", "monthly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS = tuple(calendar.day_name[i].lower() for i in range(7))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    """A no-deploy window as the admin wrote it (validated by `parse_window`)."""

    recurrence: str
    timezone: str
    start: str
    end: str

    def as_json(self) -> dict[str, str]:
        return {"recurrence": self.recurrence, "timezone": self.timezone, "start": self.start, "end": self.end}

    def describe(self) -> str:
        """e.g. 'weekly, fri 17:00 to mon 08:00 (Europe/Berlin)'."""
        return f"{self.recurrence}, {self.start} to {self.end} ({self.timezone})"


def parse_window(value: object, field: str = "schedule", stored: bool = False) -> Window:
    """Validate a window object {recurrence, timezone?, start, end}; a 400 names the bad field.

    `stored`: a definition read back from the database, which skips the check that a one-time
    window's instants fit the calendar in UTC (a rule stored before it must still show and delete).
    """
    if not isinstance(value, dict):
        raise BadRequest(f"Field '{field}' must be an object with recurrence, start and end", field)
    unknown = sorted(set(value) - {"recurrence", "timezone", "start", "end"})
    if unknown:
        raise BadRequest(f"Field '{field}.{unknown[0]}' is not a schedule field", f"{field}.{unknown[0]}")
    recurrence = value.get("recurrence")
    if recurrence == "one-time":
        recurrence = "once"
    if recurrence not in RECURRENCES:
        raise BadRequest(f"Field '{field}.recurrence' must be one of once (or one-time), daily, weekly, monthly",
                         f"{field}.recurrence")
    zone = value.get("timezone") or "UTC"
    if not isinstance(zone, str) or len(zone) > 64:
        raise BadRequest(f"Field '{field}.timezone' must be an IANA time zone name such as Europe/Berlin",
                         f"{field}.timezone")
    _zone(zone, f"{field}.timezone")
    texts = []
    for key in ("start", "end"):
        text = value.get(key)
        if not isinstance(text, str) or not text.strip() or len(text) > 64:
            raise BadRequest(f"Field '{field}.{key}' is required: {_FORMATS[recurrence]}", f"{field}.{key}")
        _point(recurrence, text.strip(), f"{field}.{key}")
        texts.append(" ".join(text.strip().lower().split()) if recurrence != "once" else text.strip())
    window = Window(recurrence, zone, texts[0], texts[1])
    if recurrence == "once":
        instants = _once(window)
        for key, us in zip(("start", "end"), instants, strict=True):
            if not stored and not CALENDAR_US[0] <= us <= CALENDAR_US[1]:
                raise BadRequest(f"Field '{field}.{key}' is {to_iso(us)} in UTC, outside the years 0001 to 9999",
                                 f"{field}.{key}")
        if instants[1] <= instants[0]:
            raise BadRequest(f"Field '{field}.end' must be after '{field}.start'", f"{field}.end")
    if recurrence != "once" and _point(recurrence, texts[0], "") == _point(recurrence, texts[1], ""):
        raise BadRequest(f"Field '{field}.end' must differ from '{field}.start'", f"{field}.end")
    return window


_FORMATS = {
    "once": "a local date and time such as 2026-12-24T00:00 (or with an offset)",
    "daily": "a time of day such as 17:00",
    "weekly": "a weekday and time such as 'fri 17:00'",
    "monthly": "a day of the month and time such as '1 00:00' (days past a month's end mean its last day)",
}


def _zone(name: str, field: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"Field '{field}' is not a known time zone: {name[:64]!r}", field) from None


def _clock(text: str, field: str) -> time:
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isascii() and hours.isdigit() and minutes.isascii() and minutes.isdigit()
            and len(minutes) == 2 and int(hours) < 24 and int(minutes) < 60):
        raise BadRequest(f"Field '{field}' has no valid HH:MM time of day", field)
    return time(int(hours), int(minutes))


def _point(recurrence: str, text: str, field: str) -> tuple[int, time] | datetime:
    """The parsed start or end: (day index, time of day), or a datetime for a one-time window."""
    if recurrence == "once":
        try:
            return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("z", "Z")) else text)
        except ValueError:
            raise BadRequest(f"Field '{field}' must be {_FORMATS['once']}", field) from None
    if recurrence == "daily":
        return 0, _clock(text, field)
    day, _, clock = text.lower().partition(" ")
    if recurrence == "weekly":
        if day in WEEKDAYS:
            return WEEKDAYS.index(day), _clock(clock.strip(), field)
        if day in _FULL_WEEKDAYS:
            return _FULL_WEEKDAYS.index(day), _clock(clock.strip(), field)
        raise BadRequest(f"Field '{field}' must be {_FORMATS['weekly']}", field)
    if not (day.isascii() and day.isdigit() and 1 <= int(day) <= 31):
        raise BadRequest(f"Field '{field}' must be {_FORMATS['monthly']}", field)
    return int(day), _clock(clock.strip(), field)


def _once(window: Window) -> tuple[int, int]:
    zone = ZoneInfo(window.timezone)
    start, end = (_point("once", t, "") for t in (window.start, window.end))
    assert isinstance(start, datetime) and isinstance(end, datetime)
    return _utc_us(start, zone), _utc_us(end, zone)


def _utc_us(local: datetime, zone: ZoneInfo) -> int:
    """Epoch µs of a wall time in `zone` (an aware datetime keeps its own offset)."""
    aware = local if local.tzinfo is not None else local.replace(tzinfo=zone)
    return (aware - _EPOCH) // _US


def _local_date(now_us: int, zone: ZoneInfo) -> date:
    return (_EPOCH + timedelta(microseconds=now_us)).astimezone(zone).date()


def _shift_month(year: int, month: int, by: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + by
    return index // 12, index % 12 + 1


def _day_in(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def occurrences(window: Window, now_us: int) -> list[tuple[int, int]]:
    """The window's occurrences around `now_us` (the previous, current and next period), as UTC µs."""
    if window.recurrence == "once":
        return [_once(window)]
    zone = ZoneInfo(window.timezone)
    start_point, end_point = (_point(window.recurrence, t, "") for t in (window.start, window.end))
    assert isinstance(start_point, tuple) and isinstance(end_point, tuple)
    (start_day, start_clock), (end_day, end_clock) = start_point, end_point
    today = _local_date(now_us, zone)
    spans: list[tuple[datetime, datetime]] = []
    if window.recurrence == "daily":
        for offset in (-1, 0, 1):
            day = today + timedelta(days=offset)
            end_date = day if end_clock > start_clock else day + timedelta(days=1)
            spans.append((datetime.combine(day, start_clock), datetime.combine(end_date, end_clock)))
    elif window.recurrence == "weekly":
        base = today - timedelta(days=(today.weekday() - start_day) % 7)
        length = (end_day - start_day) % 7
        if length == 0 and end_clock <= start_clock:
            length = 7
        for offset in (-7, 0, 7):
            day = base + timedelta(days=offset)
            spans.append((datetime.combine(day, start_clock),
                          datetime.combine(day + timedelta(days=length), end_clock)))
    else:
        same_month = (end_day, end_clock) > (start_day, start_clock)
        for offset in (-1, 0, 1):
            year, month = _shift_month(today.year, today.month, offset)
            end_year, end_month = (year, month) if same_month else _shift_month(year, month, 1)
            start = datetime.combine(_day_in(year, month, start_day), start_clock)
            end = datetime.combine(_day_in(end_year, end_month, end_day), end_clock)
            if end > start:  # e.g. 30th to 31st collapses to one instant in February: no window that month
                spans.append((start, end))
    return [(_utc_us(s, zone), _utc_us(e, zone)) for s, e in spans]


def active(window: Window, now_us: int) -> tuple[int, int] | None:
    """The occurrence (start, end in UTC µs) that contains `now_us`, if any."""
    current = [(s, e) for s, e in occurrences(window, now_us) if s <= now_us < e]
    return max(current, key=lambda span: span[1]) if current else None


def state(window: Window, now_us: int) -> tuple[tuple[int, int] | None, int | None]:
    """(the occurrence active at `now_us` or None, the instant this answer may change: the active
    occurrence's end, else the next start; None when it never changes again)."""
    spans = occurrences(window, now_us)
    current = [(s, e) for s, e in spans if s <= now_us < e]
    if current:
        span = max(current, key=lambda c: c[1])
        return span, span[1]
    later = [s for s, _ in spans if s > now_us]
    return None, min(later) if later else None


def next_start(window: Window, now_us: int) -> tuple[int, int] | None:
    """The next occurrence that starts after `now_us`, if any (a past one-time window has none)."""
    later = [(s, e) for s, e in occurrences(window, now_us) if s > now_us]
    return min(later) if later else None


def local_iso(us: int, zone_name: str) -> str:
    """An instant as ISO 8601 in the window's zone, with its offset (e.g. 2026-03-27T17:00:00+01:00)."""
    return (_EPOCH + timedelta(microseconds=us)).astimezone(ZoneInfo(zone_name)).isoformat(timespec="seconds")
