"""The pure parts around the canary runtime: scaled clock and windows, evidence, and the steps' helpers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from meshlib.canary import Canary, render_query
from meshlib.canary.metrics import BUILTIN_QUERIES, SUCCESS_RATE
from meshlib.dsl.canary import items, parse_weights, phase_name, phase_steps, wait_budget, weight_steps
from meshlib.local.canary import (
    ScaledClock,
    default_mark_period,
    default_scrape_interval,
    scale_metric_windows,
    scaled_window,
)
from meshlib.report.canary import history_table, weights_svg

SVG = "{http://www.w3.org/2000/svg}"


def release(**analysis) -> Canary:
    spec = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "catalog"},
            "service": {"port": 80},
            "analysis": {"interval": "45s", "threshold": 5, "maxWeight": 50, "stepWeight": 10, **analysis}}
    return Canary("catalog-release", "istioinaction", spec)


def point(t: float, phase: str, weight: int, failed: int = 0, metrics: dict | None = None) -> dict:
    return {"time": t, "phase": phase, "canaryWeight": weight, "failedChecks": failed, "iterations": 0,
            "primaryWeight": 100 - weight, "routeCanaryWeight": weight, "metrics": metrics or {}}


def test_scaled_windows_are_prometheus_durations_with_a_floor() -> None:
    assert scaled_window("1m", 0.05, 1.5) == "3s"
    assert scaled_window("30s", 0.05, 1.5) == "1500ms"
    assert scaled_window("30s", 0.02, 1.5) == "1500ms"  # 0.6 s is below the floor
    assert scaled_window("5m", 1.0, 3.0) == "300s"


def test_default_scrape_interval_and_marks_follow_the_clock() -> None:
    assert default_scrape_interval(1.0) == 1.0
    assert default_scrape_interval(0.05) == 0.5
    assert default_scrape_interval(0.001) == 0.25
    assert default_mark_period(0.05) == 0.25 and default_mark_period(1.0) == 5.0


def test_metric_windows_are_scaled_before_the_controller_renders_them() -> None:
    canary = release(metrics=[
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
        {"name": "request-duration", "thresholdRange": {"max": 500}},  # Flagger's default 1m
        {"name": "errors", "templateRef": {"name": "errors"}, "interval": "2m"},
        {"name": "inline", "query": "sum(rate(x[{{ interval }}]))", "interval": "1m"},  # rendered: scaled too
    ])
    scaled = scale_metric_windows(canary, 0.05, 1.5)
    assert [m.get("interval") for m in scaled.metrics] == ["3s", "3s", "6s", "3s"]
    assert canary.metrics[0]["interval"] == "1m"  # the original is untouched
    query = render_query(BUILTIN_QUERIES[SUCCESS_RATE], scaled, scaled.metrics[0]["interval"])
    assert query.count("[3s]") == 2 and 'destination_workload=~"catalog"' in query
    assert scaled.interval == 45.0  # the analysis interval stays: the clock is what is scaled


def test_scaled_clock_runs_faster_than_the_wall_clock() -> None:
    clock = ScaledClock(0.05)
    now = clock.now()
    assert 0.0 < clock.real_delay(now + 45) <= 2.25
    assert clock.real_delay(now - 10) == 0.0
    with pytest.raises(ValueError, match="positive"):
        ScaledClock(0)


def test_wait_budget_is_twice_the_whole_scaled_analysis_plus_slack() -> None:
    world = SimpleNamespace(backend=SimpleNamespace(time_scale=0.05))
    # 5 weight steps + 5 failed checks + 6 other ticks, 45 s each, twice, at 0.05; plus 20 s for Prometheus
    assert wait_budget(world, release()) == pytest.approx(2 * 16 * 45 * 0.05 + 20)


def test_phase_names_lists_and_weights_as_written_in_features() -> None:
    assert phase_name("succeeded") == "Succeeded" and phase_name("WaitingPromotion") == "WaitingPromotion"
    with pytest.raises(ValueError, match="not a Flagger phase"):
        phase_name("Done")
    assert items("Initialized, Progressing → Promoting and Succeeded") == ["Initialized", "Progressing",
                                                                          "Promoting", "Succeeded"]
    assert parse_weights("10, 20, 30%, 40 and 50") == [10, 20, 30, 40, 50]
    with pytest.raises(ValueError, match="whole percentages"):
        parse_weights("ten")


def test_weight_and_phase_steps_leave_out_repeats_and_zero() -> None:
    history = [point(0, "Initialized", 0), point(45, "Progressing", 0), point(90, "Progressing", 10),
               point(135, "Progressing", 10, 1), point(180, "Progressing", 20), point(225, "Failed", 0)]
    assert weight_steps(history) == [10, 20]
    assert phase_steps(history) == ["Initialized", "Progressing", "Failed"]


def test_history_table_shows_each_tick_with_its_metric_values() -> None:
    history = [point(100, "Progressing", 10), point(145, "Progressing", 10, 1, {"request-success-rate": 42.5}),
               point(190, "Progressing", 10, 2, {"request-success-rate": None})]
    text = history_table(history)
    lines = text.splitlines()
    assert "request-success-rate" in lines[0] and "failedChecks" in lines[0]
    assert "+45s" in lines[3] and "42.50" in lines[3] and "90/10" in lines[3]
    assert "no values" in lines[4]
    assert history_table([]) == "  (no analysis tick yet)"


def test_weights_chart_is_valid_svg_with_both_weights_phases_metrics_and_failed_checks() -> None:
    history = [point(0, "Initialized", 0), point(45, "Progressing", 10, 0, {"request-success-rate": 100.0}),
               point(90, "Progressing", 10, 1, {"request-success-rate": None}), point(135, "Failed", 0)]
    svg = weights_svg(history, "catalog-release.istioinaction <weights>")
    root = ET.fromstring(svg)  # well-formed (matplotlib's SVG), title escaped, text kept as text
    assert root.tag == f"{SVG}svg"
    texts = " ".join(t.strip() for t in root.itertext() if t.strip())
    assert "catalog-release.istioinaction <weights>" in texts
    for legend in ("canary weight", "primary weight", "failed check", "Initialized", "Progressing", "Failed",
                   "request-success-rate", "no values"):
        assert legend in texts, legend
    assert "href=\"http" not in svg and "@import" not in svg  # nothing to fetch
    empty = ET.fromstring(weights_svg([], "empty"))
    assert "no analysis tick yet" in " ".join(empty.itertext())
