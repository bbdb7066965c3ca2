"""Route prediction in words: what a proxy would do with a request, and which manifest line decided it."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from meshlib.config.store import ConfigStore
from meshlib.errors import MeshlibError
from meshlib.router import Decision, Request, select_route
from meshlib.xds import ProxyConfig, build_proxy_config, find_proxy
from meshlib.xds.build import parse_proxy_ref
from meshlib.xds.dialect import match_text
from meshlib.xds.naming import parse_cluster

GATEWAY_NODE_PORTS = {30000: 80, 30005: 443}


def proxy_config(store: ConfigStore, proxy: str) -> ProxyConfig:
    workload = find_proxy(store, proxy)
    if workload is None:
        known = ", ".join(sorted(w.proxy_id for w in store.workloads()))
        raise MeshlibError(f"no proxy {proxy!r} in these manifests; known proxies: {known}")
    return build_proxy_config(store, workload)


def listener_port(pc: ProxyConfig, request: Request) -> int:
    """The listener a request lands on: for a gateway, the listener of the Gateway server port it addresses (the
    NodePort-like 30000/30005, or 80/443 by scheme, mapped to the server's target port); a plain-HTTP request to
    an unknown port lands on the gateway's only HTTP listener, if it has one. For a sidecar, the Host's port."""
    default = 443 if request.scheme == "https" else 80
    if pc.kind == "gateway":
        port = GATEWAY_NODE_PORTS.get(request.port or default, request.port or default)
        port = pc.gateway_ports.get(port, port)
        if port in pc.listener_ports or port in pc.tls_chains:
            return port
        if request.scheme != "https" and len(pc.listener_ports) == 1:
            return next(iter(pc.listener_ports))
        return 8080 if port == 80 and 8080 in pc.listener_ports else port
    return request.port or default


def decide(store: ConfigStore, proxy: str, request: Request, seed: int = 0) -> tuple[ProxyConfig, Decision]:
    pc = proxy_config(store, proxy)
    return pc, decide_on(pc, request, seed)


def decide_on(pc: ProxyConfig, request: Request, seed: int = 0) -> Decision:
    """What the proxy of `pc` does with `request`, on the listener the request lands on."""
    port = listener_port(pc, request)
    if pc.kind == "gateway" and port in pc.tls_chains and request.scheme == "http":
        request = replace(request, scheme="https")  # addressed to a TLS port: the client speaks TLS there
    return select_route(pc, request, port, random.Random(seed))


def describe_cluster(store: ConfigStore, pc: ProxyConfig, cluster: str) -> str:
    parsed = parse_cluster(cluster)
    if not parsed:
        return cluster
    _, port, subset, host = parsed
    pods = sorted({e.workload for e in pc.endpoints.get(cluster, []) if e.workload})
    ext = [e.external_host for e in pc.endpoints.get(cluster, []) if e.external_host]
    where = f"workloads {', '.join(pods)}" if pods else (f"external host {ext[0]}" if ext else "no endpoints")
    what = f"subset {subset} of {host}" if subset else host
    return f"{cluster}  ({what}, port {port}: {where})"


def explain_text(store: ConfigStore, proxy: str, request: Request) -> str:
    pc, d = decide(store, proxy, request)
    lines = []
    hdrs = ", ".join(f"{k}: {v}" for k, v in request.headers)
    lines.append(f"request      {request.method} {request.authority}{request.path}" + (f"  [{hdrs}]" if hdrs else ""))
    lines.append(f"proxy        {pc.proxy_id} ({pc.kind}), route config {d.route_config or '-'}")
    if d.virtual_host:
        lines.append(f"virtual host {d.virtual_host}")
    if d.route is not None:
        origin = pc.origin(d.route_config or "", d.virtual_host or "", d.route_index or 0)
        if origin is not None:
            res = origin.resource
            path = ("http", origin.rule_index) + (("match", origin.match_index)
                                                  if origin.match_index is not None else ())
            which = f"rule #{origin.rule_index}" + (f" match #{origin.match_index}"
                                                   if origin.match_index is not None else "")
            lines.append(f"rule         {which.removeprefix('rule ')} of VirtualService "
                         f"{res.namespace}/{res.name} ({res.where(*path)})")
        else:
            lines.append(f"rule         {d.route_name or 'default'} (no VirtualService: the service's default route)")
        lines.append(f"match        {match_text(d.route['match'])}")
    if d.weighted:
        total = sum(w for _, w in d.weighted)
        for name, w in d.weighted:
            lines.append(f"weight       {100 * w / total:5.1f}%  {describe_cluster(store, pc, name)}")
    elif d.cluster and d.route is not None and "route" in d.route:
        lines.append(f"destination  {describe_cluster(store, pc, d.cluster)}")
    elif d.cluster and d.route is None and d.route_config is None and pc.kind == "gateway":
        lines.append(f"destination  {describe_cluster(store, pc, d.cluster)}  (TLS passthrough by SNI: the "
                     "encrypted stream as it came)")
    for m in d.mirrors:
        suffix = "Host gets -shadow" if m.shadow_suffix else "Host unchanged"
        lines.append(f"mirror       {m.percent:g}% of requests copied to {m.cluster} ({suffix}; response dropped)")
    if d.fault:
        lines.append(f"fault        delay {d.fault.delay_seconds:g}s, abort {d.fault.abort_status or '-'}")
    if d.route is not None and "route" in d.route:
        lines.append(f"timeout      {'none' if not d.timeout_seconds else f'{d.timeout_seconds:g}s'}")
        rp = d.retry_policy
        lines.append("retries      " + (f"{rp['numRetries']} on {rp['retryOn']}"
                                         + (f" + status {rp['retriableStatusCodes']}"
                                            if rp.get("retriableStatusCodes") else "") if rp else "none"))
    lines.append(f"outcome      {outcome_text(d)}")
    return "\n".join(lines)


def outcome_text(d: Decision) -> str:
    if d.status is None:
        return "forwarded upstream" + (" (one of the weighted clusters, by weight)" if d.weighted else "")
    reasons = {
        "route_not_found": "no virtual host or route matches",
        "cluster_not_found": f"the route's cluster {d.cluster} does not exist (no DestinationRule subset?)",
        "no_healthy_upstream": f"cluster {d.cluster} has no healthy endpoints",
        "direct_response": "answered by the proxy itself",
        "fault_filter_abort": "fault injection abort",
        "filter_chain_not_found": "no listener or filter chain for this port (and SNI)",
        "no_certificate": "the gateway has no key pair for this server (its Secret is missing): the TLS "
                          "handshake fails",
    }
    status = "connection closed" if d.status == 0 else str(d.status)
    return f"{status} {d.flags} {d.details}: {reasons.get(d.details, '')}".rstrip(": ")


def explain_json(store: ConfigStore, proxy: str, request: Request) -> dict[str, Any]:
    pc, d = decide(store, proxy, request)
    origin = pc.origin(d.route_config or "", d.virtual_host or "", d.route_index or 0) if d.route else None
    return {
        "proxy": pc.proxy_id, "routeConfig": d.route_config, "virtualHost": d.virtual_host,
        "routeName": d.route_name, "virtualService": d.virtual_service,
        "source": str(origin.resource.where("http", origin.rule_index)) if origin else None,
        "cluster": d.cluster if not d.weighted else None,
        "weightedClusters": [{"name": n, "weight": w} for n, w in d.weighted],
        "mirrors": [{"cluster": m.cluster, "percent": m.percent, "shadowSuffix": m.shadow_suffix}
                    for m in d.mirrors],
        "timeoutSeconds": d.timeout_seconds, "retryPolicy": d.retry_policy,
        "outcome": {"status": d.status, "flags": d.flags, "details": d.details} if d.status is not None
        else {"forwarded": True},
    }


def proxy_workload_ref(ref: str, default_namespace: str) -> tuple[str, str]:
    """`deploy/NAME.NS`, `deploy/NAME`, `NAME.NS` or `NAME` → (NAME, NS), NS defaulting like `-n`."""
    name, ns = parse_proxy_ref(ref)
    return name, ns or default_namespace
