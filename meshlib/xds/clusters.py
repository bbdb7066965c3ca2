"""Outbound, inbound and special clusters of a proxy, with their endpoints (istio-semantics.md §2, §5)."""

from __future__ import annotations

from meshlib.config.hosts import fqdn
from meshlib.config.store import ConfigStore, ServiceInfo, Workload
from meshlib.xds.listeners import inbound_services
from meshlib.xds.model import EndpointRef, Json, ProxyConfig
from meshlib.xds.naming import BLACKHOLE, PASSTHROUGH, inbound_cluster, outbound_cluster
from meshlib.xds.policy import apply_policy, effective_policy

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


def destination_rules(store: ConfigStore, svc: ServiceInfo) -> list:
    return [dr for dr in store.of_kind("DestinationRule") if fqdn(dr.spec["host"], dr.namespace) == svc.host]


def cluster_policy(store: ConfigStore, host: str, port: int, subset: str = "") -> dict:
    """The merged traffic policy of `outbound|port|subset|host` (the first DestinationRule for the host)."""
    drs = [dr for dr in store.of_kind("DestinationRule") if fqdn(dr.spec["host"], dr.namespace) == host]
    return effective_policy(drs[0].spec if drs else None, port, subset)


def _outbound(store: ConfigStore, svc: ServiceInfo, port: int, subset: str, dr_spec: dict | None,
              pc: ProxyConfig) -> Json:
    name = outbound_cluster(port, subset, svc.host)
    cluster = _cluster(name, svc.resolution, svc, store.profile.default_lb_policy)
    policy = effective_policy(dr_spec, port, subset)
    apply_policy(cluster, policy, store.profile.default_lb_policy)
    # istiod prioritizes endpoints by locality only with outlier detection (else nothing would fail over)
    setting = (policy.get("loadBalancer") or {}).get("localityLbSetting") or {}
    if "outlierDetection" in cluster and setting.get("enabled") is not False:
        pc.locality_lb[name] = setting
        if setting.get("distribute"):  # weights per locality instead of failover priorities (loadbalancer.go)
            cluster.setdefault("commonLbConfig", {})["localityWeightedLbConfig"] = {}
    return cluster


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
        dr_spec = drs[0].spec if drs else None
        for sp in svc.ports:
            name = outbound_cluster(sp.port, "", svc.host)
            pc.clusters[name] = _outbound(store, svc, sp.port, "", dr_spec, pc)
            pc.endpoints[name] = _endpoints(store, svc, sp.port, None)
            for subset in (dr_spec or {}).get("subsets") or []:
                sname = outbound_cluster(sp.port, subset["name"], svc.host)
                pc.clusters[sname] = _outbound(store, svc, sp.port, subset["name"], dr_spec, pc)
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
