"""Analyzers in the manner of `istioctl analyze` and Kiali: each finding has a stable code and a file:line.

Istio's own codes are used where Istio has one (IST…), Kiali's where Kiali has one (KIA…), and meshlib's
(MSH…) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshlib.config.hosts import fqdn, hosts_intersect
from meshlib.config.kinds import Resource
from meshlib.config.listing import not_modelled_line
from meshlib.config.store import ConfigStore
from meshlib.errors import Source
from meshlib.xds.envoyfilter import envoy_filters, unsupported

ERROR, WARNING, INFO = "Error", "Warning", "Info"


@dataclass(frozen=True)
class Finding:
    level: str
    code: str
    resource: str  # "VirtualService istioinaction/catalog"
    source: Source
    message: str

    def __str__(self) -> str:
        return f"{self.level} [{self.code}] ({self.resource} {self.source}) {self.message}"


CODES = {
    "IST0101": "ReferencedResourceNotFound",
    "IST0109": "ConflictingMeshGatewayVirtualServiceHosts",
    "IST0130": "VirtualServiceUnreachableRule",
    "IST0131": "VirtualServiceIneffectiveMatch",
    "IST0132": "VirtualServiceHostNotFoundInGateway",
    "IST0161": "InvalidGatewayCredential",
    "KIA0203": "SubsetSelectsNoPods",
    "MSH0001": "RelativeWeights",
    "MSH0002": "ZeroWeightSingleDestination",
    "MSH0003": "NotModelled",
    "MSH0004": "EnvoyFilterPatchNotApplied",
    "MSH0005": "GatewayServerNotModelled",
}
NOT_MODELLED_SHOWN = 10  # names listed in the one "not modelled" finding; the rest are counted


def _finding(level: str, code: str, res: Resource, path: tuple, message: str) -> Finding:
    return Finding(level, code, f"{res.kind} {res.namespace}/{res.name}", res.where(*path), message)


def analyze(store: ConfigStore) -> list[Finding]:
    out: list[Finding] = []
    for vs in store.of_kind("VirtualService"):
        out += _destinations(store, vs)
        out += _gateways(store, vs)
        out += _unreachable(vs)
        out += _weights(store, vs)
    out += _conflicting_mesh_hosts(store)
    for gw in store.of_kind("Gateway"):
        out += _gateway_servers(store, gw)
    for dr in store.of_kind("DestinationRule"):
        out += _destination_rule(store, dr)
    out += _not_modelled(store)
    out += _envoy_filter_patches(store)
    return sorted(out, key=lambda f: ({ERROR: 0, WARNING: 1, INFO: 2}[f.level], f.source.file, f.source.line))


def _subset_exists(store: ConfigStore, host: str, subset: str) -> bool:
    for dr in store.of_kind("DestinationRule"):
        if fqdn(dr.spec["host"], dr.namespace) == host:
            if any(s["name"] == subset for s in dr.spec.get("subsets") or []):
                return True
    return False


def _destinations(store: ConfigStore, vs: Resource) -> list[Finding]:
    out = []
    known = {s.host for s in store.services()}
    for i, rule in enumerate(vs.spec.get("http") or []):
        dests = [(("http", i, "route", j, "destination"), d["destination"])
                 for j, d in enumerate(rule.get("route") or [])]
        if rule.get("mirror"):
            dests.append((("http", i, "mirror"), rule["mirror"]))
        dests += [(("http", i, "mirrors", j, "destination"), m["destination"])
                  for j, m in enumerate(rule.get("mirrors") or [])]
        for path, dest in dests:
            host = fqdn(dest["host"], vs.namespace)
            if host not in known:
                out.append(_finding(ERROR, "IST0101", vs, (*path, "host"),
                                    f'Referenced host not found: "{host}"'))
                continue
            subset = dest.get("subset")
            if subset and not _subset_exists(store, host, subset):
                out.append(_finding(ERROR, "IST0101", vs, (*path, "subset"),
                                    f'Referenced host+subset in destinationrule not found: "{host}+{subset}"'
                                    " — requests routed here get 503 NC (cluster_not_found); add the subset"
                                    " to a DestinationRule for this host"))
    return out


def _gateway_resource(store: ConfigStore, ref: str) -> Resource | None:
    ns, _, name = ref.partition("/")
    return store.get("Gateway", ns, name)


def _gateways(store: ConfigStore, vs: Resource) -> list[Finding]:
    from meshlib.xds.build import resolve_gateway_ref  # the same resolution the translator uses

    out = []
    for j, raw in enumerate(vs.spec.get("gateways") or []):
        ref = resolve_gateway_ref(raw, vs.namespace)
        if ref == "mesh":
            continue
        gw = _gateway_resource(store, ref)
        if gw is None:
            out.append(_finding(ERROR, "IST0101", vs, ("gateways", j), f'Referenced gateway not found: "{ref}"'))
            continue
        server_hosts = [h.rpartition("/")[2] for s in gw.spec["servers"] for h in s["hosts"]]
        for k, host in enumerate(vs.spec.get("hosts") or []):
            h = fqdn(host, vs.namespace)
            if not any(hosts_intersect(sh, h) for sh in server_hosts):
                out.append(_finding(WARNING, "IST0132", vs, ("hosts", k),
                                    f'one or more host [{h}] defined in VirtualService {vs.namespace}/{vs.name} '
                                    f'not found in Gateway {ref}.'))
    return out


def _gateway_servers(store: ConfigStore, gw: Resource) -> list[Finding]:
    """Servers the embedded mesh does not translate (MSH0005), and the Secrets a server's `credentialName` names:
    missing (IST0101) or without a usable key pair (IST0161), looked up in the namespace of the gateway workload
    the Gateway selects, as istiod's SDS and Istio's gateway SecretAnalyzer do."""
    from meshlib.xds.build import labels_match, server_kind

    out = []
    selector = gw.spec.get("selector") or {}
    workloads = [w for w in store.workloads() if w.is_gateway and labels_match(selector, w.labels)] or \
        [w for w in store.workloads() if labels_match(selector, w.labels)]
    for i, server in enumerate(gw.spec["servers"]):
        kind, why = server_kind(server, store.profile)
        if not kind:
            out.append(_finding(WARNING, "MSH0005", gw, ("servers", i),
                                f"servers[{i}] (port {server['port']['number']}) is not translated on the embedded "
                                f"mesh: {why}"))
        tls = server.get("tls") or {}
        names = [("credentialName", n) for n in [tls.get("credentialName")] if n]
        names += [(("credentialNames", j), n) for j, n in enumerate(tls.get("credentialNames") or [])]
        if not workloads or not names:
            continue
        ns = workloads[0].namespace
        for field, name in names:
            path = ("servers", i, "tls", *(field if isinstance(field, tuple) else (field,)))
            credential, problem = store.credential(ns, name)
            if store.get("Secret", ns, name.removeprefix("kubernetes://")) is None:
                out.append(_finding(ERROR, "IST0101", gw, path,
                                    f'Referenced credentialName not found: "{name}" — no Secret {ns}/{name} (the '
                                    "gateway's namespace): istiod serves no key pair, so this server presents no "
                                    "certificate and its TLS handshakes fail"))
            elif credential is None:
                out.append(_finding(ERROR, "IST0161", gw, path,
                                    f"The credential referenced by the Gateway {gw.name} in namespace {ns} is "
                                    f"invalid, which can cause the traffic not to work as expected: {problem}"))
    return out


def _is_catch_all_rule(rule: dict) -> bool:
    matches = rule.get("match")
    if not matches:
        return True
    for m in matches:
        keys = {k for k, v in m.items() if v not in (None, {}, []) and k not in ("name",)}
        uri = m.get("uri") or {}
        if not keys or (keys == {"uri"} and uri.get("prefix") == "/"):
            return True
    return False


def _unreachable(vs: Resource) -> list[Finding]:
    out = []
    rules = vs.spec.get("http") or []
    seen: list[tuple[int, int, dict]] = []
    for i, rule in enumerate(rules):
        if any(_is_catch_all_rule(prev) and _same_selectors(prev, rule) for prev in rules[:i]):
            out.append(_finding(ERROR, "IST0130", vs, ("http", i),
                                f"VirtualService rule #{i} not used (only the last rule can have no matches)."))
            continue
        for j, m in enumerate(rule.get("match") or []):
            for pi, pj, pm in seen:
                if pm == m:
                    out.append(_finding(WARNING, "IST0131", vs, ("http", i, "match", j),
                                        f"VirtualService rule #{i} match #{j} is not used "
                                        f"(duplicate/overlapping match in rule #{pi} of match #{pj})."))
                    break
            seen.append((i, j, m))
    return out


def _same_selectors(earlier: dict, later: dict) -> bool:
    """A catch-all only shadows later rules when it is not limited by config-time selectors."""
    for m in earlier.get("match") or []:
        if any(m.get(k) for k in ("port", "sourceLabels", "sourceNamespace", "gateways")):
            return False
    return True


def _weights(store: ConfigStore, vs: Resource) -> list[Finding]:
    out = []
    for i, rule in enumerate(vs.spec.get("http") or []):
        dests = rule.get("route") or []
        if len(dests) > 1:
            total = sum(d.get("weight", 0) or 0 for d in dests)
            if total != 100:
                shares = ", ".join(f"{(d.get('weight') or 0) * 100 / total:.1f}%" for d in dests)
                out.append(_finding(INFO, "MSH0001", vs, ("http", i, "route"),
                                    f"weights sum to {total}; Istio {store.profile.version} treats them as "
                                    f"relative ({shares}); Istio 1.14 and older reject this"))
        elif len(dests) == 1 and dests[0].get("weight") == 0:
            out.append(_finding(WARNING, "MSH0002", vs, ("http", i, "route", 0, "weight"),
                                "weight 0 on the only destination is ignored: it still receives 100% of traffic"))
    return out


def _conflicting_mesh_hosts(store: ConfigStore) -> list[Finding]:
    from meshlib.xds.build import vs_gateways, vs_hosts

    out = []
    owners: dict[str, Resource] = {}
    for vs in store.of_kind("VirtualService"):
        if "mesh" not in vs_gateways(vs):
            continue
        for k, host in enumerate(vs_hosts(vs)):
            first = owners.get(host)
            if first is None:
                owners[host] = vs
                continue
            out.append(_finding(ERROR, "IST0109", vs, ("hosts", k),
                                f'The VirtualServices {first.namespace}/{first.name} ({first.source}), '
                                f'{vs.namespace}/{vs.name} associated with mesh define the same host or '
                                f'subset "{host}"; sidecars use only {first.namespace}/{first.name}'))
    return out


def _destination_rule(store: ConfigStore, dr: Resource) -> list[Finding]:
    host = fqdn(dr.spec["host"], dr.namespace)
    svc = store.find_service(host)
    if svc is None:
        return [_finding(WARNING, "IST0101", dr, ("host",), f'Referenced host not found: "{host}"')]
    out = []
    for j, subset in enumerate(dr.spec.get("subsets") or []):
        if svc.selector is not None and not store.service_workloads(svc, subset.get("labels") or {}):
            labels = ",".join(f"{k}={v}" for k, v in (subset.get("labels") or {}).items())
            out.append(_finding(WARNING, "KIA0203", dr, ("subsets", j),
                                f'subset "{subset["name"]}" selects no pods ({labels}): requests routed to it '
                                "get 503 UH (no healthy upstream)"))
    return out


def _envoy_filter_patches(store: ConfigStore) -> list[Finding]:
    """An EnvoyFilter patch meshlib cannot apply (not a MERGE of a cluster, route configuration, virtual host or
    route) changes nothing here although it may on a cluster: say so, per patch."""
    out = []
    for f in envoy_filters(store):
        patches = (f.spec.get("spec") or {}).get("configPatches") if isinstance(f.spec.get("spec"), dict) else None
        for i, patch in enumerate(patches if isinstance(patches, list) else []):
            why = unsupported(patch)
            if why:
                out.append(_finding(WARNING, "MSH0004", f, ("spec", "configPatches", i),
                                    f"configPatches[{i}] not applied on the embedded mesh: {why}"))
    return out


def _not_modelled(store: ConfigStore) -> list[Finding]:
    """One finding for every kind meshlib stores but does not translate (their presence changes nothing)."""
    rest = store.not_modelled()
    line = not_modelled_line(rest, NOT_MODELLED_SHOWN)
    if line is None:
        return []
    first = rest[0]
    return [Finding(INFO, "MSH0003", f"{first.kind} {first.namespace}/{first.name}", first.source, line)]
