"""EnvoyFilter patches on a proxy's translated config, where upstream Envoy can take them (pure).

istiod applies EnvoyFilters last, to the xDS it generated (`pilot/pkg/networking/core/envoyfilter/`): filters
in the root namespace (istio-system) first, then the proxy's own namespace, each selected by
`workloadSelector` (none: every proxy of the namespace), ordered by `priority` then creation. meshlib
applies the `MERGE` patches of clusters, route configurations, virtual hosts and HTTP routes, with
protobuf's merge (messages merged field by field, repeated fields appended, scalars replaced); the value may
be written in Envoy's snake_case or camelCase, and its Duration fields in Go's syntax (`50ms`) as istiod reads
them (`_go_durations`). Every other patch (another `applyTo` or operation, a listener
or filter patch, which need Istio's own filters) is reported as not applied, with the reason, never silently
dropped. This covers the book's chapter-6 filters: retriable status codes and back-off on a route, a retry
budget on a cluster, hedging on a virtual host.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from typing import Any

from meshlib.config.kinds import Resource
from meshlib.config.store import ConfigStore
from meshlib.units import go_duration_ns, proto_duration
from meshlib.xds.dialect import to_camel
from meshlib.xds.model import Json, ProxyConfig
from meshlib.xds.naming import parse_cluster

ROOT_NAMESPACE = "istio-system"
APPLIED_TO = ("CLUSTER", "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")
CONTEXTS = ("ANY", "SIDECAR_OUTBOUND", "SIDECAR_INBOUND", "GATEWAY")


@dataclass(frozen=True)
class Skipped:
    """A patch meshlib did not apply, and why."""

    ref: str  # EnvoyFilter/name.namespace
    index: int  # which configPatches entry
    reason: str

    def __str__(self) -> str:
        return f"{self.ref} configPatches[{self.index}] not applied: {self.reason}"


def _get(obj: Any, name: str) -> Any:
    """A field written in camelCase or snake_case (Istio's API accepts both); None when `obj` is no mapping."""
    if not isinstance(obj, dict):
        return None
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return obj.get(name, obj.get(snake))


def _map(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else {}


def selected(filters: list[Resource], namespace: str, labels: dict[str, str]) -> list[Resource]:
    """The EnvoyFilters that apply to a proxy, in istiod's order."""
    def applies(f: Resource) -> bool:
        if f.namespace not in (ROOT_NAMESPACE, namespace):
            return False
        wanted = _map(_get(_spec(f), "workloadSelector")).get("labels")
        return all(labels.get(k) == v for k, v in _map(wanted).items())

    def priority(f: Resource) -> int:
        value = _get(_spec(f), "priority")
        return value if isinstance(value, int) else 0

    chosen = [f for f in filters if applies(f)]
    return sorted(chosen, key=lambda f: (f.namespace != ROOT_NAMESPACE, priority(f)))


def _spec(f: Resource) -> dict[str, Any]:
    """An EnvoyFilter is not modelled by the schema: its body is kept whole (`spec` holds the document's spec)."""
    body = f.spec.get("spec") if not f.modelled else f.spec
    return body if isinstance(body, dict) else {}


def merge(dst: Json, src: Json) -> None:
    """Protobuf merge of `src` into `dst`: messages field by field, repeated fields appended, scalars replaced."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict) and "@type" not in value:
            merge(dst[key], value)
        elif isinstance(value, list) and isinstance(dst.get(key), list):
            dst[key] = dst[key] + copy.deepcopy(value)
        else:
            dst[key] = copy.deepcopy(value)


def apply(pc: ProxyConfig, filters: list[Resource]) -> list[Skipped]:
    """Apply the MERGE patches of `filters` (already selected for this proxy) to `pc`; return the rest."""
    skipped: list[Skipped] = []
    for f in filters:
        for i, patch in enumerate(_get(_spec(f), "configPatches") or []):
            why = _apply_one(pc, patch) if isinstance(patch, dict) else unsupported(patch)
            if why:
                skipped.append(Skipped(f.ref(), i, why))
    return skipped


def envoy_filters(store: ConfigStore) -> list[Resource]:
    """Every stored EnvoyFilter (kept whole: the schema does not model the kind)."""
    return [r for r in store.not_modelled() if r.kind == "EnvoyFilter"]


def unsupported(patch: Any) -> str | None:
    """Why meshlib cannot apply this configPatches entry on any proxy, or None."""
    if not isinstance(patch, dict):
        return "a configPatches entry must be a mapping"
    apply_to = _get(patch, "applyTo")
    body = _get(patch, "patch")
    operation = _get(body, "operation")
    match = _get(patch, "match")
    if match is not None and not isinstance(match, dict):
        return "match must be a mapping"
    context = _get(match, "context") or "ANY"
    if apply_to not in APPLIED_TO:
        return f"applyTo {apply_to} is not supported by meshlib (only {', '.join(APPLIED_TO)})"
    if operation != "MERGE":
        return f"operation {operation} is not supported by meshlib (only MERGE)"
    if context not in CONTEXTS:
        return f"context {context} is not one of {', '.join(CONTEXTS)}"
    if not isinstance(_get(body, "value"), dict):
        return "patch.value must be a mapping of Envoy config"
    try:
        _envoy_value(apply_to, _get(body, "value"))
    except ValueError as exc:
        return f"patch.value {exc}"
    return None


def _envoy_value(apply_to: str, value: dict[str, Any]) -> Json:
    """A patch value in camelCase with its Duration fields in proto3 JSON form; ValueError names a bad one."""
    return _go_durations(to_camel(value), _descriptor(apply_to), "")


@cache
def _descriptor(apply_to: str) -> Any:
    """The Envoy message a patch value of `apply_to` is read as (istiod's BuildXDSObjectFromStruct)."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.route.v3 import route_components_pb2, route_pb2

    return {"CLUSTER": cluster_pb2.Cluster, "ROUTE_CONFIGURATION": route_pb2.RouteConfiguration,
            "VIRTUAL_HOST": route_components_pb2.VirtualHost, "HTTP_ROUTE": route_components_pb2.Route}[
        apply_to].DESCRIPTOR


def _go_durations(value: Any, descriptor: Any, path: str) -> Any:
    """`value` read as the message `descriptor` describes, with every google.protobuf.Duration written in Go's
    syntax (`50ms`, `1m30s`) turned into proto3 JSON (`0.050s`). istiod reads EnvoyFilter values with
    golang/protobuf's jsonpb (pilot/pkg/config/xds StructToMessage -> pkg/util/protomarshal), whose Duration
    case is Go's time.ParseDuration; Envoy, and proto3 JSON, take only seconds with an `s`. A string Go cannot
    read is a ValueError naming its field, as istiod's EnvoyFilter validation rejects it ("bad Duration").
    Fields the descriptor does not know, Struct values and Anys of unknown types are kept as written."""
    name = descriptor.full_name
    if name == "google.protobuf.Duration":
        if value is None:  # jsonpb reads a null message field as unset
            return value
        if not isinstance(value, str):
            raise ValueError(f"{path.lstrip('.')}: {value!r} is not a duration (write a string such as 50ms or 1s)")
        try:
            return proto_duration(go_duration_ns(value))
        except ValueError as exc:
            raise ValueError(f"{path.lstrip('.')}: {exc}") from None
    if not isinstance(value, dict) or name in ("google.protobuf.Struct", "google.protobuf.Value"):
        return value
    if name == "google.protobuf.Any":
        descriptor = _any_descriptor(value.get("@type"))
        if descriptor is None:
            return value
    fields = _fields(descriptor)
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = fields.get(key)
        if field is None or field.message_type is None:
            out[key] = item
        elif field.message_type.GetOptions().map_entry and isinstance(item, dict):
            entry = field.message_type.fields_by_name["value"].message_type
            out[key] = item if entry is None else {
                k: _go_durations(v, entry, f"{path}.{key}[{k}]") for k, v in item.items()}
        elif isinstance(item, list):
            out[key] = [_go_durations(v, field.message_type, f"{path}.{key}[{i}]") for i, v in enumerate(item)]
        else:
            out[key] = _go_durations(item, field.message_type, f"{path}.{key}")
    return out


@cache
def _fields(descriptor: Any) -> dict[str, Any]:
    return {**{f.name: f for f in descriptor.fields}, **{f.json_name: f for f in descriptor.fields}}


def _any_descriptor(type_url: Any) -> Any:
    if not isinstance(type_url, str):
        return None
    from google.protobuf import descriptor_pool

    try:
        return descriptor_pool.Default().FindMessageTypeByName(type_url.rsplit("/", 1)[-1])
    except KeyError:
        return None


def _apply_one(pc: ProxyConfig, patch: dict[str, Any]) -> str | None:
    why = unsupported(patch)
    if why:
        return why
    apply_to = _get(patch, "applyTo")
    match = _map(_get(patch, "match"))
    context = _get(match, "context") or "ANY"
    if (context == "GATEWAY") != (pc.kind == "gateway") and context != "ANY":
        return None  # not this proxy's context: nothing to do, nothing wrong
    value = _envoy_value(apply_to, _get(_get(patch, "patch"), "value"))
    if apply_to == "CLUSTER":
        for name, cluster in pc.clusters.items():
            if _cluster_matches(name, _map(_get(match, "cluster")), context):
                merge(cluster, value)
        return None
    for rc_name, rc in pc.route_configs.items():
        if not _route_config_matches(rc_name, _map(_get(match, "routeConfiguration")), context):
            continue
        if apply_to == "ROUTE_CONFIGURATION":
            merge(rc, value)
            continue
        vhost_match = _map(_get(_get(match, "routeConfiguration"), "vhost"))
        for vh in rc.get("virtualHosts") or []:
            if vhost_match.get("name") not in (None, vh.get("name")):
                continue
            if apply_to == "VIRTUAL_HOST":
                merge(vh, value)
                continue
            route_match = _map(_get(vhost_match, "route"))
            for route in vh.get("routes") or []:
                if _route_matches(route, route_match):
                    merge(route, value)
    return None


def _cluster_matches(name: str, match: dict[str, Any], context: str) -> bool:
    parsed = parse_cluster(name)
    direction = parsed[0] if parsed else ""
    if context == "SIDECAR_OUTBOUND" and direction != "outbound":
        return False
    if context == "SIDECAR_INBOUND" and direction != "inbound":
        return False
    if match.get("name") is not None:
        return bool(match["name"] == name)
    if parsed is None:
        return not any(_get(match, k) is not None for k in ("service", "portNumber", "subset"))
    _, port, subset, host = parsed
    return ((_get(match, "service") in (None, host)) and (_get(match, "portNumber") in (None, port))
            and (_get(match, "subset") in (None, subset)))


def _route_config_matches(name: str, match: dict[str, Any], context: str) -> bool:
    inbound = name.startswith("inbound|")
    if context == "SIDECAR_OUTBOUND" and inbound:
        return False
    if context == "SIDECAR_INBOUND" and not inbound:
        return False
    if match.get("name") is not None and match["name"] != name:
        return False
    port = _get(match, "portNumber")
    if port is not None and name.startswith("https."):  # model/gateway.go ParseGatewayRDSRouteName
        return name.split(".")[1] == str(port)
    return port is None or str(port) == name.rsplit(".", 1)[-1] or name.endswith(f"|{port}||")


def _route_matches(route: Json, match: dict[str, Any]) -> bool:
    if match.get("name") is not None and match["name"] != route.get("name"):
        return False
    action = match.get("action") or "ANY"
    kind = "ROUTE" if "route" in route else "REDIRECT" if "redirect" in route else "DIRECT_RESPONSE"
    return action in ("ANY", kind)
