"""The pure parts of the Prometheus integration: its config, the file_sd targets, Flagger's queries and
Prometheus's histogram_quantile, without starting anything."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from meshlib.local.metricsquery import count_query, histogram_quantile, latency_query, success_rate_query
from meshlib.local.prometheus import (
    INSTALL_HINT,
    PrometheusUnavailable,
    PromQLError,
    ScrapeTarget,
    duration,
    label_name,
    prometheus_config,
    render_config,
    scraped_at,
    stored_scrapes,
    stored_up_query,
    target_groups,
    target_key,
)


def test_config_scrapes_envoy_stats_of_the_file_sd_targets_at_the_interval():
    config = prometheus_config("/tmp/x/targets.json", scrape_interval=1.0)
    assert config["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    [job] = config["scrape_configs"]
    assert job["job_name"] == "kubernetes-pods"
    assert job["metrics_path"] == "/stats/prometheus"
    assert job["scrape_interval"] == "1s" and job["scrape_timeout"] == "1s"
    assert job["file_sd_configs"] == [{"files": ["/tmp/x/targets.json"], "refresh_interval": "5s"}]
    assert "static_configs" not in job


def test_rendered_config_is_yaml_of_the_same():
    assert yaml.safe_load(render_config("t.json", 0.5)) == prometheus_config("t.json", 0.5)


@pytest.mark.parametrize(("seconds", "text"), [(1, "1s"), (1.0, "1s"), (0.5, "500ms"), (60, "60s"), (2.25, "2250ms"),
                                                (0.001, "1ms")])
def test_durations(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, -1, 0.0001])
def test_durations_must_be_positive(seconds):
    with pytest.raises(ValueError, match="positive"):
        duration(seconds)


def test_target_groups_carry_pod_scrape_labels_one_group_per_pod():
    targets = [
        ScrapeTarget("127.0.0.1:2000", {"app": "catalog", "version": "v1", "namespace": "istioinaction",
                                        "pod": "catalog-abc-1"}),
        ScrapeTarget("127.0.0.1:1000", {"app.kubernetes.io/name": "web", "pod": "web-x", "namespace": "ns",
                                        "9lives": "yes"}),
    ]
    groups = target_groups(targets)
    assert groups == [
        {"targets": ["127.0.0.1:1000"], "labels": {"_9lives": "yes", "app_kubernetes_io_name": "web",
                                                   "namespace": "ns", "pod": "web-x"}},
        {"targets": ["127.0.0.1:2000"], "labels": {"app": "catalog", "namespace": "istioinaction",
                                                   "pod": "catalog-abc-1", "version": "v1"}},
    ]
    json.dumps(groups)  # the file_sd file is JSON
    assert target_groups([]) == []


@pytest.mark.parametrize(("key", "name"), [("app", "app"), ("app.kubernetes.io/name", "app_kubernetes_io_name"),
                                           ("pod-template-hash", "pod_template_hash"), ("1x", "_1x")])
def test_label_names_as_kubernetes_labelmap_makes_them(key, name):
    assert label_name(key) == name


def test_unavailable_says_how_to_install():
    err = PrometheusUnavailable()
    assert "prometheus" in str(err) and INSTALL_HINT in str(err)
    assert "apt-get install prometheus" in str(PrometheusUnavailable("cannot run PromQL 'up'"))


def test_promql_error_shows_query_and_message():
    err = PromQLError("sum(", "bad_data: parse error")
    assert "sum(" in str(err) and "parse error" in str(err)


def test_go_timestamps():
    assert scraped_at({"lastScrape": "0001-01-01T00:00:00Z"}) == 0
    assert scraped_at({}) == 0
    assert scraped_at({"lastScrape": "2024-01-02T03:04:05.123456789Z"}) == pytest.approx(1704164645.123456)
    assert scraped_at({"lastScrape": "2024-01-02T04:04:05+01:00"}) == pytest.approx(1704164645)


def test_stored_up_query_selects_each_targets_up_series():
    targets = [{"labels": {"job": "kubernetes-pods", "instance": "127.0.0.1:15090"}},
               {"labels": {"job": "kubernetes-pods", "instance": "10.0.0.7:15020"}}]
    up = 'up{job=~"kubernetes\\\\-pods",instance=~"10\\\\.0\\\\.0\\\\.7:15020|127\\\\.0\\\\.0\\\\.1:15090"}'
    assert stored_up_query(targets) == f"timestamp({up}) and on(job, instance) ({up} == 1)"
    answer = [({"job": "kubernetes-pods", "instance": "127.0.0.1:15090"}, 1704164645.5)]
    assert stored_scrapes(answer) == {("kubernetes-pods", "127.0.0.1:15090"): 1704164645.5}
    assert target_key(targets[0]) == ("kubernetes-pods", "127.0.0.1:15090")


# --- Flagger's queries, word for word (istio-semantics.md §7.4) -----------------------------------
def test_success_rate_query_is_flaggers():
    assert success_rate_query("catalog", "istioinaction", "60s") == (
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="istioinaction",'
        'destination_workload=~"catalog",response_code!~"5.*"}[60s])) / '
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="istioinaction",'
        'destination_workload=~"catalog"}[60s])) * 100')


def test_latency_query_is_flaggers():
    assert latency_query("catalog", "istioinaction", "1m") == (
        'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",'
        'destination_workload_namespace="istioinaction",destination_workload=~"catalog"}[1m])) by (le))')
    assert latency_query("c", "n", "30s", q=0.5).startswith("histogram_quantile(0.5, ")


def test_count_query_and_quoting():
    assert count_query({"destination_workload": "catalog"}) == (
        'sum(istio_requests_total{reporter="destination",destination_workload="catalog"})')
    assert count_query({}, reporter=None) == "sum(istio_requests_total)"
    assert count_query({"x": 'a"b\\c'}, reporter="source") == (
        'sum(istio_requests_total{reporter="source",x="a\\"b\\\\c"})')


# --- histogram_quantile as Prometheus computes it -------------------------------------------------
INF = math.inf


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    (0.5, [(1, 0), (5, 10), (10, 10), (INF, 10)], 3.0),          # rank 5 inside (1, 5]: 1 + 4 × 5/10
    (0.99, [(1, 0), (5, 10), (INF, 10)], 4.96),
    (0.5, [(10, 4), (INF, 4)], 5.0),                              # the first bucket starts at 0
    (0.9, [(10, 1), (20, 1), (INF, 10)], 20.0),                   # in +Inf: the highest finite bound
    (0.5, [(0, 3), (INF, 4)], 0.0),                               # first bound ≤ 0 is returned as is
    (0.5, [(5, 2), (5, 2), (INF, 4)], 2.5),                       # equal bounds add up (several series)
    (1.5, [(5, 2), (INF, 2)], INF),
    (-1, [(5, 2), (INF, 2)], -INF),
])
def test_histogram_quantile(q, buckets, expected):
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize("buckets", [[], [(INF, 3)], [(1, 0), (INF, 0)], [(1, 2), (5, 3)]])
def test_histogram_quantile_is_nan_without_observations_or_an_inf_bucket(buckets):
    assert math.isnan(histogram_quantile(0.99, buckets))


def test_histogram_quantile_sums_series_by_le():
    a = [(1, 1), (5, 2), (INF, 2)]
    b = [(1, 0), (5, 2), (INF, 2)]
    assert histogram_quantile(0.5, a + b) == histogram_quantile(0.5, [(1, 1), (5, 4), (INF, 4)])
