"""EnvoyFilter MERGE patches on clusters and routes, as istiod applies them last to what it built (issue 10;
pilot/pkg/networking/core/envoyfilter/). The chapter-6 filters load, analyze, translate and pass Envoy's own
validation (the test-table registry); unsupported patches are reported, never dropped silently."""

from __future__ import annotations

import pytest
from helpers import MANIFESTS, proxy, vhost

from meshlib.config.analyze import analyze
from meshlib.config.store import ConfigStore
from meshlib.profile import profile_for
from meshlib.units import go_duration_ns, proto_duration
from meshlib.xds import build_proxy_config, find_proxy

CH6 = MANIFESTS / "ch6"
SIMPLE_WEB = "deploy/simple-web.istioinaction"
BACKEND = "simple-backend.istioinaction.svc.cluster.local"


def ch6(*names: str, version: str | None = None) -> ConfigStore:
    store = ConfigStore(profile_for(version))
    for name in ("simple-backend.yaml", "simple-web.yaml", *names):
        store.apply_text((CH6 / name).read_text(), "istioinaction", filename=name)
    return store


def test_a_route_merge_adds_retriable_codes_and_back_off_to_the_vs_retries() -> None:
    store = ch6("simple-backend-vs-retry-status.yaml", "simple-backend-envoyfilter-retry-status.yaml")
    pc = proxy(store, SIMPLE_WEB)
    policy = vhost(pc, "80", f"{BACKEND}:80")["routes"][0]["route"]["retryPolicy"]
    assert policy["retryOn"] == "5xx,retriable-status-codes" and policy["numRetries"] == 2
    assert policy["retriableStatusCodes"] == [408, 400]  # the VS's retryOn names no code: only the patch's
    assert policy["retryBackOff"] == {"baseInterval": "0.050s"}
    assert pc.not_applied == []
    other = proxy(store, "deploy/simple-backend-1.istioinaction")  # the workloadSelector picks simple-web only
    assert all("retryBackOff" not in (r.get("route") or {}).get("retryPolicy", {})
               for rc in other.route_configs.values() for vh in rc["virtualHosts"] for r in vh["routes"])


def test_a_cluster_merge_adds_a_retry_budget_to_the_circuit_breakers() -> None:
    pc = proxy(ch6("simple-backend-envoyfilter-retry-budget.yaml"), SIMPLE_WEB)
    thresholds = pc.clusters[f"outbound|80||{BACKEND}"]["circuitBreakers"]["thresholds"]
    assert {"retryBudget": {"budgetPercent": {"value": 5.0}, "minRetryConcurrency": 2}} in thresholds


UNSUPPORTED = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua}
spec:
  workloadSelector: {labels: {app: simple-web}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch: {operation: INSERT_BEFORE, value: {name: envoy.lua}}
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: REMOVE}
"""


def test_a_patch_meshlib_cannot_apply_is_reported_by_analyze_and_on_the_proxy() -> None:
    store = ch6()
    store.apply_text(UNSUPPORTED, "istioinaction", filename="lua.yaml")
    findings = [str(f) for f in analyze(store) if f.code == "MSH0004"]
    assert findings == [
        "Warning [MSH0004] (EnvoyFilter istioinaction/lua lua.yaml:7) configPatches[0] not applied on the embedded "
        "mesh: applyTo HTTP_FILTER is not supported by meshlib (only CLUSTER, ROUTE_CONFIGURATION, VIRTUAL_HOST, "
        "HTTP_ROUTE)",
        "Warning [MSH0004] (EnvoyFilter istioinaction/lua lua.yaml:10) configPatches[1] not applied on the embedded "
        "mesh: operation REMOVE is not supported by meshlib (only MERGE)"]
    assert proxy(store, SIMPLE_WEB).not_applied == [
        "EnvoyFilter/lua.istioinaction configPatches[0] not applied: applyTo HTTP_FILTER is not supported by meshlib "
        "(only CLUSTER, ROUTE_CONFIGURATION, VIRTUAL_HOST, HTTP_ROUTE)",
        "EnvoyFilter/lua.istioinaction configPatches[1] not applied: operation REMOVE is not supported by meshlib "
        "(only MERGE)"]
    assert not any("not modelled" in str(f) and "EnvoyFilter" in str(f) for f in analyze(store))


ODD = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: odd}
spec:
  workloadSelector: [simple-web]
  priority: high
  configPatches:
  - applyTo: CLUSTER
    match: [SIDECAR_OUTBOUND]
    patch: {operation: MERGE, value: {connect_timeout: 1s}}
  - applyTo: HTTP_ROUTE
    match: {routeConfiguration: {vhost: [x]}}
    patch: {operation: MERGE, value: {route: {timeout: 2s}}}
  - 42
"""


def test_odd_shapes_are_reported_or_ignored_never_a_crash() -> None:
    store = ch6()
    store.apply_text(ODD, "istioinaction", filename="odd.yaml")
    pc = proxy(store, SIMPLE_WEB)
    assert pc.not_applied == [
        "EnvoyFilter/odd.istioinaction configPatches[0] not applied: match must be a mapping",
        "EnvoyFilter/odd.istioinaction configPatches[2] not applied: a configPatches entry must be a mapping"]
    assert [f.code for f in analyze(store) if f.code == "MSH0004"] == ["MSH0004", "MSH0004"]


def test_hedging_merges_into_simple_backends_virtual_host_on_simple_web_only() -> None:
    """A VIRTUAL_HOST MERGE (the repo's hedging filter) lands on the matched virtual host and nowhere else; with the
    per-try timeout VirtualService it pairs with, Envoy hedges an attempt that outlives 300 ms."""
    store = ch6("simple-backend-vs-retry-per-try-timeout.yaml", "simple-backend-envoyfilter-hedging.yaml")
    pc = proxy(store, SIMPLE_WEB)
    backend = vhost(pc, "80", f"{BACKEND}:80")
    assert backend["hedgePolicy"] == {"hedgeOnPerTryTimeout": True}
    assert backend["routes"][0]["route"]["retryPolicy"]["perTryTimeout"] == "0.300s"
    assert pc.not_applied == []
    others = [vh["name"] for rc in pc.route_configs.values() for vh in rc["virtualHosts"] if "hedgePolicy" in vh]
    assert others == [f"{BACKEND}:80"]
    backend_proxy = proxy(store, "deploy/simple-backend-1.istioinaction")
    assert not any("hedgePolicy" in vh for rc in backend_proxy.route_configs.values() for vh in rc["virtualHosts"])


BUDGET_BY_SERVICE = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: budget}}
spec:
  workloadSelector: {{labels: {{app: simple-web}}}}
  configPatches:
  - applyTo: CLUSTER
    match:
      context: SIDECAR_OUTBOUND
      cluster: {{service: simple-backend.istioinaction.svc.cluster.local, portNumber: {port}}}
    patch:
      operation: MERGE
      value:
        circuit_breakers:
          thresholds:
          - retry_budget: {{budget_percent: {{value: 10.0}}, min_retry_concurrency: 3}}
"""


def test_a_cluster_matched_by_service_and_port_gets_the_merge() -> None:
    """istiod's cluster match by `service` and `portNumber` (envoyfilter/cluster_patch.go clusterMatch: the parsed
    outbound cluster name's host and port), as the book's retry-budget filter writes it; another port matches none."""
    store = ch6()
    store.apply_text(BUDGET_BY_SERVICE.format(port=80), "istioinaction", filename="budget.yaml")
    thresholds = proxy(store, SIMPLE_WEB).clusters[f"outbound|80||{BACKEND}"]["circuitBreakers"]["thresholds"]
    assert {"retryBudget": {"budgetPercent": {"value": 10.0}, "minRetryConcurrency": 3}} in thresholds
    store.apply_text(BUDGET_BY_SERVICE.format(port=81), "istioinaction", filename="budget.yaml")
    thresholds = proxy(store, SIMPLE_WEB).clusters[f"outbound|80||{BACKEND}"]["circuitBreakers"]["thresholds"]
    assert not any("retryBudget" in t for t in thresholds)


GO_DURATIONS = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: durations}}
spec:
  workloadSelector: {{labels: {{app: simple-web}}}}
  configPatches:
  - applyTo: HTTP_ROUTE
    match:
      context: SIDECAR_OUTBOUND
      routeConfiguration: {{vhost: {{name: "simple-backend.istioinaction.svc.cluster.local:80"}}}}
    patch:
      operation: MERGE
      value:
        route:
          retry_policy:
            retry_back_off: {{base_interval: {base}, max_interval: 1m}}
            per_try_timeout: 1.5s
            retriable_status_codes: [408]
  - applyTo: CLUSTER
    match: {{context: SIDECAR_OUTBOUND, cluster: {{service: simple-backend.istioinaction.svc.cluster.local}}}}
    patch:
      operation: MERGE
      value: {{connect_timeout: 2m30s, outlier_detection: {{interval: 250ms, base_ejection_time: 1h}}}}
"""


def test_durations_in_gos_syntax_become_protobuf_durations() -> None:
    """The book writes `base_interval: 50ms`. istiod reads a patch value with golang/protobuf's jsonpb
    (pilot/pkg/config/xds StructToMessage -> pkg/util/protomarshal), whose Duration case is Go's
    time.ParseDuration, so `50ms`, `1m` and `2m30s` are valid there; Envoy and proto3 JSON take only seconds
    (`0.050s`). meshlib converts every Duration field of the value; Envoy validates the result (registry)."""
    store = ch6("simple-backend-vs-retry-status.yaml")
    store.apply_text(GO_DURATIONS.format(base="50ms"), "istioinaction", filename="durations.yaml")
    pc = proxy(store, SIMPLE_WEB)
    assert pc.not_applied == []
    policy = vhost(pc, "80", f"{BACKEND}:80")["routes"][0]["route"]["retryPolicy"]
    assert policy["retryBackOff"] == {"baseInterval": "0.050s", "maxInterval": "60s"}
    assert policy["perTryTimeout"] == "1.500s" and policy["retriableStatusCodes"] == [408]
    cluster = pc.clusters[f"outbound|80||{BACKEND}"]
    assert cluster["connectTimeout"] == "150s"
    assert cluster["outlierDetection"]["interval"] == "0.250s"
    assert cluster["outlierDetection"]["baseEjectionTime"] == "3600s"
    assert not [f for f in analyze(store) if f.code == "MSH0004"]


def test_a_duration_go_cannot_read_is_reported_not_applied() -> None:
    """istiod's EnvoyFilter validation rejects such a value ("bad Duration"); meshlib reports the patch as not
    applied, on the proxy and in analyze, naming the field, and applies the filter's other patches."""
    store = ch6("simple-backend-vs-retry-status.yaml")
    store.apply_text(GO_DURATIONS.format(base="fifty"), "istioinaction", filename="durations.yaml")
    pc = proxy(store, SIMPLE_WEB)
    assert pc.not_applied == [
        "EnvoyFilter/durations.istioinaction configPatches[0] not applied: patch.value "
        "route.retryPolicy.retryBackOff.baseInterval: 'fifty' is not a duration"]
    assert pc.clusters[f"outbound|80||{BACKEND}"]["connectTimeout"] == "150s"  # the CLUSTER patch still applies
    assert [str(f) for f in analyze(store) if f.code == "MSH0004"] == [
        "Warning [MSH0004] (EnvoyFilter istioinaction/durations durations.yaml:7) configPatches[0] not applied on "
        "the embedded mesh: patch.value route.retryPolicy.retryBackOff.baseInterval: 'fifty' is not a duration"]


@pytest.mark.parametrize(("text", "nanos", "proto"), [
    ("50ms", 50_000_000, "0.050s"), ("0", 0, "0s"), ("1m30s", 90 * 10**9, "90s"), ("1.5h", 5400 * 10**9, "5400s"),
    (".5s", 500_000_000, "0.500s"), ("-2us", -2000, "-0.000002s"), ("+1ns", 1, "0.000000001s"),
    ("1h2m3.25s", 3723_250_000_000, "3723.250s"), ("300µs", 300_000, "0.000300s")])
def test_go_durations_as_time_parse_duration_reads_them(text: str, nanos: int, proto: str) -> None:
    """Go's time.ParseDuration: `[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+`, units ns us µs ms s m h, or a bare `0`."""
    assert go_duration_ns(text) == nanos
    assert proto_duration(nanos) == proto


@pytest.mark.parametrize("text", ["", "5", "s", ".s", "5sec", "1 s", "fifty", "-", "1d", "9223372036.854775808s"])
def test_what_go_cannot_read_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        go_duration_ns(text)


ODD_VALUES = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: odd-values}
spec:
  workloadSelector: {labels: {app: simple-web}}
  configPatches:
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: MERGE, value: {1: 2, typed_per_filter_config: 5}}
  - applyTo: HTTP_ROUTE
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: MERGE, value: {route: {timeout: 5, idle_timeout: null}}}
"""


def test_odd_patch_values_are_kept_or_reported_never_a_crash() -> None:
    """A key no proto field has (YAML `1:`) and a data-keyed map that is no map are kept for Envoy to judge; a
    Duration that is no string is reported (jsonpb reads a Duration only from a JSON string; null leaves it unset)."""
    store = ch6()
    store.apply_text(ODD_VALUES, "istioinaction", filename="odd.yaml")
    workload = find_proxy(store, SIMPLE_WEB)
    assert workload is not None
    pc = build_proxy_config(store, workload)  # not `proxy()`: Envoy is right to refuse this config
    assert pc.not_applied == ["EnvoyFilter/odd-values.istioinaction configPatches[1] not applied: patch.value "
                              "route.timeout: 5 is not a duration (write a string such as 50ms or 1s)"]
    assert vhost(pc, "80", f"{BACKEND}:80")[1] == 2
    assert [f.code for f in analyze(store) if f.code == "MSH0004"] == ["MSH0004"]
