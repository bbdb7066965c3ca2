"""DestinationRule traffic policies in the clusters and routes istiod builds (connectionPool, outlierDetection,
loadBalancer, consistentHash), table-driven; the merged subset policy; what real Envoy accepts is checked too
(every store here is validated by test_envoy_validate)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import CATALOG_DEFAULT, CATALOG_DR, V1, V2, catalog_routes, catalog_vs, proxy, world, y

from meshlib.errors import ConfigError


def dr(policy: str, subset_policy: str = "") -> str:
    """The catalog DestinationRule with `policy` (YAML under trafficPolicy) and, optionally, a v2 subset policy."""
    top = "  trafficPolicy:\n" + "\n".join("    " + line for line in y(policy).splitlines()) + "\n" if policy else ""
    sub = ("    trafficPolicy:\n" + "\n".join("      " + line for line in y(subset_policy).splitlines()) + "\n"
           if subset_policy else "")
    assert CATALOG_DR.endswith("      version: v2\n")  # the v2 subset comes last: its policy is appended
    return CATALOG_DR.replace("  host: catalog\n", "  host: catalog\n" + top) + sub


def clusters(policy: str, subset_policy: str = "", version: str | None = None) -> dict[str, Any]:
    return proxy(world(dr(policy, subset_policy), dr=False, version=version)).clusters


CASES = [
    ("loadBalancer: {simple: ROUND_ROBIN}", {"lbPolicy": "ROUND_ROBIN"}),
    ("loadBalancer: {simple: RANDOM}", {"lbPolicy": "RANDOM"}),
    ("loadBalancer: {simple: LEAST_CONN}", {"lbPolicy": "LEAST_REQUEST"}),
    ("loadBalancer: {simple: PASSTHROUGH}", {"lbPolicy": "CLUSTER_PROVIDED", "type": "ORIGINAL_DST"}),
    ("loadBalancer: {consistentHash: {httpHeaderName: x-user}}",
     {"lbPolicy": "RING_HASH", "ringHashLbConfig": {"minimumRingSize": "1024"}}),
    ("loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 64}}}",
     {"lbPolicy": "RING_HASH", "ringHashLbConfig": {"minimumRingSize": "64"}}),
    ("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}",
     {"lbPolicy": "MAGLEV", "maglevLbConfig": {"tableSize": 65537}}),
    ("connectionPool: {tcp: {maxConnections: 1, connectTimeout: 250ms}, http: {http1MaxPendingRequests: 2, "
     "http2MaxRequests: 3, maxRetries: 4}}",
     {"connectTimeout": "0.250s", "circuitBreakers": {"thresholds": [{
         "maxConnections": 1, "maxPendingRequests": 2, "maxRequests": 3, "maxRetries": 4, "trackRemaining": True}]}}),
    ("connectionPool: {http: {maxRequestsPerConnection: 1, idleTimeout: 30s}}",
     {"typedExtensionProtocolOptions": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
         "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
         "commonHttpProtocolOptions": {"maxRequestsPerConnection": 1, "idleTimeout": "30s"},
         "explicitHttpConfig": {"httpProtocolOptions": {}}}}}),
    ("outlierDetection: {consecutive5xxErrors: 1, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 100}",
     {"outlierDetection": {"enforcingSuccessRate": 0, "consecutive5xx": 1, "enforcingConsecutive5xx": 100,
                           "interval": "5s", "baseEjectionTime": "30s", "maxEjectionPercent": 100},
      "commonLbConfig": {"healthyPanicThreshold": {"value": 0}}}),
    ("outlierDetection: {consecutiveGatewayErrors: 3, consecutive5xxErrors: 0}",
     {"outlierDetection": {"enforcingSuccessRate": 0, "consecutive5xx": 0, "enforcingConsecutive5xx": 0,
                           "consecutiveGatewayFailure": 3, "enforcingConsecutiveGatewayFailure": 100},
      "commonLbConfig": {"healthyPanicThreshold": {"value": 0}}}),
    ("outlierDetection: {consecutiveErrors: 7}",  # the deprecated field counts 5xx
     {"outlierDetection": {"enforcingSuccessRate": 0, "consecutive5xx": 7, "enforcingConsecutive5xx": 100}}),
    ("outlierDetection: {}",  # the block alone turns Envoy's defaults on (5 consecutive 5xx, 10 s, 30 s, 10%)
     {"outlierDetection": {"enforcingSuccessRate": 0}, "commonLbConfig": {"healthyPanicThreshold": {"value": 0}}}),
]


@pytest.mark.parametrize(("policy", "expected"), CASES, ids=[c[0].split(":")[0] + str(i) for i, c in enumerate(CASES)])
def test_traffic_policy_sets_the_cluster(policy: str, expected: dict[str, Any]) -> None:
    got = clusters(policy)
    for name in (CATALOG_DEFAULT, V1, V2):
        for key, value in expected.items():
            assert got[name].get(key) == value, (name, key, got[name].get(key))


def test_without_a_policy_clusters_keep_istios_defaults() -> None:
    got = clusters("")
    assert got[V1]["lbPolicy"] == "LEAST_REQUEST"
    assert got[V1]["circuitBreakers"]["thresholds"][0]["maxConnections"] == 4294967295
    assert "outlierDetection" not in got[V1]
    assert got[V1]["commonLbConfig"] == {}


def test_the_subset_policy_replaces_each_field_it_sets_and_keeps_the_others() -> None:
    got = clusters("loadBalancer: {simple: ROUND_ROBIN}\nconnectionPool: {tcp: {maxConnections: 5}}",
                   "connectionPool: {tcp: {maxConnections: 1}}")
    assert got[V2]["lbPolicy"] == "ROUND_ROBIN"  # from the top level: the subset does not set loadBalancer
    assert got[V2]["circuitBreakers"]["thresholds"][0]["maxConnections"] == 1  # the subset's
    assert got[V1]["circuitBreakers"]["thresholds"][0]["maxConnections"] == 5  # the top level's


def test_port_level_settings_apply_to_their_port_only() -> None:
    got = clusters("loadBalancer: {simple: RANDOM}\nportLevelSettings:\n"
                   "- port: {number: 80}\n  loadBalancer: {simple: ROUND_ROBIN}\n"
                   "- port: {number: 9999}\n  loadBalancer: {simple: LEAST_REQUEST}")
    assert got[CATALOG_DEFAULT]["lbPolicy"] == "ROUND_ROBIN"


@pytest.mark.parametrize(("hashing", "expected"), [
    ("{httpHeaderName: x-user}", [{"header": {"headerName": "x-user"}}]),
    ("{httpCookie: {name: session, path: /, ttl: 10s}}", [{"cookie": {"name": "session", "path": "/", "ttl": "10s"}}]),
    ("{useSourceIp: true}", [{"connectionProperties": {"sourceIp": True}}]),
    ("{httpQueryParameterName: user}", [{"queryParameter": {"name": "user"}}]),
])
def test_consistent_hash_puts_a_hash_policy_on_routes_to_the_destination(hashing: str, expected: list) -> None:
    store = world(dr(f"loadBalancer: {{consistentHash: {hashing}}}"), catalog_vs("""
        - route:
          - destination: {host: catalog, subset: version-v1}
        """), dr=False)
    route = catalog_routes(store)[0]
    assert route["route"]["hashPolicy"] == expected
    # without a VirtualService, the default route hashes too
    default = catalog_routes(world(dr(f"loadBalancer: {{consistentHash: {hashing}}}"), dr=False))[0]
    assert default["route"]["hashPolicy"] == expected


def test_no_hash_policy_without_consistent_hashing() -> None:
    route = catalog_routes(world(dr("loadBalancer: {simple: ROUND_ROBIN}"), dr=False))[0]
    assert "hashPolicy" not in route["route"]


@pytest.mark.parametrize(("policy", "message"), [
    ("outlierDetection: {consecutive5xErrors: 1}", "unknown field 'consecutive5xErrors'"),
    ("connectionPool: {http: {http1MaxPendingRequest: 1}}", "unknown field 'http1MaxPendingRequest'"),
    ("loadBalancer: {simple: ROUND_ROBBIN}", "ROUND_ROBBIN"),
    ("connectionPool: {tcp: {maxConnections: -1}}", "must not be negative"),
    ("loadBalancer: {consistentHash: {httpHeaderName: a, useSourceIp: true}}", "httpHeaderName"),
])
def test_a_misspelled_policy_is_an_error_with_its_line_not_a_silent_no_op(policy: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        world(dr(policy), dr=False)
    assert message in str(err.value), str(err.value)
    assert ":" in str(err.value).split(" ")[0]  # file:line first




def test_with_outlier_detection_endpoints_are_prioritized_by_the_proxys_locality() -> None:
    """istiod's locality failover: same zone first, then the region, then the `failover` region, then the rest;
    real Envoy accepts the prioritized endpoints."""
    from meshlib.local.envoy.binary import validate
    from meshlib.xds.bind import Placement, PodEndpoint, bind
    from meshlib.xds.static import static_bootstrap

    store = world(dr("outlierDetection: {consecutive5xxErrors: 1}\n"
                     "loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: eu-west}]}}"), dr=False)
    pc = proxy(store)
    assert CATALOG_DEFAULT in pc.locality_lb
    pods = {("istioinaction", "catalog"): [PodEndpoint("127.9.0.2", ("us-east", "a", "")),
                                           PodEndpoint("127.9.0.3", ("us-east", "b", "")),
                                           PodEndpoint("127.9.0.4", ("eu-west", "a", "")),
                                           PodEndpoint("127.9.0.5", ("ap-south", "a", ""))]}
    place = Placement("127.9.0.9", "/dev/null", ("127.0.0.1", 9), {8080: ("127.9.0.9", 18080)}, {},
                      ("us-east", "a", ""))
    res = bind(pc, place, pods)
    cla = next(e for e in res.endpoints if e["clusterName"] == CATALOG_DEFAULT)
    got = {g["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"]["address"]: g.get("priority", 0)
           for g in cla["endpoints"]}
    assert got == {"127.9.0.2": 0, "127.9.0.3": 1, "127.9.0.4": 2, "127.9.0.5": 3}
    assert validate(static_bootstrap([res])) is None


def test_distribute_weights_localities_for_callers_in_the_from_locality() -> None:
    """istiod's `distribute` (loadbalancer.go applyLocalityWeights): a caller in us-east/a sends 80% to its zone and
    20% to us-east/b, shared by the pods of each; eu-west gets nothing; a caller elsewhere keeps plain weights; the
    cluster weights by locality (localityWeightedLbConfig); real Envoy accepts it."""
    from meshlib.local.envoy.binary import validate
    from meshlib.xds.bind import Placement, PodEndpoint, bind
    from meshlib.xds.static import static_bootstrap

    setting = "{distribute: [{from: 'us-east/a/*', to: {'us-east/a/*': 80, 'us-east/b/*': 20}}]}"
    store = world(dr(f"outlierDetection: {{consecutive5xxErrors: 1}}\nloadBalancer: {{localityLbSetting: {setting}}}"),
                  dr=False)
    pc = proxy(store)
    assert pc.clusters[CATALOG_DEFAULT]["commonLbConfig"]["localityWeightedLbConfig"] == {}
    pods = {("istioinaction", "catalog"): [PodEndpoint("127.9.0.2", ("us-east", "a", "")),
                                           PodEndpoint("127.9.0.3", ("us-east", "a", "")),
                                           PodEndpoint("127.9.0.4", ("us-east", "b", "")),
                                           PodEndpoint("127.9.0.5", ("eu-west", "a", ""))]}

    def weights(locality: tuple[str, str, str]) -> dict[tuple[str, ...], int]:
        place = Placement("127.9.0.9", "/dev/null", ("127.0.0.1", 9), {8080: ("127.9.0.9", 18080)}, {}, locality)
        res = bind(pc, place, pods)
        assert validate(static_bootstrap([res])) is None
        cla = next(e for e in res.endpoints if e["clusterName"] == CATALOG_DEFAULT)
        assert all("priority" not in g for g in cla["endpoints"])  # weights, not failover priorities
        return {tuple(g["locality"].values()): g["loadBalancingWeight"] for g in cla["endpoints"]}

    assert weights(("us-east", "a", "")) == {("us-east", "a"): 80, ("us-east", "b"): 20}
    assert weights(("eu-west", "a", "")) == {("us-east", "a"): 2, ("us-east", "b"): 1, ("eu-west", "a"): 1}


def test_failover_priority_ranks_endpoints_by_the_labels_they_share_with_the_proxy_in_order() -> None:
    """istiod's `failoverPriority` (loadbalancer.go applyPriorityFailover): an endpoint agreeing with the proxy on
    the first m of n labels gets priority n - m; the region key compares localities. Real Envoy accepts it."""
    from meshlib.local.envoy.binary import validate
    from meshlib.xds.bind import Placement, PodEndpoint, bind
    from meshlib.xds.static import static_bootstrap

    setting = "{failoverPriority: [topology.kubernetes.io/region, version]}"
    store = world(dr(f"outlierDetection: {{consecutive5xxErrors: 1}}\nloadBalancer: {{localityLbSetting: {setting}}}"),
                  dr=False)
    pc = proxy(store)
    pc.labels["version"] = "v2"  # the caller runs v2: it prefers v2 pods in its region, then v1 there, then the rest
    pods = {("istioinaction", "catalog"): [PodEndpoint("127.9.0.2", ("us-east", "a", "")),
                                           PodEndpoint("127.9.0.4", ("eu-west", "a", ""))],
            ("istioinaction", "catalog-v2"): [PodEndpoint("127.9.0.3", ("us-east", "b", "")),
                                              PodEndpoint("127.9.0.5", ("eu-west", "b", ""))]}
    place = Placement("127.9.0.9", "/dev/null", ("127.0.0.1", 9), {8080: ("127.9.0.9", 18080)}, {},
                      ("us-east", "a", ""))
    res = bind(pc, place, pods)
    assert validate(static_bootstrap([res])) is None
    cla = next(e for e in res.endpoints if e["clusterName"] == CATALOG_DEFAULT)
    got = {ep["endpoint"]["address"]["socketAddress"]["address"]: g.get("priority", 0)
           for g in cla["endpoints"] for ep in g["lbEndpoints"]}
    assert got == {"127.9.0.3": 0, "127.9.0.2": 1, "127.9.0.4": 2, "127.9.0.5": 2}


def test_without_outlier_detection_or_when_disabled_endpoints_are_not_prioritized() -> None:
    assert proxy(world(dr("loadBalancer: {simple: ROUND_ROBIN}"), dr=False)).locality_lb == {}
    disabled = "outlierDetection: {consecutive5xxErrors: 1}\nloadBalancer: {localityLbSetting: {enabled: false}}"
    assert proxy(world(dr(disabled), dr=False)).locality_lb == {}
