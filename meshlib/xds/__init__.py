"""Translation of the store into Envoy-shaped config, per proxy (like istiod)."""

from meshlib.xds.build import build_proxy_config, find_proxy
from meshlib.xds.model import EndpointRef, ProxyConfig, RouteOrigin

__all__ = ["EndpointRef", "ProxyConfig", "RouteOrigin", "build_proxy_config", "find_proxy"]
