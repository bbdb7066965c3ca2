"""EnvoyFilter MERGE patches on clusters and routes, as istiod applies them last to what it built (issue 10;
pilot/pkg/networking/core/envoyfilter/). The chapter-6 filters load, analyze, translate and pass Envoy's own
validation (the test-table registry); unsupported patches are reported, never dropped silently."""

from __future__ import annotations

from helpers import MANIFESTS, proxy, vhost

from meshlib.config.analyze import analyze
from meshlib.config.store import ConfigStore
from meshlib.profile import profile_for

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
