"""Many proxies' xDS resources as one static Envoy bootstrap, so `envoy --mode validate` checks them all at once.

Each proxy's names (clusters, listeners, internal-listener targets) get a prefix `p<i>/` so that several proxies
fit one bootstrap; route configurations are inlined into their connection managers and EDS clusters carry their
endpoints. What Envoy checks is the resources as translated: fields, enums, regexes, domains, references.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from meshlib.xds.bind import Resources
from meshlib.xds.model import Json

INTERNAL_LISTENER = {"name": "envoy.bootstrap.internal_listener", "typedConfig": {
    "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}


def _rename_route_clusters(route_config: Json, prefix: str) -> Json:
    rc = copy.deepcopy(route_config)
    for vh in rc.get("virtualHosts") or []:
        for route in vh.get("routes") or []:
            action = route.get("route")
            if not action:
                continue
            if "cluster" in action:
                action["cluster"] = prefix + action["cluster"]
            for wc in (action.get("weightedClusters") or {}).get("clusters") or []:
                wc["name"] = prefix + wc["name"]
            for mirror in action.get("requestMirrorPolicies") or []:
                mirror["cluster"] = prefix + mirror["cluster"]
    return rc


def _static_listener(listener: Json, routes: dict[str, Json], prefix: str) -> Json:
    out = copy.deepcopy(listener)
    out["name"] = prefix + out["name"]
    chains = [*(out.get("filterChains") or []), *([out["defaultFilterChain"]] if "defaultFilterChain" in out else [])]
    for chain in chains:
        for f in chain.get("filters") or []:
            config = f.get("typedConfig") or {}
            if config.get("@type", "").endswith(".TcpProxy") and "cluster" in config:
                config["cluster"] = prefix + config["cluster"]
            elif config.get("@type", "").endswith(".TcpProxy") and "weightedClusters" in config:
                for wc in config["weightedClusters"].get("clusters") or []:
                    wc["name"] = prefix + wc["name"]
            elif "rds" in config:
                name = config.pop("rds")["routeConfigName"]
                config["routeConfig"] = _rename_route_clusters(routes.get(name) or {"name": name}, prefix)
            elif "routeConfig" in config:
                config["routeConfig"] = _rename_route_clusters(config["routeConfig"], prefix)
    return out


def _static_cluster(cluster: Json, endpoints: dict[str, Json], prefix: str) -> Json:
    out = copy.deepcopy(cluster)
    if out.get("type") == "EDS":
        out["type"] = "STATIC"
        out.pop("edsClusterConfig", None)
        out["loadAssignment"] = copy.deepcopy(endpoints.get(out["name"]) or {"clusterName": out["name"]})
    out["name"] = prefix + out["name"]
    assignment = out.get("loadAssignment")
    if assignment:
        assignment["clusterName"] = out["name"]
        for group in assignment.get("endpoints") or []:
            for lb in group.get("lbEndpoints") or []:
                internal = lb["endpoint"]["address"].get("envoyInternalAddress")
                if internal:
                    internal["serverListenerName"] = prefix + internal["serverListenerName"]
    return out


def static_bootstrap(proxies: Sequence[Resources]) -> Json:
    """One bootstrap holding every proxy's listeners and clusters (give each proxy distinct pod addresses)."""
    listeners: list[Json] = []
    clusters: list[Json] = []
    for i, res in enumerate(proxies):
        prefix = f"p{i}/"
        routes = {rc["name"]: rc for rc in res.routes}
        endpoints = {e["clusterName"]: e for e in res.endpoints}
        listeners += [_static_listener(x, routes, prefix) for x in res.listeners]
        clusters += [_static_cluster(c, endpoints, prefix) for c in res.clusters]
    # a node, as Envoy needs one to subscribe to a key pair over SDS (a gateway's missing Secret)
    return {"node": {"id": "meshlib-validate", "cluster": "meshlib"}, "bootstrapExtensions": [INTERNAL_LISTENER],
            "staticResources": {"listeners": listeners, "clusters": clusters}}
