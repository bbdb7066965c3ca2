"""The two JSON dialects of the same config: istioctl's camelCase arrays and Envoy's snake_case config_dump."""

from __future__ import annotations

import re
from typing import Any

from meshlib.xds.model import ProxyConfig

# Fields whose values are maps keyed by data (filter names, metadata namespaces), not proto fields.
MAP_FIELDS = {"filterMetadata", "typedFilterMetadata", "typedPerFilterConfig"}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
ADMIN = "type.googleapis.com/envoy.admin.v3."


def snake(name: str) -> str:
    return _CAMEL.sub(r"_\1", name).lower()


def to_snake(value: Any) -> Any:
    """Convert every proto field name to snake_case, keeping data-keyed maps and `@type` intact."""
    if isinstance(value, list):
        return [to_snake(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key.startswith("@"):
            out[key] = v
        elif key in MAP_FIELDS:
            out[snake(key)] = {k: to_snake(x) for k, x in v.items()}
        else:
            out[snake(key)] = to_snake(v)
    return out


def istioctl_routes(pc: ProxyConfig, name: str | None = None) -> list[dict[str, Any]]:
    return [rc for rc in pc.route_configs.values() if name is None or rc["name"] == name]


def istioctl_clusters(pc: ProxyConfig) -> list[dict[str, Any]]:
    return list(pc.clusters.values())


def config_dump(pc: ProxyConfig) -> dict[str, Any]:
    """Envoy admin `/config_dump` shape (snake_case)."""
    listeners = [{"name": x["name"], "active_state": {"listener": {"@type": "type.googleapis.com/envoy.config."
                                                                    "listener.v3.Listener", **to_snake(x)}}}
                 for x in pc.listeners]
    clusters = [{"cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", **to_snake(c)}}
                for c in pc.clusters.values()]
    routes = [{"route_config": {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                                **to_snake(rc)}} for rc in pc.route_configs.values()]
    return {"configs": [
        {"@type": ADMIN + "ListenersConfigDump", "dynamic_listeners": listeners},
        {"@type": ADMIN + "ClustersConfigDump", "dynamic_active_clusters": clusters},
        {"@type": ADMIN + "RoutesConfigDump", "dynamic_route_configs": routes},
    ]}


def routes_table(pc: ProxyConfig, name: str | None = None) -> str:
    """istioctl's `proxy-config routes` table: NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE."""
    rows = [("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE")]
    for rc in istioctl_routes(pc, name):
        for vh in rc["virtualHosts"]:
            domains = vh["domains"]
            shown = domains[0] + (f" + {len(domains) - 1} more..." if len(domains) > 1 else "")
            for route in vh["routes"] or [{"match": {}}]:
                rows.append((rc["name"], vh["name"], shown, match_text(route.get("match") or {}),
                             vs_text(route)))
    return _table(rows)


def match_text(match: dict[str, Any]) -> str:
    if not match:
        return ""
    if "prefix" in match:
        path = match["prefix"] + "*"
    elif "path" in match:
        path = match["path"]
    else:
        path = match.get("safeRegex", {}).get("regex", "")
    extras = [f"{h['name']}={_sm(h)}" for h in match.get("headers") or []]
    return path + (" (" + ", ".join(extras) + ")" if extras else "")


def _sm(header: dict[str, Any]) -> str:
    if header.get("presentMatch"):
        return "*"
    sm = header.get("stringMatch") or {}
    for k in ("exact", "prefix"):
        if k in sm:
            return sm[k] + ("*" if k == "prefix" else "")
    return "/" + sm.get("safeRegex", {}).get("regex", "") + "/"


def vs_text(route: dict[str, Any]) -> str:
    path = (((route.get("metadata") or {}).get("filterMetadata") or {}).get("istio") or {}).get("config", "")
    parts = path.strip("/").split("/")
    if len(parts) >= 7:
        return f"{parts[6]}.{parts[4]}"
    return route.get("name") or ""


def clusters_table(pc: ProxyConfig) -> str:
    rows = [("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE")]
    for c in pc.clusters.values():
        parts = c["name"].split("|")
        if len(parts) == 4:
            rows.append((parts[3] or "", parts[1], parts[2] or "-", parts[0], c["type"]))
        else:
            rows.append((c["name"], "-", "-", "-", c["type"]))
    return _table(rows)


def listeners_table(pc: ProxyConfig) -> str:
    rows = [("ADDRESS", "PORT", "NAME", "ROUTE CONFIG")]
    for lst in pc.listeners:
        addr = lst["address"]["socketAddress"]
        for chain in lst["filterChains"] or [{}]:
            rds = [f["typedConfig"]["rds"]["routeConfigName"] for f in chain.get("filters") or []
                   if "rds" in f.get("typedConfig", {})]
            rows.append((addr["address"], str(addr["portValue"]), lst["name"], ", ".join(rds) or "-"))
    return _table(rows)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
