"""No-deploy windows at fixed instants: time zones and daylight-saving edges.

The server judges windows at the time a request arrives, so fixed instants (a DST weekend) are
checked on the window functions the server uses; test_rules.py covers the same windows over HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deploytrack.errors import BadRequest
from deploytrack.rules.schedule import active, next_start, parse_window


def us(text: str) -> int:
    """Epoch µs of an ISO 8601 instant with an offset."""
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000


def window(recurrence: str, start: str, end: str, zone: str = "UTC") -> object:
    return parse_window({"recurrence": recurrence, "start": start, "end": end, "timezone": zone})


def test_weekly_window_across_the_spring_forward_weekend_keeps_wall_clock_times() -> None:
    # Europe/Berlin moves from CET (+01) to CEST (+02) on Sunday 2026-03-29.
    w = window("weekly", "fri 17:00", "mon 08:00", "Europe/Berlin")
    span = active(w, us("2026-03-28T12:00:00+00:00"))
    assert span == (us("2026-03-27T16:00:00+00:00"), us("2026-03-30T06:00:00+00:00"))
    assert active(w, us("2026-03-30T05:59:59+00:00")) is not None
    assert active(w, us("2026-03-30T06:00:00+00:00")) is None  # 08:00 CEST, not 08:00 CET
    assert active(w, us("2026-03-27T15:59:59+00:00")) is None
    assert next_start(w, us("2026-03-30T06:00:00+00:00"))[0] == us("2026-04-03T15:00:00+00:00")


def test_weekly_window_on_the_night_clocks_change_lasts_the_real_time_between_its_wall_times() -> None:
    w = window("weekly", "sun 01:00", "sun 04:00", "America/New_York")
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 01:00-04:00 is two real hours
    assert active(w, us("2026-03-08T07:30:00+00:00")) == (us("2026-03-08T06:00:00+00:00"),
                                                           us("2026-03-08T08:00:00+00:00"))
    # 2026-11-01: 02:00 EDT falls back to 01:00 EST, so it is four real hours (01:00 is its first instance)
    assert active(w, us("2026-11-01T08:30:00+00:00")) == (us("2026-11-01T05:00:00+00:00"),
                                                           us("2026-11-01T09:00:00+00:00"))
    # an ordinary week: three hours
    assert active(w, us("2026-03-15T06:00:00+00:00")) == (us("2026-03-15T05:00:00+00:00"),
                                                           us("2026-03-15T08:00:00+00:00"))


def test_a_wall_time_the_spring_forward_skips_falls_an_hour_later() -> None:
    # 02:30 does not exist on 2026-03-08 in New York: read with the offset before the change (EST),
    # it is 07:30 UTC = 03:30 EDT, so a 02:30-03:30 window is empty that day and normal the next week.
    w = window("weekly", "sun 02:30", "sun 03:30", "America/New_York")
    assert active(w, us("2026-03-08T07:30:00+00:00")) is None
    assert active(w, us("2026-03-15T06:45:00+00:00")) == (us("2026-03-15T06:30:00+00:00"),
                                                           us("2026-03-15T07:30:00+00:00"))


def test_daily_window_across_midnight_and_southern_hemisphere_dst() -> None:
    # Australia/Sydney leaves daylight time (+11 -> +10) on Sunday 2026-04-05 at 03:00.
    w = window("daily", "22:00", "06:00", "Australia/Sydney")
    assert active(w, us("2026-04-04T12:00:00+00:00")) == (us("2026-04-04T11:00:00+00:00"),
                                                           us("2026-04-04T20:00:00+00:00"))
    assert active(w, us("2026-04-04T20:00:00+00:00")) is None
    assert active(w, us("2026-04-05T12:30:00+00:00")) == (us("2026-04-05T12:00:00+00:00"),
                                                           us("2026-04-05T20:00:00+00:00"))


def test_monthly_window_clamps_to_the_months_last_day() -> None:
    w = window("monthly", "31 18:00", "1 06:00")
    assert active(w, us("2026-02-28T19:00:00+00:00")) == (us("2026-02-28T18:00:00+00:00"),
                                                           us("2026-03-01T06:00:00+00:00"))
    assert active(w, us("2026-03-31T17:59:00+00:00")) is None
    assert next_start(w, us("2026-03-15T00:00:00+00:00"))[0] == us("2026-03-31T18:00:00+00:00")


def test_one_time_window_with_and_without_an_offset() -> None:
    local = window("one-time", "2026-12-24T00:00", "2026-12-27T00:00", "Europe/Berlin")
    assert active(local, us("2026-12-23T23:30:00+00:00")) == (us("2026-12-23T23:00:00+00:00"),
                                                               us("2026-12-26T23:00:00+00:00"))
    assert next_start(local, us("2026-12-27T00:00:00+00:00")) is None
    offset = window("once", "2026-12-24T00:00-05:00", "2026-12-25T00:00-05:00", "Europe/Berlin")
    assert active(offset, us("2026-12-24T05:00:00+00:00"))[0] == us("2026-12-24T05:00:00+00:00")
    assert datetime.fromtimestamp(active(offset, us("2026-12-24T06:00:00+00:00"))[1] / 1e6, UTC).hour == 5


@pytest.mark.parametrize("spec, field", [
    ({"recurrence": "weekly", "start": "fri 25:00", "end": "mon 08:00"}, "schedule.start"),
    ({"recurrence": "monthly", "start": "0 10:00", "end": "2 10:00"}, "schedule.start"),
    ({"recurrence": "daily", "start": "10:00", "end": "10:00"}, "schedule.end"),
    ({"recurrence": "hourly", "start": "10:00", "end": "11:00"}, "schedule.recurrence"),
    ({"recurrence": "daily", "start": "10:00", "end": "11:00", "every": 2}, "schedule.every"),
])
def test_bad_windows_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_window(spec)
    assert caught.value.field == field
