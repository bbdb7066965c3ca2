"""Bind one proxy's istiod-shaped config to the embedded mesh's loopback network: the xDS resources Envoy runs.

`build_proxy_config` says what istiod would send to a pod in a cluster. On the embedded mesh three things differ,
and only these are changed here (pure: config and addresses in, Envoy resources out):

- Addresses. Endpoints are the pods' own loopback IPs (127.x.y.z) with their containerPorts; the inbound listener
  binds the pod's IP on each containerPort and hands requests to the app, which listens on the same IP on a port
  of its own; a gateway's listener also binds the NodePort-like address users send to.
- Capture. Istio's iptables send an app's outbound connections to `virtualOutbound` (15001), which hands them to
  the per-port listeners `0.0.0.0_80`, `0.0.0.0_9080`, … by original destination port. Here the app uses its
  sidecar as an explicit HTTP proxy on the pod's IP:15001; that listener hands each request by the port of its
  authority to the same per-port listeners, which run as Envoy internal listeners with istiod's route configs.
- The internet. Whatever Istio would send outside the mesh (PassthroughCluster, DNS-resolved ServiceEntry hosts)
  goes to the mesh's local stand-in instead, so nothing leaves loopback.
- Key pairs. istiod hands a gateway its `credentialName` key pairs over SDS; here they are written into the
  listener's TLS context, and a chain whose Secret is missing keeps its SDS reference (nothing serves it, so that
  chain presents no certificate), with a short initial fetch timeout instead of Envoy's 15 s.

Every HTTP connection manager also writes meshlib's request records (`meshlib.xds.accesslog.record_log`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from meshlib.xds.accesslog import record_log
from meshlib.xds.listeners import HCM, HCM_TYPE, ROUTER, ROUTER_TYPE
from meshlib.xds.model import Json, ProxyConfig
from meshlib.xds.naming import BLACKHOLE, PASSTHROUGH, parse_cluster

CAPTURE_PORT = 15001
CAPTURE_LISTENER = "virtualOutbound"
CAPTURE_STAT_PREFIX = "capture"  # the capture listener's connection manager: the one that writes no records
CAPTURE_PREFIX = "meshlib-capture|"  # clusters that hand a request to a per-port internal listener
EXTERNAL_TYPES = {"STRICT_DNS", "LOGICAL_DNS", "ORIGINAL_DST", "DYNAMIC_FORWARD_PROXY"}
TYPE_URLS = {
    "clusters": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "endpoints": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "listeners": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "routes": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
}


@dataclass(frozen=True)
class PodEndpoint:
    """A ready pod as an endpoint: its loopback IP and its locality (region, zone, subzone)."""

    ip: str
    locality: tuple[str, str, str] = ("", "", "")


# Ready pods per (namespace, workload), in a stable order.
PodIndex = Mapping[tuple[str, str], Sequence[PodEndpoint]]


@dataclass(frozen=True)
class Placement:
    """Where one proxy runs: its pod's IP, where its app listens, where records go, where the internet is."""

    pod_ip: str
    records_path: str
    internet: tuple[str, int]
    app_ports: Mapping[int, tuple[str, int]] = field(default_factory=dict)  # containerPort -> where the app listens
    listen: Mapping[int, tuple[str, int]] = field(default_factory=dict)  # gateway listener port -> bind address
    locality: tuple[str, str, str] = ("", "", "")  # the proxy's own (region, zone, subzone)


@dataclass(frozen=True)
class Resources:
    """The four xDS resource lists of one proxy, in Envoy's JSON (camelCase, `@type` in typed configs)."""

    clusters: list[Json]
    endpoints: list[Json]
    listeners: list[Json]
    routes: list[Json]

    @property
    def version(self) -> str:
        """A content hash: the same resources always get the same version (nothing to push when unchanged)."""
        text = json.dumps([self.clusters, self.endpoints, self.listeners, self.routes], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def socket_address(ip: str, port: int) -> Json:
    return {"socketAddress": {"address": ip, "portValue": port}}


Locality = tuple[str, str, str]
Priority = Callable[[Locality, str], int]  # (endpoint locality, endpoint IP) -> priority, 0 first


def _lb_endpoints(addresses: list[tuple[str, int, Locality]], priority: Priority | None = None) -> list[Json]:
    groups: dict[tuple[Locality, int | None], list[Json]] = {}
    for ip, port, locality in addresses:
        key = (locality, priority(locality, ip) if priority is not None else None)
        groups.setdefault(key, []).append(
            {"endpoint": {"address": socket_address(ip, port)}, "healthStatus": "HEALTHY",
             "loadBalancingWeight": 1})
    out = []
    for ((region, zone, subzone), rank), eps in groups.items():
        group: Json = {"lbEndpoints": eps, "loadBalancingWeight": len(eps)}
        loc = {k: v for k, v in (("region", region), ("zone", zone), ("subZone", subzone)) if v}
        if loc:
            group["locality"] = loc
        if rank is not None:
            group["priority"] = rank
        out.append(group)
    if priority is not None:  # priorities without gaps, as istiod sends them
        ranks = {p: i for i, p in enumerate(sorted({g["priority"] for g in out}))}
        for g in out:
            g["priority"] = ranks[g["priority"]]
            if not g["priority"]:
                del g["priority"]
    return out


# failoverPriority keys that name the locality (from the node on a cluster, from pod labels here)
LOCALITY_KEYS = {"topology.kubernetes.io/region": 0, "topology.kubernetes.io/zone": 1, "topology.istio.io/subzone": 2}


def label_priority(proxy: Locality, proxy_labels: Mapping[str, str], keys: Sequence[str],
                   endpoint_labels: Mapping[str, Mapping[str, str]]) -> Priority:
    """istiod's `failoverPriority` (loadbalancer.go applyPriorityFailover): an endpoint that agrees with the proxy
    on the first m of the n labels, in order, gets priority n - m; locality keys compare localities."""
    def value(key: str, locality: Locality, labels: Mapping[str, str]) -> str:
        return locality[LOCALITY_KEYS[key]] if key in LOCALITY_KEYS else labels.get(key, "")

    def priority(locality: Locality, ip: str) -> int:
        labels = endpoint_labels.get(ip, {})
        for i, key in enumerate(keys):
            if value(key, locality, labels) != value(key, proxy, proxy_labels):
                return len(keys) - i
        return 0

    return priority


def failover_priority(proxy: Locality, setting: Json) -> Priority:
    """istiod's locality failover: the proxy's own subzone first, then its zone, its region, the region named
    by `failover` for the proxy's region, then everywhere else."""
    targets = {f.get("from"): f.get("to") for f in setting.get("failover") or []}

    def priority(locality: Locality, _ip: str = "") -> int:
        region, zone, subzone = locality
        if region == proxy[0]:
            if zone == proxy[1]:
                return 0 if subzone == proxy[2] else 1
            return 2
        return 3 if targets.get(proxy[0]) == region else 4

    return priority


def locality_matches(locality: tuple[str, str, str], pattern: str) -> bool:
    """`region/zone/subzone` with `*` for any segment; a trailing `*` (or fewer segments) covers the rest."""
    for have, want in zip(locality, pattern.split("/"), strict=False):
        if want == "*":
            return True
        if have != want:
            return False
    return True


def distribute(groups: list[Json], proxy: tuple[str, str, str], rules: list[Json]) -> list[Json]:
    """istiod's `localityLbSetting.distribute` (loadbalancer.go applyLocalityWeights): for the first rule whose
    `from` covers the proxy's locality, each `to` pattern's percentage is shared by the locality groups it covers
    (in proportion to their weights, rounded up); groups no pattern covers get no traffic."""
    for rule in rules:
        if not locality_matches(proxy, str(rule.get("from", ""))):
            continue
        weights: dict[int, int] = {}
        for pattern, share in (rule.get("to") or {}).items():
            covered = [i for i, g in enumerate(groups) if i not in weights and locality_matches(_locality(g), pattern)]
            total = sum(groups[i]["loadBalancingWeight"] for i in covered)
            for i in covered:
                weights[i] = math.ceil(groups[i]["loadBalancingWeight"] * int(share) / total) if total else 0
        return [{**g, "loadBalancingWeight": weights[i]} for i, g in enumerate(groups) if weights.get(i)]
    return groups


def _locality(group: Json) -> tuple[str, str, str]:
    loc = group.get("locality") or {}
    return loc.get("region", ""), loc.get("zone", ""), loc.get("subZone", "")


def _static(cluster: Json, addresses: list[tuple[str, int, tuple[str, str, str]]]) -> Json:
    out = {k: v for k, v in cluster.items() if k not in ("edsClusterConfig", "type")}
    out["type"] = "STATIC"
    if out.get("lbPolicy") == "CLUSTER_PROVIDED":
        del out["lbPolicy"]
    out["loadAssignment"] = {"clusterName": cluster["name"], "endpoints": _lb_endpoints(addresses)}
    return out


def _bind_clusters(pc: ProxyConfig, place: Placement, pods: PodIndex) -> tuple[list[Json], list[Json]]:
    internet = (*place.internet, ("", "", ""))
    clusters, endpoints = [], []
    for name, cluster in pc.clusters.items():
        refs = pc.endpoints.get(name, [])
        kind = cluster.get("type")
        parsed = parse_cluster(name)
        pods_behind = [(pod.ip, ref.port, pod.locality) for ref in refs if not ref.external_host
                       for pod in pods.get((ref.namespace, ref.workload or ""), ())]
        labels_of = {pod.ip: dict(ref.labels) for ref in refs if not ref.external_host
                     for pod in pods.get((ref.namespace, ref.workload or ""), ())}
        outbound = bool(parsed) and parsed[0] == "outbound"
        if outbound and kind == "ORIGINAL_DST" and pods_behind:  # PASSTHROUGH to a service: kube-proxy picks a pod
            clusters.append(_static(cluster, pods_behind))
        elif name == PASSTHROUGH or (kind in EXTERNAL_TYPES and outbound):
            clusters.append(_static(cluster, [internet]))
        elif parsed and parsed[0] == "inbound":
            app = place.app_ports.get(parsed[1])
            clusters.append(_static(cluster, [(*app, ("", "", ""))] if app else []))
        elif kind == "EDS":
            addresses = pods_behind + [internet for ref in refs if ref.external_host]
            clusters.append(copy.deepcopy(cluster))
            setting = pc.locality_lb.get(name)
            located = setting is not None and bool(place.locality[0])
            if located and setting.get("distribute"):
                groups = distribute(_lb_endpoints(addresses), place.locality, setting["distribute"])
            elif setting is not None and setting.get("failoverPriority"):
                groups = _lb_endpoints(addresses, label_priority(place.locality, pc.labels,
                                                                 setting["failoverPriority"], labels_of))
            else:
                groups = _lb_endpoints(addresses, failover_priority(place.locality, setting) if located else None)
            endpoints.append({"clusterName": name, "endpoints": groups})
        else:
            clusters.append(copy.deepcopy(cluster))
    return clusters, endpoints


def _with_records(listener: Json, place: Placement, direction: str) -> Json:
    for chain in listener.get("filterChains") or []:
        for f in chain.get("filters") or []:
            if f.get("name") == HCM:
                f["typedConfig"].setdefault("accessLog", []).append(record_log(place.records_path, direction))
    return listener


def _capture_cluster(listener: str) -> Json:
    name = f"{CAPTURE_PREFIX}{listener}"
    return {"name": name, "type": "STATIC", "connectTimeout": "10s",
            "loadAssignment": {"clusterName": name, "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {
                "envoyInternalAddress": {"serverListenerName": listener}}}}]}]}}


def _capture_listener(pc: ProxyConfig, place: Placement) -> Json:
    """The app-facing explicit proxy: a request for a sniffed service goes to that service's VIP listener, any
    other to the per-port listener of its authority's port (as iptables and 15001 hand them over)."""
    ports = sorted(pc.listener_ports)
    elsewhere = PASSTHROUGH if pc.outbound_policy != "REGISTRY_ONLY" else BLACKHOLE

    def to(cluster: str) -> Json:
        return {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}

    def port_listener(p: int) -> str:
        return f"{CAPTURE_PREFIX}0.0.0.0_{p}" if p in ports else elsewhere

    vhosts, named = [], set()
    for s in pc.sniffed:  # exact names win over the `*:<port>` patterns below, whatever the order
        domains = [d for n in s.names for d in ((f"{n}:{s.port}", n) if s.port == 80 else (f"{n}:{s.port}",))
                   if d not in named]
        named.update(domains)
        vhosts.append({"name": f"capture|{s.listener}", "domains": domains,
                       "routes": [to(f"{CAPTURE_PREFIX}{s.listener}")]})
    vhosts += [{"name": f"capture|{p}", "domains": [f"*:{p}"], "routes": [to(port_listener(p))]}
               for p in ports if p != 80]
    # no port (or :80): the port-80 listener; any other port has no listener, as with Istio's 15001 passthrough
    default_routes = [{"match": {"prefix": "/", "headers": [{"name": ":authority", "stringMatch": {
        "safeRegex": {"regex": r".*:[0-9]+"}}}]}, "route": {"cluster": elsewhere, "timeout": "0s"}}]
    default_routes.append(to(port_listener(80)))
    vhosts.append({"name": "capture|80", "domains": ["*:80"], "routes": [to(port_listener(80))]})
    vhosts.append({"name": "capture|default", "domains": ["*"], "routes": default_routes})
    manager = {"@type": HCM_TYPE, "statPrefix": CAPTURE_STAT_PREFIX, "streamIdleTimeout": "0s",
               "routeConfig": {"name": CAPTURE_LISTENER, "virtualHosts": vhosts},
               "httpFilters": [{"name": ROUTER, "typedConfig": {"@type": ROUTER_TYPE, "suppressEnvoyHeaders": True}}]}
    return {"name": CAPTURE_LISTENER, "address": socket_address(place.pod_ip, CAPTURE_PORT),
            "trafficDirection": "OUTBOUND", "filterChains": [{"filters": [{"name": HCM, "typedConfig": manager}]}]}


def _internal(listener: Json) -> Json:
    """An outbound listener as an internal listener the capture listener hands requests to. Only HTTP reaches
    it (apps speak to the capture listener as an HTTP proxy), so a sniffed listener keeps its HTTP chain alone."""
    for key in ("bindToPort", "address", "listenerFilters", "listenerFiltersTimeout", "defaultFilterChain"):
        listener.pop(key, None)
    for chain in listener["filterChains"]:
        chain.pop("filterChainMatch", None)
    listener["internalListener"] = {}
    return listener


MISSING_SECRET_WAIT = "1s"  # how long a listener waits for a key pair nothing serves (Envoy's default: 15 s)


def _with_key_pairs(listener: Json, pc: ProxyConfig) -> Json:
    """Each TLS context's SDS key pairs written inline; when one of a chain's Secrets is missing its SDS references
    stay, so Envoy waits (briefly) for them and then serves that chain without a certificate: its handshakes fail,
    as on a cluster where istiod has nothing to send for the name."""
    for chain in listener.get("filterChains") or []:
        context = ((chain.get("transportSocket") or {}).get("typedConfig") or {}).get("commonTlsContext")
        sds = (context or {}).get("tlsCertificateSdsSecretConfigs") or []
        if not sds:
            continue
        pairs = [pc.secrets.get(s["name"]) for s in sds]
        if all(pairs):
            del context["tlsCertificateSdsSecretConfigs"]
            context["tlsCertificates"] = [{"certificateChain": {"inlineString": cert},
                                           "privateKey": {"inlineString": key}} for cert, key in pairs]
        else:
            for s in sds:
                s["sdsConfig"]["initialFetchTimeout"] = MISSING_SECRET_WAIT
    return listener


def _bind_listeners(pc: ProxyConfig, place: Placement) -> tuple[list[Json], list[Json]]:
    listeners, extra_clusters = [], []
    for original in pc.listeners:
        listener = copy.deepcopy(original)
        name = listener["name"]
        port = listener["address"]["socketAddress"]["portValue"]
        if pc.kind == "gateway":
            listener["address"] = socket_address(*place.listen.get(port, (place.pod_ip, port)))
            listeners.append(_with_records(_with_key_pairs(listener, pc), place, "outbound"))
        elif name == CAPTURE_LISTENER:
            listeners.append(_capture_listener(pc, place))
        elif name == "virtualInbound":
            ports = [c["filterChainMatch"]["destinationPort"] for c in listener["filterChains"]]
            if not ports:
                continue
            listener.pop("useOriginalDst", None)
            listener["address"] = socket_address(place.pod_ip, ports[0])
            if ports[1:]:
                listener["additionalAddresses"] = [{"address": socket_address(place.pod_ip, p)} for p in ports[1:]]
            listeners.append(_with_records(listener, place, "inbound"))
        else:  # an outbound listener (per port, or a sniffed service's VIP): internal, behind the capture listener
            listeners.append(_with_records(_internal(listener), place, "outbound"))
            extra_clusters.append(_capture_cluster(name))
    return listeners, extra_clusters


def bind(pc: ProxyConfig, place: Placement, pods: PodIndex) -> Resources:
    """The xDS resources one proxy of the embedded mesh runs (see the module docstring for what differs)."""
    clusters, endpoints = _bind_clusters(pc, place, pods)
    listeners, capture = _bind_listeners(pc, place)
    routes = [copy.deepcopy(rc) for rc in pc.route_configs.values()]
    return Resources(clusters + capture, endpoints, listeners, routes)
