"""The server-rendered SVG charts: gaps, thresholds, empty series, escaped text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from deploytrack.views.charts import timeline, trend
from deploytrack.views.dora_pages import DURATION_UNITS, span_text

DAY = 86_400_000_000
SVG = "{http://www.w3.org/2000/svg}"


def fmt(value: float) -> str:
    return f"{value:.1f}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))  # well-formed XML, or this raises


def test_trend_breaks_the_line_at_days_without_data():
    points = [(i * DAY, None if i == 3 else float(i)) for i in range(7)]
    svg = parse(trend(points, title="Lead time", fmt=fmt))
    assert len(svg.findall(f"{SVG}polyline")) == 2
    assert len(svg.findall(f"{SVG}circle")) == 6
    assert svg.get("aria-label") == "Lead time: latest 6.0, 6 of 7 days with data, from 1970-01-01 to 1970-01-07"


def test_trend_shades_only_the_bands_inside_the_scale():
    points = [(0, 0.02), (DAY, 0.08)]
    svg = parse(trend(points, title="CFR", fmt=fmt, thresholds=[(0.05, "5%"), (0.10, "10%"), (0.5, "50%")]))
    zones = [r.get("class") for r in svg.findall(f"{SVG}rect") if "zone" in (r.get("class") or "")]
    assert zones == ["zone zone-elite", "zone zone-high"]  # the scale ends at 0.08 rounded up: 0.1
    titles = [r.find(f"{SVG}title").text for r in svg.findall(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert titles == ["elite: below 5%", "high: 5% to 10%"]


def test_trend_y_axis_starts_at_zero_with_round_ticks_and_dated_x_ticks():
    points = [(i * DAY, float(v)) for i, v in enumerate((3, 7, 11, 4))]
    svg = parse(trend(points, title="Deploys", fmt=fmt))
    axis = [t.text for t in svg.findall(f"{SVG}text") if t.get("class") == "axis"]
    assert axis[:4] == ["0.0", "5.0", "10.0", "15.0"]  # y ticks from zero past the peak
    assert axis[4:] == ["1 Jan", "2 Jan", "3 Jan", "4 Jan"]  # x ticks: dated days (epoch day 0 is 1 Jan 1970)


def test_a_duration_axis_counts_in_one_unit_with_round_ticks_and_room_for_its_labels():
    units = DURATION_UNITS  # the DORA page's

    def y_axis(peak_seconds: float) -> list[str]:
        svg = parse(trend([(0, peak_seconds / 2), (DAY, peak_seconds)], title="Lead time", fmt=fmt, units=units))
        texts = [t for t in svg.findall(f"{SVG}text") if t.get("class") == "axis"][:-2]  # (the x ticks last)
        plot_left = float(next(r for r in svg.findall(f"{SVG}rect") if r.get("class") == "plot").get("x"))
        assert all(plot_left - 4 - 8 * len(t.text) >= 0 for t in texts), "a label would be cut at the left"
        return [t.text for t in texts]

    assert y_axis(7920) == ["0 h", "1 h", "2 h", "3 h"]  # 2.2 h: not "0 s, 33 min, 67 min, 1.7 h, 2.2 h"
    assert y_axis(4080) == ["0 min", "20 min", "40 min", "60 min", "80 min"]  # 68 min: told in minutes, as
    assert span_text(4080) == "68 min"  # the headline tells it
    assert y_axis(3600) == ["0 min", "20 min", "40 min", "60 min"]
    assert y_axis(86400) == ["0 h", "10 h", "20 h", "30 h"] and span_text(86400) == "24.0 h"
    assert y_axis(45) == ["0 s", "20 s", "40 s", "60 s"]
    assert y_axis(1e-6) == y_axis(0.4) == ["0 s", "0.25 s", "0.5 s", "0.75 s", "1 s"]  # a second at least
    assert y_axis(9 * 86400) == ["0 d", "2.5 d", "5 d", "7.5 d", "10 d"] and span_text(9 * 86400) == "9.0 days"
    assert y_axis(3650 * 86400) == ["0 d", "1000 d", "2000 d", "3000 d", "4000 d"]


def test_trend_ends_with_todays_live_value_and_titles_every_point():
    points = [(0, 1.0), (DAY, 2.0)]
    svg = parse(trend(points, title="Lead time", fmt=fmt, live=(2 * DAY, 5.0)))
    titles = [c.find(f"{SVG}title").text for c in svg.findall(f"{SVG}circle")]
    assert titles == ["1970-01-01: 1.0", "1970-01-02: 2.0", "1970-01-03 (today, live): 5.0"]
    assert svg.findall(f"{SVG}circle")[-1].get("class") == "pt live"
    assert svg.get("role") == "img" and svg.get("aria-label").startswith("Lead time: latest 5.0, 3 of 3 days")


def test_trend_without_data_says_so():
    svg = parse(trend([(0, None), (DAY, None)], title="TTR", fmt=fmt))
    assert svg.findall(f"{SVG}polyline") == [] and "no data yet" in ET.tostring(svg, encoding="unicode")


def test_text_is_escaped_and_only_internal_paths_are_linked():
    evil = '<script>alert(1)</script>"'
    svg = timeline([(evil, [(DAY, "failed", evil, "/deployments/1"), (DAY, "completed", "x", "javascript:alert(1)"),
                           (DAY, "completed", "y", "//evil.example/")])], 0, 2 * DAY, title=evil)
    assert "<script>" not in str(svg)
    root = parse(svg)
    links = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert links == ["/deployments/1"]
    assert root.find(f"{SVG}title").text == evil


def test_a_flat_zero_series_is_scaled_to_the_band_edges_and_labelled_truly():
    svg = parse(trend([(0, 0.0), (DAY, 0.0)], title="CFR", fmt=lambda v: f"{v * 100:.0f}%",
                      thresholds=[(0.05, "5%"), (0.15, "15%")]))
    axis = [t.text for t in svg.findall(f"{SVG}text") if t.get("class") == "axis"]
    assert "15%" in axis and "87%" not in axis
