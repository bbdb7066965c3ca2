"""The two JSON dialects of the same config: istioctl's camelCase arrays and Envoy's snake_case config_dump."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from meshlib.xds.model import ProxyConfig

# Fields whose values are maps keyed by data (filter names, metadata namespaces), not proto fields.
MAP_FIELDS = {"filterMetadata", "typedFilterMetadata", "typedPerFilterConfig"}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
ADMIN = "type.googleapis.com/envoy.admin.v3."


def snake(name: str) -> str:
    return _CAMEL.sub(r"_\1", name).lower()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def to_camel(value: Any) -> Any:
    """Envoy's snake_case proto JSON to istioctl's camelCase (data-keyed maps and `@type` kept)."""
    return _rename_fields(value, camel)


def from_config_dump(dump: dict[str, Any], proxy_id: str, kind: str, namespace: str) -> ProxyConfig:
    """A running Envoy's `/config_dump` as a ProxyConfig, so the istioctl tables and JSON show what runs."""
    pc = ProxyConfig(proxy_id, kind, namespace, {})
    for section in dump.get("configs") or []:
        kind_name = (section.get("@type") or "").rsplit(".", 1)[-1]
        if kind_name == "ListenersConfigDump":
            for entry in section.get("static_listeners") or []:
                pc.listeners.append(_strip_type(to_camel(entry.get("listener") or {})))
            for entry in section.get("dynamic_listeners") or []:
                active = (entry.get("active_state") or {}).get("listener")
                if active:
                    pc.listeners.append(_strip_type(to_camel(active)))
        elif kind_name == "ClustersConfigDump":
            for entry in (section.get("static_clusters") or []) + (section.get("dynamic_active_clusters") or []):
                cluster = _strip_type(to_camel(entry.get("cluster") or {}))
                pc.clusters[cluster["name"]] = cluster
        elif kind_name == "RoutesConfigDump":
            for entry in section.get("dynamic_route_configs") or []:
                rc = _strip_type(to_camel(entry.get("route_config") or {}))
                pc.route_configs[rc["name"]] = rc
    return pc


def _strip_type(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "@type"}


def to_snake(value: Any) -> Any:
    """Convert every proto field name to snake_case, keeping data-keyed maps and `@type` intact."""
    return _rename_fields(value, snake)


def _rename_fields(value: Any, rename: Callable[[str], str]) -> Any:
    """Rename proto field names throughout `value`; keys of data-keyed maps (MAP_FIELDS) and `@type` stay."""
    if isinstance(value, list):
        return [_rename_fields(v, rename) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    for key, v in value.items():
        if not isinstance(key, str):  # no proto field (a YAML `1:` in an EnvoyFilter value): kept for Envoy to refuse
            out[key] = _rename_fields(v, rename)
        elif key.startswith("@"):
            out[key] = v
        elif camel(key) in MAP_FIELDS and isinstance(v, dict):
            out[rename(key)] = {k: _rename_fields(x, rename) for k, x in v.items()}
        else:
            out[rename(key)] = _rename_fields(v, rename)
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
        addr = (lst.get("address") or {}).get("socketAddress")
        host, port = (addr["address"], str(addr.get("portValue", 0))) if addr else ("internal", "-")
        for chain in lst.get("filterChains") or [{}]:
            configs = [f.get("typedConfig", {}) for f in chain.get("filters") or []]
            rds = [c["rds"]["routeConfigName"] for c in configs if "rds" in c]
            rds += [c["routeConfig"].get("name", "inline") for c in configs if "routeConfig" in c]
            rows.append((host, str((chain.get("filterChainMatch") or {}).get("destinationPort") or port),
                         lst["name"], ", ".join(rds) or "-"))
    return _table(rows)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def endpoints_table(pc: ProxyConfig, dump: dict[str, Any] | None = None) -> str:
    """istioctl's `proxy-config endpoints`: ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER.

    From a running Envoy's dump (with EDS) when given; offline, the workloads that would back each cluster."""
    rows = [("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER")]
    if dump is not None:
        for section in dump.get("configs") or []:
            if not (section.get("@type") or "").endswith("EndpointsConfigDump"):
                continue
            for entry in (section.get("static_endpoint_configs") or []) + \
                    (section.get("dynamic_endpoint_configs") or []):
                cla = entry.get("endpoint_config") or {}
                for group in cla.get("endpoints") or []:
                    for lb in group.get("lb_endpoints") or []:
                        sock = ((lb.get("endpoint") or {}).get("address") or {}).get("socket_address") or {}
                        where = f"{sock.get('address', 'internal')}:{sock.get('port_value', '-')}"
                        rows.append((where, lb.get("health_status", "HEALTHY"), "OK", cla.get("cluster_name", "")))
        return _table(rows)
    for cluster, refs in pc.endpoints.items():
        for ref in refs:
            where = ref.external_host or f"deploy/{ref.workload}.{ref.namespace}"
            rows.append((f"{where}:{ref.port}", "HEALTHY", "OK", cluster))
    return _table(rows)


def render(pc: ProxyConfig, what: str, output: str, name: str | None = None,
           dump: dict[str, Any] | None = None) -> str:
    """`proxy-config WHAT -o OUTPUT`: istioctl's tables, its JSON, or Envoy's own config_dump."""
    if output == "config_dump":
        return json.dumps(dump if dump is not None else config_dump(pc), indent=2)
    if output == "json":
        data = {"routes": istioctl_routes(pc, name), "clusters": istioctl_clusters(pc), "listeners": pc.listeners,
                "endpoints": [{"cluster": c, "endpoints": [ref.__dict__ for ref in refs]}
                              for c, refs in pc.endpoints.items()]}
        return json.dumps(data if what == "all" else data[what], indent=2, default=str)
    tables = {"listeners": lambda: listeners_table(pc), "routes": lambda: routes_table(pc, name),
              "clusters": lambda: clusters_table(pc), "endpoints": lambda: endpoints_table(pc, dump)}
    return "\n\n".join(fn() for key, fn in tables.items() if what in (key, "all"))
