"""Istio's names for Envoy objects (istio-semantics.md §5)."""

from __future__ import annotations

PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
ALLOW_ANY_VHOST = "allow_any"
BLOCK_ALL_VHOST = "block_all"


def outbound_cluster(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster(port: int) -> str:
    return f"inbound|{port}||"


def inbound_route_config(port: int) -> str:
    return f"inbound|{port}||"


def parse_cluster(name: str) -> tuple[str, int, str, str] | None:
    """`outbound|80|version-v2|catalog…` → ("outbound", 80, "version-v2", "catalog…")."""
    parts = name.split("|")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def gateway_route_config(port: int) -> str:
    return f"http.{port}"



def gateway_https_route_config(number: int, port_name: str, gateway: str, namespace: str) -> str:
    """A TLS-terminating gateway server's own route config (model/gateway.go gatewayRDSRouteName, 1.13–1.28): the
    server's port number as written, not the port Envoy listens on."""
    return f"https.{number}.{port_name}.{gateway}.{namespace}"
