"""DestinationRule traffic policies as Envoy cluster settings and route hash policies (istiod's cluster builder).

A policy is merged as istiod merges it: the DestinationRule's `trafficPolicy`, then its `portLevelSettings` for
the cluster's port, then the subset's `trafficPolicy` and its port-level settings; each of `loadBalancer`,
`connectionPool`, `outlierDetection` and `tls` set at a more specific level replaces the less specific one whole.
"""

from __future__ import annotations

from typing import Any

from meshlib.units import format_duration, parse_duration
from meshlib.xds.model import Json

MAX = 4294967295
FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
SIMPLE_LB = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST",
             "RANDOM": "RANDOM"}


def _port_level(policy: dict[str, Any] | None, port: int) -> dict[str, Any]:
    for entry in (policy or {}).get("portLevelSettings") or []:
        if (entry.get("port") or {}).get("number") == port:
            return entry
    return {}


def effective_policy(dr_spec: dict[str, Any] | None, port: int, subset: str = "") -> dict[str, Any]:
    """The policy a cluster of this DestinationRule, port and subset gets (empty without a rule)."""
    if not dr_spec:
        return {}
    levels = [dr_spec.get("trafficPolicy"), _port_level(dr_spec.get("trafficPolicy"), port)]
    for s in dr_spec.get("subsets") or []:
        if s.get("name") == subset:
            levels += [s.get("trafficPolicy"), _port_level(s.get("trafficPolicy"), port)]
    out: dict[str, Any] = {}
    for level in levels:
        for key in FIELDS:
            if (level or {}).get(key) is not None:
                out[key] = level[key]
    return out


def _seconds(text: str) -> str:
    return format_duration(parse_duration(text))


def _load_balancer(cluster: Json, lb: dict[str, Any], default_lb: str) -> None:
    hashing = lb.get("consistentHash")
    if hashing:
        if hashing.get("maglev") is not None:
            cluster["lbPolicy"] = "MAGLEV"
            size = (hashing.get("maglev") or {}).get("tableSize")
            if size:
                cluster["maglevLbConfig"] = {"tableSize": size}
        else:
            cluster["lbPolicy"] = "RING_HASH"
            ring = (hashing.get("ringHash") or {}).get("minimumRingSize") or hashing.get("minimumRingSize") or 1024
            cluster["ringHashLbConfig"] = {"minimumRingSize": str(ring)}
        return
    if lb.get("simple") == "PASSTHROUGH":  # to the address the caller dialed, no load balancing
        cluster["type"] = "ORIGINAL_DST"
        cluster.pop("edsClusterConfig", None)
        cluster["lbPolicy"] = "CLUSTER_PROVIDED"
        return
    cluster["lbPolicy"] = SIMPLE_LB.get(lb.get("simple") or "", default_lb)


def _connection_pool(cluster: Json, pool: dict[str, Any]) -> None:
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    thresholds = cluster["circuitBreakers"]["thresholds"][0]
    limits = {"maxConnections": tcp.get("maxConnections"), "maxPendingRequests": http.get("http1MaxPendingRequests"),
              "maxRequests": http.get("http2MaxRequests"), "maxRetries": http.get("maxRetries")}
    for key, value in limits.items():
        if value:  # 0 means "unset" in Istio's API: the default (unlimited) stays
            thresholds[key] = value
    if tcp.get("connectTimeout"):
        cluster["connectTimeout"] = _seconds(tcp["connectTimeout"])
    common: Json = {}
    if http.get("maxRequestsPerConnection"):
        common["maxRequestsPerConnection"] = http["maxRequestsPerConnection"]
    if http.get("idleTimeout"):
        common["idleTimeout"] = _seconds(http["idleTimeout"])
    if tcp.get("maxConnectionDuration"):
        common["maxConnectionDuration"] = _seconds(tcp["maxConnectionDuration"])
    if common:
        cluster["typedExtensionProtocolOptions"] = {HTTP_OPTIONS: {
            "@type": HTTP_OPTIONS_TYPE, "commonHttpProtocolOptions": common,
            "explicitHttpConfig": {"httpProtocolOptions": {}}}}


def _outlier_detection(cluster: Json, od: dict[str, Any]) -> None:
    out: Json = {"enforcingSuccessRate": 0}  # istiod turns success-rate ejection off
    errors = od.get("consecutive5xxErrors")
    if errors is None and od.get("consecutiveErrors"):  # the deprecated field counts 5xx too
        errors = od["consecutiveErrors"]
    if errors is not None:
        out["consecutive5xx"] = errors
        out["enforcingConsecutive5xx"] = 100 if errors > 0 else 0
    gateway = od.get("consecutiveGatewayErrors")
    if gateway is not None:
        out["consecutiveGatewayFailure"] = gateway
        out["enforcingConsecutiveGatewayFailure"] = 100 if gateway > 0 else 0
    for key, field in (("interval", "interval"), ("baseEjectionTime", "baseEjectionTime")):
        if od.get(key):
            out[field] = _seconds(od[key])
    if od.get("maxEjectionPercent"):
        out["maxEjectionPercent"] = od["maxEjectionPercent"]
    if od.get("splitExternalLocalOriginErrors"):
        out["splitExternalLocalOriginErrors"] = True
        if od.get("consecutiveLocalOriginFailures"):
            out["consecutiveLocalOriginFailure"] = od["consecutiveLocalOriginFailures"]
            out["enforcingConsecutiveLocalOriginFailure"] = 100
    cluster["outlierDetection"] = out
    # no panic routing to ejected hosts unless asked (Envoy's default threshold is 50%)
    cluster.setdefault("commonLbConfig", {})["healthyPanicThreshold"] = {"value": od.get("minHealthPercent", 0)}


def apply_policy(cluster: Json, policy: dict[str, Any], default_lb: str) -> None:
    """Set what `policy` says on an outbound cluster (circuit breakers and LB defaults are already there)."""
    if cluster.get("type") == "ORIGINAL_DST":
        return
    _load_balancer(cluster, policy.get("loadBalancer") or {}, default_lb)
    if policy.get("connectionPool"):
        _connection_pool(cluster, policy["connectionPool"])
    if policy.get("outlierDetection") is not None:
        _outlier_detection(cluster, policy["outlierDetection"])


def hash_policy(policy: dict[str, Any]) -> list[Json] | None:
    """The route `hashPolicy` for a destination whose policy hashes consistently; None otherwise."""
    hashing = (policy.get("loadBalancer") or {}).get("consistentHash")
    if not hashing:
        return None
    if hashing.get("httpHeaderName"):
        return [{"header": {"headerName": hashing["httpHeaderName"]}}]
    if hashing.get("httpCookie"):
        cookie = hashing["httpCookie"]
        out: Json = {"name": cookie["name"]}
        if cookie.get("path"):
            out["path"] = cookie["path"]
        if cookie.get("ttl"):
            out["ttl"] = _seconds(cookie["ttl"])
        return [{"cookie": out}]
    if hashing.get("useSourceIp"):
        return [{"connectionProperties": {"sourceIp": True}}]
    if hashing.get("httpQueryParameterName"):
        return [{"queryParameter": {"name": hashing["httpQueryParameterName"]}}]
    return None
