"""The Envoy-shaped configuration of one proxy, as istiod would push it, plus where each route came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshlib.config.kinds import Resource

Json = dict[str, Any]


@dataclass(frozen=True)
class EndpointRef:
    """An upstream endpoint: pods of a workload on a port, or an external host served by a stand-in."""

    workload: str | None  # Deployment name; None for external hosts
    namespace: str
    port: int
    labels: tuple[tuple[str, str], ...] = ()
    external_host: str | None = None


@dataclass(frozen=True)
class RouteOrigin:
    """Which VirtualService rule (and which match entry of it) produced an Envoy route."""

    resource: Resource
    rule_index: int
    match_index: int | None


@dataclass(frozen=True)
class SniffedPort:
    """A Service port Istio sniffs (no protocol it knows from the name or appProtocol): its own outbound listener
    on the service VIP, `<vip>_<port>`, whose HTTP chain uses route config `<fqdn>:<port>`."""

    address: str  # the service VIP the listener binds
    port: int
    host: str  # the service's FQDN
    route_config: str
    names: tuple[str, ...]  # what a caller may write as the authority's host: FQDN, short aliases, VIP

    @property
    def listener(self) -> str:
        return f"{self.address}_{self.port}"


@dataclass(frozen=True)
class GatewayChain:
    """One filter chain of a gateway's TLS listener: the SNI names it matches (none: any) and what it does.

    A chain that terminates TLS (`route_config` set) hands requests to that route configuration with the key pair
    of `credentials` (SDS resource names); a PASSTHROUGH chain proxies the TCP stream to `clusters`
    (cluster, weight), picked by weight."""

    server_names: tuple[str, ...]
    route_config: str | None = None
    credentials: tuple[str, ...] = ()
    clusters: tuple[tuple[str, int], ...] = ()


@dataclass
class ProxyConfig:
    """Listeners, route configurations, clusters and endpoints of one proxy, in istioctl's camelCase."""

    proxy_id: str  # deploy/NAME.NAMESPACE
    kind: str  # "gateway" or "sidecar"
    namespace: str
    labels: dict[str, str]
    listeners: list[Json] = field(default_factory=list)
    route_configs: dict[str, Json] = field(default_factory=dict)
    clusters: dict[str, Json] = field(default_factory=dict)
    endpoints: dict[str, list[EndpointRef]] = field(default_factory=dict)
    origins: dict[tuple[str, str, int], RouteOrigin] = field(default_factory=dict)
    outbound_policy: str = "ALLOW_ANY"
    listener_ports: dict[int, str] = field(default_factory=dict)  # port -> route config name
    sniffed: list[SniffedPort] = field(default_factory=list)  # VIP listeners of sniffed Service ports
    access_log: bool = False  # Istio's TEXT access log on every HTTP connection manager
    # clusters whose endpoints are prioritized by locality (outlier detection on, localityLbSetting not disabled):
    # cluster -> the DestinationRule's localityLbSetting ({} for Istio's defaults)
    locality_lb: dict[str, Json] = field(default_factory=dict)
    profile_minor: int = 17  # the Istio minor release whose istiod shape this is
    not_applied: list[str] = field(default_factory=list)  # EnvoyFilter patches meshlib could not apply, and why
    # gateways: the filter chains of each TLS listener port, server port -> listener port, and the key pairs
    # (PEM cert, PEM key) the SDS resources of those chains name (a missing one: istiod serves nothing for it)
    tls_chains: dict[int, list[GatewayChain]] = field(default_factory=dict)
    gateway_ports: dict[int, int] = field(default_factory=dict)
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)

    def route_config_for(self, port: int, host: str = "") -> str | None:
        """The route config a request to `host`:`port` uses: a sniffed service's own, else the port's."""
        name = host.lower().rstrip(".")
        for s in self.sniffed:
            if s.port == port and name in s.names:
                return s.route_config
        return self.listener_ports.get(port)

    def origin(self, route_config: str, virtual_host: str, index: int) -> RouteOrigin | None:
        return self.origins.get((route_config, virtual_host, index))
