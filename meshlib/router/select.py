"""Route selection over a proxy's translated config: the same code predicts (`explain`) and routes (data plane).

Pure: randomness only through the injected `random.Random`; no sockets, no clocks.
"""

from __future__ import annotations

import random
from typing import Any

from meshlib.router.decision import Decision, FaultDecision, MirrorDecision
from meshlib.router.match import route_matches, select_virtual_host
from meshlib.router.request import Request
from meshlib.units import parse_duration
from meshlib.xds.model import GatewayChain, ProxyConfig
from meshlib.xds.naming import BLACKHOLE, PASSTHROUGH
from meshlib.xds.route import FAULT_FILTER

Json = dict[str, Any]
DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def fraction_percent(fraction: Json | None) -> float:
    """FractionalPercent → percent (0–100). Absent → 0."""
    if not fraction:
        return 0.0
    denominator = DENOMINATORS[fraction.get("denominator", "HUNDRED")]
    return 100.0 * fraction.get("numerator", 0) / denominator


def roll(rng: random.Random, percent: float) -> bool:
    return percent >= 100 or (percent > 0 and rng.random() * 100 < percent)


def pick_weighted(clusters: list[Json], rng: random.Random) -> str:
    """Probability of each cluster = weight / sum of weights (relative weights, like Envoy)."""
    total = sum(c["weight"] for c in clusters)
    point = rng.random() * total
    for c in clusters:
        point -= c["weight"]
        if point < 0:
            return c["name"]
    return clusters[-1]["name"]


def select_route(pc: ProxyConfig, request: Request, port: int, rng: random.Random,
                 healthy: dict[str, int] | None = None) -> Decision:
    """Decide what `pc`'s proxy does with `request` arriving on listener `port`.

    `healthy` maps cluster → number of healthy endpoints; by default the translated endpoints count.
    """
    chains = pc.tls_chains.get(port) if pc.kind == "gateway" else None
    if chains is not None:
        return _tls_listener(pc, request, chains, rng, healthy)
    rc_name = pc.route_config_for(port, request.host if pc.kind == "sidecar" else "")
    if rc_name is None:
        return _no_listener(pc, port)
    return _http_route(pc, Decision(pc.proxy_id, rc_name), request, rng, healthy)


def sni_chain(chains: list[GatewayChain], server_name: str) -> GatewayChain | None:
    """Envoy's filter chain match on server_names: the exact name, else the longest `*.suffix` wildcard, else a
    chain that matches no name in particular."""
    name = server_name.lower().rstrip(".")
    candidates = [name] + ["*." + name.split(".", i)[i] for i in range(1, name.count(".") + 1)] if name else []
    for candidate in candidates:
        for chain in chains:
            if candidate in chain.server_names:
                return chain
    return next((c for c in chains if not c.server_names), None)


def _tls_listener(pc: ProxyConfig, request: Request, chains: list[GatewayChain], rng: random.Random,
                  healthy: dict[str, int] | None) -> Decision:
    """A gateway's TLS port: the filter chain for the request's SNI (its host, as clients send it); a terminating
    chain routes the decrypted request by its route config, a PASSTHROUGH chain proxies the stream as TCP."""
    if request.scheme != "https":  # no ClientHello, no SNI: only a chain without server names could take it
        return _local(Decision(pc.proxy_id, None), 0, "NR", "filter_chain_not_found")
    chain = sni_chain(chains, request.host)
    if chain is None:
        return _local(Decision(pc.proxy_id, None), 0, "NR", "filter_chain_not_found")
    if chain.route_config is None:
        d = Decision(pc.proxy_id, None)
        if len(chain.clusters) > 1:
            d.weighted = list(chain.clusters)
            d.cluster = pick_weighted([{"name": c, "weight": w} for c, w in chain.clusters], rng)
        else:
            d.cluster = chain.clusters[0][0]
        count = (healthy or {}).get(d.cluster) if healthy is not None else None
        if count is None:
            count = len(pc.endpoints.get(d.cluster, []))
        if d.cluster not in pc.clusters or count == 0:  # TCP proxy without an upstream: the connection closes
            return _local(d, 0, "UH" if d.cluster in pc.clusters else "NC", "no_healthy_upstream"
                          if d.cluster in pc.clusters else "cluster_not_found")
        return d
    d = Decision(pc.proxy_id, chain.route_config)
    if any(name not in pc.secrets for name in chain.credentials):
        return _local(d, 0, "-", "no_certificate")  # nothing served the Secret: the TLS handshake fails
    return _http_route(pc, d, request, rng, healthy)


def _http_route(pc: ProxyConfig, d: Decision, request: Request, rng: random.Random,
                healthy: dict[str, int] | None) -> Decision:
    rc_name = d.route_config or ""
    rc = pc.route_configs[rc_name]
    vh = select_virtual_host(rc, request)
    if vh is None:
        return _local(d, 404, "NR", "route_not_found")
    d.virtual_host = vh["name"]
    if vh.get("requireTls") == "ALL" and request.scheme != "https":  # Envoy redirects before route matching
        d.redirect = {"schemeRedirect": "https", "responseCode": "MOVED_PERMANENTLY"}
        return _local(d, 301, "-", "direct_response")
    for i, route in enumerate(vh.get("routes") or []):
        if route_matches(route["match"], request):
            d.route_index, d.route = i, route
            break
    else:
        return _local(d, 404, "NR", "route_not_found")
    return _apply_route(pc, d, route, rng, healthy)


def _no_listener(pc: ProxyConfig, port: int) -> Decision:
    """Traffic to a port with no HTTP route config: passthrough or blackhole, by outbound policy."""
    d = Decision(pc.proxy_id, None)
    if pc.kind == "gateway":
        return _local(d, 404, "NR", "filter_chain_not_found")
    if pc.outbound_policy == "REGISTRY_ONLY":
        d.cluster = BLACKHOLE
        return _local(d, 0, "UH", "no_healthy_upstream")  # TCP proxy to BlackHoleCluster: connection closed
    d.cluster = PASSTHROUGH
    return d


def _local(d: Decision, status: int, flags: str, details: str, body: str = "") -> Decision:
    d.status, d.flags, d.details, d.body = status, flags, details, body
    return d


def _apply_route(pc: ProxyConfig, d: Decision, route: Json, rng: random.Random,
                 healthy: dict[str, int] | None) -> Decision:
    d.request_headers_to_add = list(route.get("requestHeadersToAdd") or [])
    d.request_headers_to_remove = list(route.get("requestHeadersToRemove") or [])
    d.response_headers_to_add = list(route.get("responseHeadersToAdd") or [])
    if "directResponse" in route:
        dr = route["directResponse"]
        return _local(d, dr["status"], "-", "direct_response", (dr.get("body") or {}).get("inlineString", ""))
    if "redirect" in route:
        d.redirect = route["redirect"]
        code = {"MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303, "TEMPORARY_REDIRECT": 307,
                "PERMANENT_REDIRECT": 308}[route["redirect"].get("responseCode", "MOVED_PERMANENTLY")]
        return _local(d, code, "-", "direct_response")
    action = route["route"]
    if "weightedClusters" in action:
        clusters = action["weightedClusters"]["clusters"]
        d.weighted = [(c["name"], c["weight"]) for c in clusters]
        d.cluster = pick_weighted(clusters, rng)
        for c in clusters:
            if c["name"] == d.cluster:
                d.request_headers_to_add += c.get("requestHeadersToAdd") or []
                d.request_headers_to_remove += c.get("requestHeadersToRemove") or []
                d.response_headers_to_add += c.get("responseHeadersToAdd") or []
    else:
        d.cluster = action["cluster"]
    d.timeout_seconds = parse_duration(action.get("timeout", "0s"))
    d.retry_policy = action.get("retryPolicy")
    d.host_rewrite = action.get("hostRewriteLiteral")
    d.path_rewrite = action.get("prefixRewrite")
    for policy in action.get("requestMirrorPolicies") or []:
        pct = fraction_percent((policy.get("runtimeFraction") or {}).get("defaultValue"))
        d.mirrors.append(MirrorDecision(policy["cluster"], pct, roll(rng, pct),
                                        not policy.get("disableShadowHostSuffixAppend", False)))
    fault = (route.get("typedPerFilterConfig") or {}).get(FAULT_FILTER)
    if fault:
        delay = 0.0
        if "delay" in fault and roll(rng, fraction_percent(fault["delay"].get("percentage"))):
            delay = parse_duration(fault["delay"]["fixedDelay"])
        abort = None
        if "abort" in fault and roll(rng, fraction_percent(fault["abort"].get("percentage"))):
            abort = fault["abort"]["httpStatus"]
        if delay or abort:
            d.fault = FaultDecision(delay, abort)
        if abort:
            return _local(d, abort, "FI" if not delay else "DI,FI", "fault_filter_abort", "fault filter abort")
    delayed = "DI," if d.fault and d.fault.delay_seconds else ""  # a delayed request keeps DI whatever follows
    if d.cluster not in pc.clusters:
        return _local(d, 503, delayed + "NC", "cluster_not_found")
    count = (healthy or {}).get(d.cluster) if healthy is not None else None
    if count is None:
        count = len(pc.endpoints.get(d.cluster, [])) if d.cluster != PASSTHROUGH else 1
    if count == 0:
        return _local(d, 503, delayed + "UH", "no_healthy_upstream", "no healthy upstream")
    if delayed:
        d.flags = "DI"
    return d
