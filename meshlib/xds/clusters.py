"""Outbound, inbound and special clusters of a proxy, with their endpoints (istio-semantics.md §2, §5)."""

from __future__ import annotations

from meshlib.config.hosts import fqdn
from meshlib.config.store import ConfigStore, ServiceInfo, Workload
from meshlib.xds.listeners import inbound_services
from meshlib.xds.model import EndpointRef, Json, ProxyConfig
from meshlib.xds.naming import BLACKHOLE, PASSTHROUGH, inbound_cluster, outbound_cluster

MAX = 4294967295


def _cluster(name: str, kind: str, svc: ServiceInfo | None, lb: str) -> Json:
    c: Json = {"name": name, "type": kind}
    if kind == "EDS":
        c["edsClusterConfig"] = {"edsConfig": {"ads": {}, "initialFetchTimeout": "0s", "resourceApiVersion": "V3"},
                                 "serviceName": name}
    c["connectTimeout"] = "10s"
    if kind != "ORIGINAL_DST":
        c["lbPolicy"] = lb
    else:
        c["lbPolicy"] = "CLUSTER_PROVIDED"
    c["circuitBreakers"] = {"thresholds": [{"maxConnections": MAX, "maxPendingRequests": MAX,
                                            "maxRequests": MAX, "maxRetries": MAX, "trackRemaining": True}]}
    c["commonLbConfig"] = {}
    if svc is not None:
        c["metadata"] = {"filterMetadata": {"istio": {"services": [
            {"host": svc.host, "name": svc.name, "namespace": svc.namespace}]}}}
    return c


def _lb_policy(store: ConfigStore, policy: dict | None) -> str:
    simple = ((policy or {}).get("loadBalancer") or {}).get("simple")
    mapping = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST",
               "RANDOM": "RANDOM", "PASSTHROUGH": "CLUSTER_PROVIDED"}
    return mapping.get(simple or "", store.profile.default_lb_policy)


def destination_rules(store: ConfigStore, svc: ServiceInfo) -> list:
    return [dr for dr in store.of_kind("DestinationRule") if fqdn(dr.spec["host"], dr.namespace) == svc.host]


def _endpoints(store: ConfigStore, svc: ServiceInfo, port: int, subset_labels: dict | None) -> list[EndpointRef]:
    sp = svc.port(port)
    target = sp.target_port if sp else port
    if svc.origin is not None and svc.origin.kind == "ServiceEntry" and not svc.selector:
        return [EndpointRef(None, svc.namespace, target, external_host=svc.host)]
    return [EndpointRef(w.name, w.namespace, target, tuple(sorted(w.labels.items())))
            for w in store.service_workloads(svc, subset_labels) if w.replicas > 0]


def build_clusters(store: ConfigStore, workload: Workload, services: list[ServiceInfo], pc: ProxyConfig) -> None:
    for svc in sorted(services, key=lambda s: s.host):
        drs = destination_rules(store, svc)
        dr = drs[0] if drs else None
        base_policy = dr.spec.get("trafficPolicy") if dr else None
        for sp in svc.ports:
            name = outbound_cluster(sp.port, "", svc.host)
            pc.clusters[name] = _cluster(name, svc.resolution, svc, _lb_policy(store, base_policy))
            pc.endpoints[name] = _endpoints(store, svc, sp.port, None)
            for subset in (dr.spec.get("subsets") or []) if dr else []:
                sname = outbound_cluster(sp.port, subset["name"], svc.host)
                policy = subset.get("trafficPolicy") or base_policy
                pc.clusters[sname] = _cluster(sname, svc.resolution, svc, _lb_policy(store, policy))
                pc.endpoints[sname] = _endpoints(store, svc, sp.port, subset.get("labels") or {})
    pc.clusters[BLACKHOLE] = {"name": BLACKHOLE, "type": "STATIC", "connectTimeout": "10s"}
    pc.endpoints[BLACKHOLE] = []
    pc.clusters[PASSTHROUGH] = {"name": PASSTHROUGH, "type": "ORIGINAL_DST", "connectTimeout": "10s",
                                "lbPolicy": "CLUSTER_PROVIDED"}
    pc.endpoints[PASSTHROUGH] = []
    if workload.is_gateway:
        return
    for name in store.profile.inbound_passthrough_clusters:
        pc.clusters[name] = {"name": name, "type": "ORIGINAL_DST", "connectTimeout": "10s",
                             "lbPolicy": "CLUSTER_PROVIDED"}
    for port in sorted(set(workload.container_ports())):
        name = inbound_cluster(port)
        pc.clusters[name] = {"name": name, "type": "ORIGINAL_DST", "connectTimeout": "10s",
                             "lbPolicy": "CLUSTER_PROVIDED", "metadata": {"filterMetadata": {"istio": {"services": [
                                 {"host": s.host, "name": s.name, "namespace": s.namespace}
                                 for s in inbound_services(store, workload, port)]}}}}
        pc.endpoints[name] = [EndpointRef(workload.name, workload.namespace, port,
                                          tuple(sorted(workload.labels.items())))]
