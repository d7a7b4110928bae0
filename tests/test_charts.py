"""The server-rendered SVG charts: gaps, thresholds, empty series, escaped text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from deploytrack.views.charts import timeline, trend

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
    assert svg.get("aria-label") == "Lead time: latest 6.0, 6 of 7 days with data"


def test_trend_draws_only_thresholds_inside_the_scale():
    points = [(0, 0.02), (DAY, 0.08)]
    svg = parse(trend(points, title="CFR", fmt=fmt, thresholds=[(0.05, "5%"), (0.10, "10%"), (0.5, "50%")]))
    labels = [t.text for t in svg.findall(f"{SVG}text") if t.get("class") == "tlabel"]
    assert labels == ["5%"]


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
