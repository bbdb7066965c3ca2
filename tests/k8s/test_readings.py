"""What the kubernetes backend reads out of what the cluster returns, without a cluster: Flagger's VirtualService
weights and Canary status as history points, Prometheus's targets matched to pods (the label spellings of Istio's
addon, of older charts, and of Kubernetes discovery), and the sidecars' merged metrics text. These need only the
kubernetes client installed, not the control plane."""

from __future__ import annotations

from meshlib.kube.canary import CanaryHistory, Routes, flagger_routes, service_name
from meshlib.kube.counters import parse_counters
from meshlib.kube.prometheus import scrape_interval, scraped_at, targets_of

CANARY = {"metadata": {"name": "catalog-release", "namespace": "istioinaction"},
          "spec": {"targetRef": {"kind": "Deployment", "name": "catalog"}, "service": {"name": "catalog"}}}


def test_flaggers_virtual_service_gives_the_weights_of_its_weighted_route() -> None:
    assert service_name(CANARY) == "catalog"
    assert service_name({"spec": {"targetRef": {"name": "podinfo"}}}) == "podinfo"
    vs = {"spec": {"http": [
        # with a match list Flagger puts the weighted route first, then a primary-only default
        {"match": [{"sourceLabels": {"app": "webapp"}}], "route": [
            {"destination": {"host": "catalog-primary"}, "weight": 70},
            {"destination": {"host": "catalog-canary.istioinaction.svc.cluster.local"}, "weight": 30}]},
        {"route": [{"destination": {"host": "catalog-primary"}, "weight": 100}]}]}}
    assert flagger_routes(vs, "catalog") == Routes(70, 30, mirrored=False)
    mirrored = {"spec": {"http": [{"route": [{"destination": {"host": "catalog-primary"}, "weight": 100},
                                             {"destination": {"host": "catalog-canary"}, "weight": 0}],
                                   "mirror": {"host": "catalog-canary"}}]}}
    assert flagger_routes(mirrored, "catalog") == Routes(100, 0, mirrored=True)
    assert flagger_routes({"spec": {"http": [{"route": [{"destination": {"host": "catalog"}}]}]}}, "catalog") is None
    assert flagger_routes(None, "catalog") is None


def test_a_canary_history_has_a_point_per_status_change() -> None:
    clock = iter(range(100, 200))
    history = CanaryHistory(lambda c: Routes(90, 10, False), clock=lambda: float(next(clock)))
    history.observe({**CANARY})  # no status yet: nothing to show
    assert history.exists and history.points() == []
    status = {"phase": "Progressing", "canaryWeight": 10, "failedChecks": 0, "iterations": 0,
              "lastTransitionTime": "2026-01-01T00:00:00Z",
              "conditions": [{"type": "Promoted", "status": "Unknown", "reason": "Progressing"}]}
    history.observe({**CANARY, "status": status})
    history.observe({**CANARY, "status": dict(status)})  # the same status again (a metadata change): no point
    history.observe({**CANARY, "status": {**status, "failedChecks": 1, "lastTransitionTime": "2026-01-01T00:00:45Z"}})
    points = history.points()
    assert [(p["phase"], p["canaryWeight"], p["failedChecks"], p["time"]) for p in points] == [
        ("Progressing", 10, 0, 100.0), ("Progressing", 10, 1, 101.0)]
    assert points[0]["primaryWeight"] == 90 and points[0]["routeCanaryWeight"] == 10
    assert points[0]["conditions"][0]["reason"] == "Progressing" and points[0]["metrics"] == {}
    history.observe(None)
    assert not history.exists and len(history.points()) == 2


def test_prometheus_targets_are_matched_to_pods_by_any_usual_spelling() -> None:
    active = [
        {"labels": {"namespace": "istioinaction", "pod": "catalog-1"}, "health": "up",
         "lastScrape": "2026-03-01T10:00:00.123456789Z", "scrapeInterval": "15s"},  # Istio's addon (Prometheus 3)
        {"labels": {"kubernetes_namespace": "istioinaction", "kubernetes_pod_name": "catalog-2"}, "health": "down",
         "lastScrape": "0001-01-01T00:00:00Z"},  # older charts; never scraped
        {"labels": {"job": "kubernetes-pods"}, "discoveredLabels": {"__meta_kubernetes_namespace": "istioinaction",
                                                                    "__meta_kubernetes_pod_name": "webapp-1"}},
        {"labels": {"namespace": "other", "pod": "catalog-1"}},
    ]
    found = targets_of(active, "istioinaction", ["catalog-1", "catalog-2", "webapp-1", "forum-1"])
    assert {pod: len(ts) for pod, ts in found.items()} == {"catalog-1": 1, "catalog-2": 1, "webapp-1": 1, "forum-1": 0}
    assert scraped_at(active[0]) == 1772359200.123456
    assert scraped_at(active[1]) == 0.0
    assert scrape_interval(active[0]) == 15.0 and scrape_interval(active[2]) == 15.0


def test_a_sidecars_merged_metrics_give_its_request_counters() -> None:
    text = """\
# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",destination_workload="catalog",response_code="200"} 7
istio_requests_total{reporter="source",destination_workload="catalog",response_code="200"} 3
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{reporter="destination",le="5"} 2
istio_request_duration_milliseconds_bucket{reporter="destination",le="+Inf"} 7
istio_request_duration_milliseconds_sum{reporter="destination"} 70
# TYPE envoy_cluster_upstream_rq_retry counter
envoy_cluster_upstream_rq_retry{cluster_name="outbound|80||catalog"} 4
"""
    counters = parse_counters("catalog-1", text)
    labels = (("destination_workload", "catalog"), ("reporter", "destination"), ("response_code", "200"))
    assert counters[("catalog-1", "istio_requests_total", labels)] == 7
    assert sorted({name for _, name, _ in counters}) == ["istio_request_duration_milliseconds_bucket",
                                                         "istio_requests_total"]
    assert len(counters) == 4
