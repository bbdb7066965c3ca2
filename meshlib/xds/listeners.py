"""Listeners: the gateway's HTTP ports and a sidecar's outbound/inbound listeners, with their HTTP filters."""

from __future__ import annotations

from meshlib.config.store import ConfigStore, ServiceInfo, Workload
from meshlib.xds.accesslog import istio_text_log
from meshlib.xds.model import GatewayChain, Json, ProxyConfig, SniffedPort
from meshlib.xds.naming import inbound_cluster, inbound_route_config, outbound_cluster

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "envoy.filters.http.router"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS = "envoy.filters.http.cors"
CORS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_INSPECTOR = {"name": "envoy.filters.listener.http_inspector", "typedConfig": {
    "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}
PLAINTEXT_HTTP_ALPNS = ["http/1.0", "http/1.1", "h2c"]
# Istio's chain without its own extensions (metadata exchange, stats): fault, CORS, router.
HTTP_FILTERS: list[Json] = [{"name": FAULT, "typedConfig": {"@type": FAULT_TYPE}},
                            {"name": CORS, "typedConfig": {"@type": CORS_TYPE}},
                            {"name": ROUTER, "typedConfig": {"@type": ROUTER_TYPE}}]


def hcm(stat_prefix: str, rds: str, pc: ProxyConfig, *, gateway: bool = False) -> Json:
    """An HTTP connection manager whose routes come by RDS (over ADS), as istiod builds it."""
    config: Json = {"@type": HCM_TYPE, "statPrefix": stat_prefix,
                    "rds": {"configSource": {"ads": {}, "initialFetchTimeout": "0s", "resourceApiVersion": "V3"},
                            "routeConfigName": rds},
                    "httpFilters": [dict(f) for f in HTTP_FILTERS],
                    "useRemoteAddress": gateway,
                    "normalizePath": True,
                    "pathWithEscapedSlashesAction": "KEEP_UNCHANGED",
                    "streamIdleTimeout": "0s",
                    "upgradeConfigs": [{"upgradeType": "websocket"}]}
    if gateway:
        config["serverName"] = "istio-envoy"
        # Envoy before 1.33 treated private and loopback peers as internal by default (so their x-request-id
        # and x-envoy-* headers are kept); Envoy 1.40 trusts no one unless told. Say it, as those releases did.
        config["internalAddressConfig"] = {"cidrRanges": [
            {"addressPrefix": prefix, "prefixLen": length}
            for prefix, length in (("10.0.0.0", 8), ("172.16.0.0", 12), ("192.168.0.0", 16), ("127.0.0.0", 8))]}
    if pc.access_log:
        config["accessLog"] = [istio_text_log(pc.profile_minor)]
    return {"name": HCM, "typedConfig": config}


def _listener(name: str, port: int, filters: list[Json], **extra: object) -> Json:
    return {"name": name, "address": {"socketAddress": {"address": "0.0.0.0", "portValue": port}},
            "filterChains": [{"filters": filters}], **extra}


def gateway_listener(port: int, route_config: str, pc: ProxyConfig) -> Json:
    return _listener(f"0.0.0.0_{port}", port, [hcm(f"outbound_0.0.0.0_{port}", route_config, pc, gateway=True)],
                     trafficDirection="OUTBOUND")


TLS_INSPECTOR = {"name": "envoy.filters.listener.tls_inspector", "typedConfig": {
    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}
TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
ALPN_HTTP = ["h2", "http/1.1"]  # networking/util ALPNHttp


def sds_secret(resource: str) -> Json:
    """security/model ConstructSdsSecretConfigForCredential: the key pair over ADS (no initialFetchTimeout, so a
    Secret that does not exist holds the listener only for Envoy's default 15 s)."""
    return {"name": resource, "sdsConfig": {"ads": {}, "resourceApiVersion": "V3"}}


def https_chain(chain: GatewayChain, stat_prefix: str, tls_params: Json, pc: ProxyConfig) -> Json:
    """A TLS-terminating server's filter chain (gateway.go createGatewayHTTPFilterChainOpts, listener.go
    BuildListenerTLSContext): SNI match on the server's hosts, its key pair by SDS, ALPN h2 and http/1.1, and the
    gateway's connection manager on the server's own route config."""
    common: Json = {"alpnProtocols": list(ALPN_HTTP),
                    "tlsCertificateSdsSecretConfigs": [sds_secret(r) for r in chain.credentials]}
    if tls_params:
        common["tlsParams"] = tls_params
    out: Json = {}
    if chain.server_names:
        out["filterChainMatch"] = {"serverNames": list(chain.server_names)}
    out["filters"] = [hcm(stat_prefix, chain.route_config or "", pc, gateway=True)]
    out["transportSocket"] = {"name": TLS_SOCKET, "typedConfig": {
        "@type": DOWNSTREAM_TLS_TYPE, "commonTlsContext": common, "requireClientCertificate": False}}
    return out


def passthrough_chain(chain: GatewayChain, stat_prefix: str, weighted: bool, pc: ProxyConfig) -> Json:
    """A PASSTHROUGH filter chain (gateway.go buildGatewayNetworkFiltersFromTLSRoutes, networkfilter.go
    buildOutboundNetworkFilters): SNI match on the route's `sniHosts`, TCP proxy to its destination, or to its
    destinations by weight."""
    config: Json = {"@type": TCP_PROXY_TYPE, "statPrefix": stat_prefix}
    if weighted:
        config["weightedClusters"] = {"clusters": [{"name": c, "weight": w} for c, w in chain.clusters]}
    else:
        config["cluster"] = chain.clusters[0][0]
    if pc.access_log:
        config["accessLog"] = [istio_text_log(pc.profile_minor)]
    out: Json = {}
    if chain.server_names:
        out["filterChainMatch"] = {"serverNames": list(chain.server_names)}
    out["filters"] = [{"name": TCP_PROXY, "typedConfig": config}]
    return out


def gateway_tls_listener(port: int, chains: list[Json]) -> Json:
    """A gateway port whose servers use TLS: one filter chain per server (or per PASSTHROUGH route match), picked by
    SNI, which the TLS inspector reads (listener.go buildListener)."""
    return {"name": f"0.0.0.0_{port}", "address": {"socketAddress": {"address": "0.0.0.0", "portValue": port}},
            "filterChains": chains, "trafficDirection": "OUTBOUND", "listenerFilters": [dict(TLS_INSPECTOR)]}


def sidecar_listeners(workload: Workload, pc: ProxyConfig) -> list[Json]:
    out = [_listener(f"0.0.0.0_{port}", port, [hcm(f"outbound_0.0.0.0_{port}", rc, pc)],
                     trafficDirection="OUTBOUND", bindToPort=False)
           for port, rc in sorted(pc.listener_ports.items())]
    out += [sniffed_listener(s, pc) for s in pc.sniffed]
    out.append(_listener("virtualOutbound", 15001, [], trafficDirection="OUTBOUND", useOriginalDst=True))
    inbound_chains = [{"filterChainMatch": {"destinationPort": p}, "name": f"0.0.0.0_{p}",
                       "filters": [hcm(f"inbound_0.0.0.0_{p}", inbound_route_config(p), pc)]}
                      for p in sorted(set(workload.container_ports()))]
    inbound = _listener("virtualInbound", 15006, [], trafficDirection="INBOUND", useOriginalDst=True)
    inbound["filterChains"] = inbound_chains
    out.append(inbound)
    return out


def sniffed_listener(port: SniffedPort, pc: ProxyConfig) -> Json:
    """A sniffed Service port's listener on its VIP (listener.go, ListenerProtocolAuto): the HTTP inspector picks
    the HTTP chain (route config `<fqdn>:<port>`) for plaintext HTTP; anything else is proxied as TCP."""
    cluster = outbound_cluster(port.port, "", port.host)
    http = {"filterChainMatch": {"transportProtocol": "raw_buffer", "applicationProtocols": PLAINTEXT_HTTP_ALPNS},
            "filters": [hcm(f"outbound_{port.listener}", port.route_config, pc)]}
    tcp = {"filters": [{"name": TCP_PROXY, "typedConfig": {"@type": TCP_PROXY_TYPE, "statPrefix": cluster,
                                                            "cluster": cluster}}]}
    out = _listener(port.listener, port.port, [], trafficDirection="OUTBOUND", bindToPort=False,
                    listenerFilters=[HTTP_INSPECTOR], listenerFiltersTimeout="0s", defaultFilterChain=tcp)
    out["address"]["socketAddress"]["address"] = port.address
    out["filterChains"] = [http]
    return out


def inbound_route_configs(store: ConfigStore, workload: Workload, pc: ProxyConfig) -> None:
    """One route config per container port: every request to the app on that port (istiod's inbound HTTP routes)."""
    for port in sorted(set(workload.container_ports())):
        services = inbound_services(store, workload, port)
        host = services[0].host if services else "*"
        name = inbound_route_config(port)
        pc.route_configs[name] = {"name": name, "validateClusters": False, "virtualHosts": [{
            "name": f"inbound|http|{port}", "domains": ["*"], "routes": [{
                "name": "default", "match": {"prefix": "/"},
                "route": {"cluster": inbound_cluster(port), "timeout": "0s", "maxGrpcTimeout": "0s"},
                "decorator": {"operation": f"{host}:{port}/*"}}]}]}


def inbound_services(store: ConfigStore, workload: Workload, port: int) -> list[ServiceInfo]:
    """The Services that select `workload` and target its container `port`."""
    return [s for s in store.services() if s.namespace == workload.namespace and s.selector
            and all(workload.labels.get(k) == v for k, v in s.selector.items())
            and any(p.target_port == port for p in s.ports)]
