"""Envoy config checks over the running Envoy's own config dump; route prediction over the translated config."""

from __future__ import annotations

import json
from typing import Any

from meshlib.backend import GATEWAY
from meshlib.config.canonical import is_app, revision_of
from meshlib.dsl.jsonpath import compile_path
from meshlib.dsl.responses import traced
from meshlib.dsl.world import World
from meshlib.errors import MeshlibError
from meshlib.expect import fail
from meshlib.explain import decide_on, explain_text, outcome_text
from meshlib.report.decision import decision_document
from meshlib.report.tables import escape, html_document, html_table
from meshlib.router import Decision, Request
from meshlib.xds import ProxyConfig
from meshlib.xds.naming import parse_cluster


def proxy_of(world: World, who: str) -> tuple[str, str]:
    """`the ingress gateway`, `gateway`, `webapp`, `webapp sidecar` → (workload, namespace)."""
    w = who.strip().removeprefix("the ").removesuffix("'s").removesuffix(" sidecar").strip()
    if w in ("ingress gateway", "gateway", "istio-ingressgateway"):
        return GATEWAY
    return w, world.namespace


def decide(world: World, who: str, host: str, path: str, headers: dict[str, str] | None = None,
           seed: int = 0) -> tuple[ProxyConfig, Decision]:
    name, ns = proxy_of(world, who)
    pc = world.backend.proxy_config(name, ns)
    return pc, decide_on(pc, Request.of(host, path, headers=headers or {}), seed)


def clusters_of(d: Decision) -> list[str]:
    return [n for n, _ in d.weighted] if d.weighted else ([d.cluster] if d.cluster else [])


def describe(d: Decision) -> str:
    if d.status is not None:
        return outcome_text(d)
    if d.weighted:
        total = sum(w for _, w in d.weighted)
        return ", ".join(f"{n} ({100 * w / total:g}%)" for n, w in d.weighted)
    return d.cluster or "-"


def route_goes_to(world: World, who: str, host: str, path: str, headers: dict[str, str], subset: str) -> None:
    pc, d = decide(world, who, host, path, headers)
    raw = {"host": host, "path": path, "headers": headers, "routeConfig": d.route_config,
           "virtualHost": d.virtual_host, "route": d.route}
    world.attach(f"route decision of {pc.proxy_id}",
                 decision_document(_explained(world, pc, host, path, headers), raw), "html")
    subsets = [parsed[2] for c in clusters_of(d) if (parsed := parse_cluster(c))]
    if d.status is not None or subsets != [subset]:
        raise fail(f"{pc.proxy_id} to route {host}{path} to subset {subset}", f"it goes to {describe(d)}")


def _explained(world: World, pc: ProxyConfig, host: str, path: str, headers: dict[str, str]) -> str:
    """`meshlib explain`'s short form of this request at this proxy (its one-line outcome where explain cannot
    name the proxy, e.g. a cluster's proxy meshlib did not translate)."""
    try:
        return explain_text(world.backend.store, pc.proxy_id, Request.of(host, path, headers=headers or {}))
    except MeshlibError as exc:
        return f"(no explanation: {exc})"


def would_reach(world: World, who: str, host: str, path: str, headers: dict[str, str], version: str,
                app: str) -> None:
    pc, d = decide(world, who, host, path, headers)
    workloads = endpoint_versions(world, pc, d, app)
    raw = {"host": host, "path": path, "headers": headers, "routeConfig": d.route_config,
           "virtualHost": d.virtual_host, "route": d.route, "prediction": describe(d)}
    world.attach(f"prediction at {pc.proxy_id}: {host}{path} → {describe(d)}",
                 decision_document(_explained(world, pc, host, path, headers), raw), "html")
    if d.status is not None or workloads != {version}:
        raise fail(f"a request for {host}{path} at {pc.proxy_id} to reach {app} {version}",
                   f"it would reach {', '.join(sorted(workloads)) or describe(d)}")


def endpoint_versions(world: World, pc: ProxyConfig, d: Decision, app: str) -> set[str]:
    out = set()
    for cluster in clusters_of(d):
        for ep in pc.endpoints.get(cluster, []):
            labels = dict(ep.labels)
            if is_app(labels, ep.workload or "", app):
                out.add(revision_of(labels))
    return out


def config_dump_has(world: World, who: str, expr: str, value: str | None = None) -> list[Any]:
    name, ns = proxy_of(world, who)
    dump = world.backend.config_dump(name, ns)
    found = [m.value for m in compile_path(expr).find(dump)]
    world.attach(f"config_dump {expr}", json.dumps(found[:20], indent=2, default=str), "json")
    if not found:
        raise fail(f"the config dump of {name}.{ns} to have {expr}", "nothing matches")
    if value is not None and str(found[0]) != value:
        raise fail(f"{expr} to be {value!r}", f"it is {found[0]!r}")
    return found


def observed_matches_prediction(world: World, app: str) -> None:
    """Request by request (x-request-id): the pod of `app` that served it is one the caller's route allows."""
    wrong, checked = [], 0
    for r in traced(world):
        chain = r.served_by
        for i, s in enumerate(chain):
            if not s.peer.is_app(app):
                continue
            caller = chain[i - 1].peer.workload if i > 0 else "istio-ingressgateway"
            who = "gateway" if caller == "istio-ingressgateway" else caller
            pc, d = decide(world, who, s.authority, s.path, dict(world.headers))
            allowed = endpoint_versions(world, pc, d, app)
            checked += 1
            if s.peer.canonical_revision not in allowed:
                wrong.append((r.request_id[:8], caller, s.authority + s.path, s.peer.canonical_revision,
                              ", ".join(sorted(allowed))))
    title = f"{checked} hops to {app} checked against the route prediction, {len(wrong)} disagreed"
    world.attach(f"predicted vs observed: {len(wrong)} of {checked} disagreed",
                 html_table(("request", "caller", "url", "served by", "predicted"), wrong[:20], title=title,
                            bad=range(len(wrong[:20]))) if wrong else html_document(f"<h4>{escape(title)}</h4>"),
                 "html")
    if checked == 0:
        raise fail(f"requests that reached {app}", "none of the last batch did")
    if wrong:
        from meshlib.expect import table
        raise fail(f"every request to {app} to go where the route predicted", f"{len(wrong)} of {checked} did not",
                   table(("request", "caller", "url", "served by", "predicted"), wrong[:20]))
