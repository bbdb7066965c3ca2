"""The objects Flagger's Istio provider creates for a Canary, as YAML-able manifest dicts (pure functions).

For a Canary whose target is Deployment `X` and whose apex service is `A` (`service.name`, default `X`):

- Deployment `X-primary`: selector `{<key>: <v>-primary}` where `<key>` is the first of app, name,
  app.kubernetes.io/name in X's matchLabels; the pod template is X's template as it was when the primary was
  created or last promoted, with `<key>` relabelled `<v>-primary` and a `flagger-id` annotation;
- Services `A-canary` (selects `<key>: <v>`, X's pods), `A-primary` and `A` (both select `<key>: <v>-primary`);
- DestinationRules `A-canary` and `A-primary` (host = the name, trafficPolicy = service.trafficPolicy, no subsets);
- VirtualService `A`: hosts = service.hosts + A, gateways = service.gateways or [mesh]; one weighted rule
  primary/canary, or with `analysis.match` the matched weighted rule followed by a primary-only rule;
- X itself, but only when Flagger scales it: to 0 at initialisation, after promotion and on rollback, to its
  replicas (at least 1) when an analysis starts. In between Flagger leaves the user's Deployment alone.

Ownership: every generated object carries `metadata.ownerReferences` to the Canary (`controller: true`), the
Kubernetes mechanism Flagger uses too; `owned_by()` finds them again. No extra label is added (Flagger adds none).
The primary's `flagger-id` annotation is derived from the template hash instead of Flagger's random UUID, so that
the same input always gives the same objects.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from meshlib.canary.spec import FLAGGER_API, TOTAL_WEIGHT, Canary, pod_template, selector_label, template_hash

ISTIO_API = "networking.istio.io/v1beta1"
FLAGGER_ID = "flagger-id"
_SIDECARS = ("istio-proxy", "envoy")  # skipped by port discovery


@dataclass(frozen=True)
class Routes:
    """The weights Flagger writes into the VirtualService (what `GetRoutes` reads back)."""

    primary: int = TOTAL_WEIGHT
    canary: int = 0
    mirrored: bool = False


def owner_references(canary: Canary) -> list[dict[str, Any]]:
    ref: dict[str, Any] = {"apiVersion": FLAGGER_API, "kind": "Canary", "name": canary.name,
                           "controller": True, "blockOwnerDeletion": True}
    if canary.uid:
        ref["uid"] = canary.uid
    return [ref]


def owned_by(obj: Mapping[str, Any], canary: Canary) -> bool:
    """True if `obj` was generated for `canary` (its controller reference names the Canary)."""
    meta = obj.get("metadata") or {}
    return meta.get("namespace", canary.namespace) == canary.namespace and any(
        r.get("kind") == "Canary" and r.get("name") == canary.name and r.get("controller")
        for r in meta.get("ownerReferences") or [])


def _metadata(canary: Canary, name: str, labels: Mapping[str, str] | None = None,
              annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": canary.namespace}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    meta["ownerReferences"] = owner_references(canary)
    return meta


def _relabel(labels: Mapping[str, str] | None, key: str, value: str) -> dict[str, str]:
    out = {k: v for k, v in (labels or {}).items() if k != key}
    out[key] = value
    return out


# --- workloads -----------------------------------------------------------------------------------------------------
def primary_deployment(canary: Canary, source: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """`<target>-primary`, running `source`'s pod template (the target as it was at creation or promotion)."""
    key, value = selector_label(source)
    primary_value = f"{value}-primary"
    template = copy.deepcopy(pod_template(source))
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = _relabel(tmeta.get("labels"), key, primary_value)
    annotations = {k: v for k, v in (tmeta.get("annotations") or {}).items() if k != FLAGGER_ID}
    annotations[FLAGGER_ID] = template_hash(pod_template(source))
    tmeta["annotations"] = annotations
    src_spec = source.get("spec") or {}
    spec: dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": {key: primary_value}}}
    for name in ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit", "strategy"):
        if name in src_spec:
            spec[name] = copy.deepcopy(src_spec[name])
    spec["template"] = template
    src_annotations = (source.get("metadata") or {}).get("annotations")
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _metadata(canary, canary.primary_name, {key: primary_value}, src_annotations),
            "spec": spec}


def scaled_target(target: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """The target Deployment as observed, with `spec.replicas` set (Flagger's ScaleToZero / ScaleFromZero)."""
    out = copy.deepcopy(dict(target))
    out.pop("status", None)
    out.setdefault("spec", {})["replicas"] = replicas
    return out


def scale_up_replicas(target: Mapping[str, Any]) -> int:
    """What Flagger's ScaleFromZero sets: the target's replicas if above 0, else 1."""
    replicas = (target.get("spec") or {}).get("replicas")
    return replicas if isinstance(replicas, int) and replicas > 0 else 1


# --- Kubernetes services -------------------------------------------------------------------------------------------
def _discovered_ports(canary: Canary, target: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`service.portDiscovery`: every other container port of the target (sidecars and the target port excluded)."""
    svc = canary.service
    target_port = svc.get("targetPort", svc["port"])
    ports: dict[str, int] = {}
    for container in pod_template(target).get("spec", {}).get("containers") or []:
        if container.get("name") in _SIDECARS:
            continue
        for i, p in enumerate(container.get("ports") or []):
            if p.get("containerPort") == target_port or (isinstance(target_port, str) and p.get("name") == target_port):
                continue
            ports[p.get("name") or f"tcp-{container.get('name')}-{i}"] = p["containerPort"]
    return [{"name": n, "protocol": "TCP", "port": p, "targetPort": p} for n, p in sorted(ports.items())]


def service(canary: Canary, target: Mapping[str, Any], name: str, selector_value: str) -> dict[str, Any]:
    """One ClusterIP Service as Flagger's Kubernetes router writes it."""
    key, _ = selector_label(target)
    svc = canary.service
    port: dict[str, Any] = {"name": svc.get("portName") or "http", "protocol": "TCP", "port": svc["port"],
                            "targetPort": svc.get("targetPort") or svc["port"]}
    if svc.get("appProtocol"):
        port["appProtocol"] = svc["appProtocol"]
    ports = [port]
    if svc.get("portDiscovery"):
        ports += _discovered_ports(canary, target)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(canary, name, {key: name}),
            "spec": {"type": "ClusterIP", "selector": {key: selector_value}, "ports": ports}}


def services(canary: Canary, target: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`A-canary` (the target's pods), `A-primary` and the apex `A` (both the primary's pods)."""
    _, value = selector_label(target)
    return [service(canary, target, canary.canary_service, value),
            service(canary, target, canary.primary_service, f"{value}-primary"),
            service(canary, target, canary.apex, f"{value}-primary")]


# --- Istio ---------------------------------------------------------------------------------------------------------
def destination_rule(canary: Canary, host: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host}
    if canary.service.get("trafficPolicy"):
        spec["trafficPolicy"] = copy.deepcopy(canary.service["trafficPolicy"])
    return {"apiVersion": ISTIO_API, "kind": "DestinationRule", "metadata": _metadata(canary, host), "spec": spec}


def destination_rules(canary: Canary) -> list[dict[str, Any]]:
    return [destination_rule(canary, canary.canary_service), destination_rule(canary, canary.primary_service)]


def _destination(canary: Canary, host: str, weight: int) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": host}
    svc = canary.service
    gateways = svc.get("gateways") or []
    if svc.get("portDiscovery") and ((gateways and gateways[0] != "mesh") or svc.get("delegation")):
        dest["port"] = {"number": svc["port"]}
    return {"destination": dest, "weight": weight}


def merge_match(canary_match: list[dict[str, Any]], defaults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flagger's `mergeMatchConditions`: each analysis match × each service match, headers/sourceLabels overriding."""
    if not defaults:
        return copy.deepcopy(canary_match)
    merged = []
    for c in canary_match:
        for d in defaults:
            m = copy.deepcopy(d)
            if c.get("headers") is not None:
                m["headers"] = copy.deepcopy(c["headers"])
            if c.get("sourceLabels") is not None:
                m["sourceLabels"] = copy.deepcopy(c["sourceLabels"])
            merged.append(m)
    return merged


def _rule(canary: Canary, match: list[dict[str, Any]] | None, route: list[dict[str, Any]]) -> dict[str, Any]:
    svc = canary.service
    rule: dict[str, Any] = {}
    if match:
        rule["match"] = copy.deepcopy(match)
    for field in ("rewrite", "timeout", "retries", "corsPolicy", "headers"):
        if svc.get(field):
            rule[field] = copy.deepcopy(svc[field])
    rule["route"] = route
    return rule


def virtual_service(canary: Canary, routes: Routes = Routes()) -> dict[str, Any]:
    """The apex VirtualService with `routes` applied (Flagger's `reconcileVirtualService` + `SetRoutes`).

    Quirk kept from Flagger: with `analysis.match` the rules are rebuilt after the mirror is set, so a mirror is
    never written together with a match.
    """
    svc = canary.service
    apex, primary, canary_host = canary.apex, canary.primary_service, canary.canary_service
    hosts = list(svc.get("hosts") or [])
    if not any(h in (apex, "*") for h in hosts):
        hosts.append(apex)
    gateways = list(svc.get("gateways") or []) or ["mesh"]
    service_match = list(svc.get("match") or [])
    weighted = [_destination(canary, primary, routes.primary), _destination(canary, canary_host, routes.canary)]
    if canary.match:
        http = [_rule(canary, merge_match(canary.match, service_match), weighted),
                _rule(canary, service_match, [_destination(canary, primary, routes.primary)])]
    else:
        http = [_rule(canary, service_match, weighted)]
        if routes.mirrored:
            http[0]["mirror"] = {"host": canary_host}
            if canary.mirror_weight > 0:
                http[0]["mirrorPercentage"] = {"value": float(canary.mirror_weight)}
    return {"apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": _metadata(canary, apex),
            "spec": {"hosts": hosts, "gateways": gateways, "http": http}}


def routes_of(vs: Mapping[str, Any], canary: Canary) -> Routes:
    """Read the weights back from a VirtualService like Flagger's `GetRoutes` (the last rule naming the canary)."""
    rule: Mapping[str, Any] = {}
    for r in (vs.get("spec") or {}).get("http") or []:
        if any((d.get("destination") or {}).get("host") == canary.canary_service for d in r.get("route") or []):
            rule = r
    primary = canary_weight = 0
    for d in rule.get("route") or []:
        host = (d.get("destination") or {}).get("host")
        if host == canary.primary_service:
            primary = d.get("weight", 0)
        elif host == canary.canary_service:
            canary_weight = d.get("weight", 0)
    return Routes(primary, canary_weight, bool((rule.get("mirror") or {}).get("host")))


# --- all of it -----------------------------------------------------------------------------------------------------
def generated_objects(canary: Canary, target: Mapping[str, Any], primary_source: Mapping[str, Any],
                      primary_replicas: int, routes: Routes = Routes(),
                      target_replicas: int | None = 0) -> list[dict[str, Any]]:
    """Everything Flagger keeps for an initialised Canary, in the order Flagger reconciles it.

    `primary_source` is the target as last copied to the primary; `target_replicas` None leaves the target out.
    """
    canary_svc, primary_svc, apex_svc = services(canary, target)
    objs = [canary_svc, primary_svc, primary_deployment(canary, primary_source, primary_replicas), apex_svc,
            *destination_rules(canary), virtual_service(canary, routes)]
    if target_replicas is not None:
        objs.append(scaled_target(target, target_replicas))  # last: once everything routes to the primary
    return objs


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, ready for `kubectl apply -f -` or `ConfigStore.apply_text`."""
    return yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False, default_flow_style=False)
