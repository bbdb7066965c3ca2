"""Listeners: the gateway's HTTP ports and a sidecar's outbound/inbound listeners."""

from __future__ import annotations

from meshlib.config.store import ConfigStore, Workload
from meshlib.xds.model import Json, ProxyConfig

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _hcm(stat_prefix: str, rds: str) -> Json:
    return {"name": HCM, "typedConfig": {"@type": HCM_TYPE, "statPrefix": stat_prefix,
                                         "rds": {"configSource": {"ads": {}, "resourceApiVersion": "V3"},
                                                 "routeConfigName": rds}}}


def _listener(name: str, port: int, filters: list[Json], **extra: object) -> Json:
    return {"name": name, "address": {"socketAddress": {"address": "0.0.0.0", "portValue": port}},
            "filterChains": [{"filters": filters}], **extra}


def gateway_listener(port: int, route_config: str) -> Json:
    return _listener(f"0.0.0.0_{port}", port, [_hcm(f"outbound_0.0.0.0_{port}", route_config)])


def sidecar_listeners(store: ConfigStore, workload: Workload, pc: ProxyConfig) -> list[Json]:
    out = [_listener(f"0.0.0.0_{port}", port, [_hcm(f"outbound_0.0.0.0_{port}", rc)],
                     trafficDirection="OUTBOUND", bindToPort=False)
           for port, rc in sorted(pc.listener_ports.items())]
    out.append(_listener("virtualOutbound", 15001, [], trafficDirection="OUTBOUND", useOriginalDst=True))
    inbound_chains = [{"filterChainMatch": {"destinationPort": p}, "filters": [_hcm(f"inbound_0.0.0.0_{p}",
                                                                                     f"inbound|{p}||")]}
                      for p in sorted(set(workload.container_ports()))]
    inbound = _listener("virtualInbound", 15006, [], trafficDirection="INBOUND", useOriginalDst=True)
    inbound["filterChains"] = inbound_chains
    out.append(inbound)
    return out
