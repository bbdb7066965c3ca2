"""Translation that changes with the Istio release: each row names where istiod defines it, and the release
(issue 10). Paths are under istio/istio `pilot/pkg/networking/core/` (`v1alpha3/` before 1.22).
"""

from __future__ import annotations

import pytest
from helpers import (
    CATALOG_DR,
    CATALOG_GATEWAY,
    CH5,
    GATEWAY_PROXY,
    V1,
    V2,
    catalog_routes,
    catalog_vs,
    first_route,
    proxy,
    route_to,
    vhost,
    world,
)

from meshlib.router import Request

PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"


# route/route.go translateHeaderMatch: `withoutHeaders` string matchers get TreatMissingHeaderAsEmpty from 1.22
# (istio#49540); before, Envoy's inverted matcher never matches an absent header.
@pytest.mark.parametrize(("version", "treat_missing", "absent_matches"), [
    ("1.17", None, False), ("1.21", None, False), ("1.22", True, True), ("1.28", True, True)])
def test_without_headers_and_an_absent_header(version: str, treat_missing: bool | None, absent_matches: bool) -> None:
    store = world(catalog_vs("""
        - match: [{withoutHeaders: {x-canary: {exact: 'yes'}}}]
          route: [{destination: {host: catalog, subset: version-v1}}]
        - route: [{destination: {host: catalog, subset: version-v2}}]
        """), version=version)
    header = catalog_routes(store)[0]["match"]["headers"][0]
    assert header.get("treatMissingHeaderAsEmpty") is treat_missing and header["invertMatch"] is True
    decision = route_to(proxy(store), Request.of("catalog", "/items", "GET", {}))
    assert decision.cluster == (V1 if absent_matches else V2)  # the prediction follows Envoy's matcher


# route/route.go translateQueryParamMatch: `prefix` is a presence check in 1.17, a real prefix match from 1.18
# (istio#43736).
@pytest.mark.parametrize(("version", "expected"), [
    ("1.17", {"name": "debug", "presentMatch": True}),
    ("1.18", {"name": "debug", "stringMatch": {"prefix": "tr"}}),
    ("1.28", {"name": "debug", "stringMatch": {"prefix": "tr"}})])
def test_query_param_prefix(version: str, expected: dict) -> None:
    route = first_route("- match: [{queryParams: {debug: {prefix: tr}}}]\n"
                        "  route: [{destination: {host: catalog, subset: version-v2}}]\n", version=version)
    assert route["match"]["queryParameters"] == [expected]


# route/route.go translateRoute: several destinations with one non-zero weight are a plain cluster route up to
# 1.18, weightedClusters from 1.19.
@pytest.mark.parametrize(("version", "cluster", "weighted"), [
    ("1.17", V2, None), ("1.18", V2, None), ("1.19", None, [(V2, 100)]), ("1.24", None, [(V2, 100)])])
def test_a_lone_nonzero_weight(version: str, cluster: str | None, weighted: list | None) -> None:
    route = first_route("""
        - route:
          - destination: {host: catalog, subset: version-v1}
            weight: 0
          - destination: {host: catalog, subset: version-v2}
            weight: 100
        """, version=version)["route"]
    assert route.get("cluster") == cluster
    clusters = (route.get("weightedClusters") or {}).get("clusters")
    assert ([(c["name"], c["weight"]) for c in clusters] if clusters else None) == weighted


# route/route.go: HTTPRoute.mirrors is in the API from 1.19 and translated from 1.20 (istio#45944).
@pytest.mark.parametrize(("version", "mirrored"), [("1.19", []), ("1.20", [V2]), ("1.28", [V2])])
def test_mirrors_list_by_release(version: str, mirrored: list[str]) -> None:
    route = first_route("""
        - route: [{destination: {host: catalog, subset: version-v1}}]
          mirrors: [{destination: {host: catalog, subset: version-v2}}]
        """, version=version)["route"]
    assert [p["cluster"] for p in route.get("requestMirrorPolicies", [])] == mirrored


# retry/retry.go ConvertPolicy: retryIgnorePreviousHosts and backoff are read from 1.26.
@pytest.mark.parametrize(("version", "applied"), [("1.24", False), ("1.25", False), ("1.26", True), ("1.28", True)])
def test_retry_host_predicate_and_backoff_by_release(version: str, applied: bool) -> None:
    policy = first_route("- route: [{destination: {host: catalog}}]\n"
                         "  retries: {attempts: 2, retryIgnorePreviousHosts: false, backoff: 100ms}\n",
                         version=version)["route"]["retryPolicy"]
    assert ("retryHostPredicate" not in policy) is applied
    assert ("retryBackOff" in policy) is applied


# retry/retry.go ConvertPolicy(policy, hashPolicy) (route/route.go): with a consistent hash the retry keeps to
# the hashed host, so no previous_hosts predicate, from 1.23.
@pytest.mark.parametrize(("version", "previous_hosts"), [("1.17", True), ("1.22", True), ("1.23", False),
                                                         ("1.28", False)])
def test_consistent_hash_drops_the_previous_hosts_predicate(version: str, previous_hosts: bool) -> None:
    hashed = CATALOG_DR.replace("  host: catalog\n", "  host: catalog\n  trafficPolicy:\n    loadBalancer:\n"
                                "      consistentHash: {httpHeaderName: x-user}\n")
    store = world(hashed, catalog_vs("- route: [{destination: {host: catalog}}]\n"), dr=False, version=version)
    action = catalog_routes(store)[0]["route"]
    assert action["hashPolicy"] == [{"header": {"headerName": "x-user"}}]
    predicates = [p["name"] for p in action["retryPolicy"].get("retryHostPredicate", [])]
    assert predicates == ([PREVIOUS_HOSTS] if previous_hosts else [])


# route/route.go (istio config metadata): the VirtualService GVK is networking.istio.io/v1alpha3 until 1.23,
# v1 from 1.24.
@pytest.mark.parametrize(("version", "api"), [("1.17", "v1alpha3"), ("1.23", "v1alpha3"), ("1.24", "v1")])
def test_route_metadata_api_version(version: str, api: str) -> None:
    route = first_route("- route: [{destination: {host: catalog}}]\n", version=version)
    assert route["metadata"]["filterMetadata"]["istio"]["config"] == \
        f"/apis/networking.istio.io/{api}/namespaces/istioinaction/virtual-service/catalog"


# route/route.go generateVirtualHostDomains: from 1.27 the trailing-dot domain for every non-IP host.
@pytest.mark.parametrize(("version", "dotted"), [("1.26", False), ("1.27", True), ("1.28", True)])
def test_trailing_dot_domain_for_service_entry_hosts(version: str, dotted: bool) -> None:
    store = world((CH5 / "forum-serviceentry.yaml").read_text(), version=version)
    domains = vhost(proxy(store), "80", "jsonplaceholder.typicode.com:80")["domains"]
    assert domains == ["jsonplaceholder.typicode.com"] + (["jsonplaceholder.typicode.com."] if dotted else [])


# --- hosts (every profile) ------------------------------------------------------------------------------------------
# httproute.go: VirtualService-only virtual hosts are built before the services' ones and dedupeDomains keeps a
# domain with the first, so a VS host with a dot that is not a registry name (`catalog.istioinaction`) owns that
# domain; the catalog service's virtual host no longer lists it (Envoy rejects a domain listed twice).
@pytest.mark.parametrize("version", ["1.17", "1.24", "1.28"])
def test_a_dotted_vs_host_outside_the_registry_takes_the_domain_from_the_service(version: str) -> None:
    vs = catalog_vs("- route: [{destination: {host: catalog, subset: version-v2}}]\n",
                    hosts="[catalog.istioinaction]")
    pc = proxy(world(vs, version=version))
    rc = pc.route_configs["80"]
    owners = [v["name"] for v in rc["virtualHosts"] if "catalog.istioinaction" in v["domains"]]
    assert owners == ["catalog.istioinaction:80"]
    assert "catalog" in vhost(pc, "80", "catalog.istioinaction.svc.cluster.local:80")["domains"]
    decision = route_to(pc, Request.of("catalog.istioinaction", "/items", "GET", {}))
    assert decision.cluster == V2  # the VS routes it; `catalog` alone still takes the service default
    assert route_to(pc, Request.of("catalog", "/items", "GET", {})).cluster == \
        "outbound|80||catalog.istioinaction.svc.cluster.local"


# httproute.go separateVSHostsAndServices: a wildcard VS host that matches no registry service gets a virtual
# host of its own on route config 80 at sidecars, instead of leaving its hosts to PassthroughCluster.
@pytest.mark.parametrize("version", ["1.17", "1.28"])
def test_a_wildcard_vs_host_outside_the_registry_gets_its_own_virtual_host(version: str) -> None:
    vs = catalog_vs("- route: [{destination: {host: catalog, subset: version-v1}}]\n", hosts="['*.example.com']")
    pc = proxy(world(vs, version=version))
    assert vhost(pc, "80", "*.example.com:80")["domains"] == ["*.example.com"]
    assert route_to(pc, Request.of("api.example.com", "/", "GET", {})).cluster == V1


# --- gateways -------------------------------------------------------------------------------------------------------
# gateway.go (buildGatewayVirtualHosts): a server with `tls.httpsRedirect` marks its virtual hosts require_tls ALL,
# so Envoy answers plain HTTP with 301 to https before any route matches.
HOSTS_LINE = '    hosts: ["catalog.istioinaction.io"]\n'
HTTPS_REDIRECT_GATEWAY = CATALOG_GATEWAY.replace(HOSTS_LINE, HOSTS_LINE + "    tls: {httpsRedirect: true}\n")


@pytest.mark.parametrize("version", ["1.17", "1.28"])
def test_https_redirect_at_the_gateway(version: str) -> None:
    vs = catalog_vs("- route: [{destination: {host: catalog, subset: version-v1}}]\n",
                    hosts="[catalog.istioinaction.io]", gateways="[catalog-gateway]")
    pc = proxy(world(HTTPS_REDIRECT_GATEWAY, vs, version=version), GATEWAY_PROXY)
    vh = pc.route_configs["http.8080"]["virtualHosts"][0]
    assert vh["requireTls"] == "ALL"
    d = route_to(pc, Request.of("catalog.istioinaction.io", "/items", "GET", {}), port=8080)
    assert (d.status, d.redirect) == (301, {"schemeRedirect": "https", "responseCode": "MOVED_PERMANENTLY"})


# --- egress ---------------------------------------------------------------------------------------------------------
# model/service.go + protocol.Parse(""): a ServiceEntry port without `protocol` is sniffed, so HTTP to it is routed
# through route config 80 (cluster outbound|80||host) and gets through under REGISTRY_ONLY.
@pytest.mark.parametrize("version", ["1.17", "1.28"])
def test_a_service_entry_port_without_protocol_is_sniffed_as_http(version: str) -> None:
    se = (CH5 / "forum-serviceentry.yaml").read_text().replace("    protocol: HTTP\n", "")
    assert "protocol" not in se
    pc = proxy(world(se, (CH5 / "mesh-registry-only.yaml").read_text(), version=version))
    assert pc.outbound_policy == "REGISTRY_ONLY"
    vh = vhost(pc, "80", "jsonplaceholder.typicode.com:80")
    assert vh["routes"][0]["route"]["cluster"] == "outbound|80||jsonplaceholder.typicode.com"
    decision = route_to(pc, Request.of("jsonplaceholder.typicode.com", "/users", "GET", {}))
    assert decision.cluster == "outbound|80||jsonplaceholder.typicode.com" and decision.status is None
