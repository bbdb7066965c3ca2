"""Build one proxy's Envoy-shaped config from the store, as istiod does (pure: store in, ProxyConfig out)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from meshlib.config.hosts import fqdn, host_matches, hosts_intersect, is_ip, short_aliases
from meshlib.config.kinds import Resource
from meshlib.config.store import ISTIO_SYSTEM, ConfigStore, ServiceInfo, Workload, credential_resource
from meshlib.profile import IstioProfile
from meshlib.xds import envoyfilter
from meshlib.xds.clusters import build_clusters, cluster_policy
from meshlib.xds.listeners import (
    gateway_listener,
    gateway_tls_listener,
    https_chain,
    inbound_route_configs,
    passthrough_chain,
    sidecar_listeners,
)
from meshlib.xds.model import GatewayChain, Json, ProxyConfig, RouteOrigin, SniffedPort
from meshlib.xds.naming import (
    ALLOW_ANY_VHOST,
    BLOCK_ALL_VHOST,
    PASSTHROUGH,
    gateway_https_route_config,
    gateway_route_config,
    outbound_cluster,
    parse_cluster,
)
from meshlib.xds.policy import hash_policy
from meshlib.xds.route import TranslateContext, is_catch_all, retry_policy, translate_rule
from meshlib.xds.telemetry import access_log_enabled

RC_DEFAULTS: Json = {"validateClusters": False, "maxDirectResponseBodySizeBytes": 1048576,
                     "ignorePortInHostMatching": True}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def resolve_gateway_ref(ref: str, vs_namespace: str) -> str:
    """`name`/`./name` → `<vs ns>/name`; `ns/name` kept; `name.ns.svc…` → `ns/name`; `mesh` kept."""
    if ref == "mesh":
        return ref
    if "/" in ref:
        ns, name = ref.split("/", 1)
        return f"{vs_namespace if ns == '.' else ns}/{name}"
    if "." in ref:
        name, ns = ref.split(".")[:2]
        return f"{ns}/{name}"
    return f"{vs_namespace}/{ref}"


def vs_gateways(vs: Resource) -> list[str]:
    return [resolve_gateway_ref(g, vs.namespace) for g in (vs.spec.get("gateways") or ["mesh"])]


def vs_hosts(vs: Resource) -> list[str]:
    return [fqdn(h, vs.namespace) for h in vs.spec.get("hosts") or []]


def parse_proxy_ref(ref: str) -> tuple[str, str | None]:
    """`deploy/NAME.NS`, `deployment/NAME`, `NAME.NS` or `NAME` → (NAME, NS or None), as kubectl reads them."""
    name, _, ns = ref.removeprefix("deploy/").removeprefix("deployment/").partition(".")
    return name, ns or None


def find_proxy(store: ConfigStore, proxy: str) -> Workload | None:
    """The one workload `proxy` names; without a namespace, any namespace as long as it is unambiguous."""
    name, ns = parse_proxy_ref(proxy)
    candidates = [w for w in store.workloads() if w.name == name and (not ns or w.namespace == ns)]
    return candidates[0] if len(candidates) == 1 else None


def build_proxy_config(store: ConfigStore, workload: Workload) -> ProxyConfig:
    mesh = store.mesh_settings()
    pc = ProxyConfig(workload.proxy_id, "gateway" if workload.is_gateway else "sidecar", workload.namespace,
                     dict(workload.labels), outbound_policy=_sidecar_policy(store, workload) or mesh.outbound_policy,
                     access_log=access_log_enabled(store, workload), profile_minor=store.profile.minor)
    services = visible_services(store, workload)
    build_clusters(store, workload, services, pc)
    if workload.is_gateway:
        tls_listeners = _gateway_routes(store, workload, services, pc)
        for port in sorted({*pc.listener_ports, *tls_listeners}):
            pc.listeners.append(tls_listeners.get(port) or gateway_listener(port, pc.listener_ports[port], pc))
    else:
        _sidecar_routes(store, workload, services, pc)
        inbound_route_configs(store, workload, pc)
        pc.listeners.extend(sidecar_listeners(workload, pc))
    filters = envoyfilter.selected(envoyfilter.envoy_filters(store), workload.namespace, workload.labels)
    pc.not_applied = [str(s) for s in envoyfilter.apply(pc, filters)]  # last, as istiod patches what it built
    return pc


# --- Sidecar resource scoping ----------------------------------------------------------------------
def _sidecar_resource(store: ConfigStore, workload: Workload) -> Resource | None:
    candidates = [s for s in store.of_kind("Sidecar", workload.namespace)]
    selected = [s for s in candidates if (s.spec.get("workloadSelector") or {}).get("labels")
                and labels_match(s.spec["workloadSelector"]["labels"], workload.labels)]
    if selected:
        return selected[0]
    defaults = [s for s in candidates if not s.spec.get("workloadSelector")]
    if defaults:
        return defaults[0]
    root = [s for s in store.of_kind("Sidecar", ISTIO_SYSTEM) if not s.spec.get("workloadSelector")]
    return root[0] if root else None


def _sidecar_policy(store: ConfigStore, workload: Workload) -> str | None:
    sc = None if workload.is_gateway else _sidecar_resource(store, workload)
    return ((sc.spec.get("outboundTrafficPolicy") or {}).get("mode")) if sc else None


def _egress_allows(patterns: list[str], svc: ServiceInfo, proxy_ns: str) -> bool:
    for pattern in patterns:
        ns, _, host = pattern.partition("/")
        if pattern.startswith("~"):
            continue
        if ns not in ("*", svc.namespace) and not (ns == "." and svc.namespace == proxy_ns):
            continue
        if host_matches(host, svc.host):
            return True
    return False


def visible_services(store: ConfigStore, workload: Workload) -> list[ServiceInfo]:
    services = store.services()
    if workload.is_gateway:
        return services
    sc = _sidecar_resource(store, workload)
    if not sc or not sc.spec.get("egress"):
        return services
    patterns = [h for e in sc.spec["egress"] for h in e.get("hosts") or []]
    return [s for s in services if _egress_allows(patterns, s, workload.namespace)]


# --- port resolution -------------------------------------------------------------------------------
def _port_resolver(services: list[ServiceInfo], listener_port: int):
    by_host = {s.host: s for s in services}

    def resolve(host: str, explicit: int | None) -> int:
        if explicit:
            return explicit
        svc = by_host.get(host)
        if svc and len(svc.ports) == 1:
            return svc.ports[0].port
        return listener_port

    return resolve


def _hashing(store: ConfigStore):
    """The route hash policy for a destination cluster whose DestinationRule hashes consistently."""
    def policy(cluster: str) -> list[Json] | None:
        parsed = parse_cluster(cluster)
        return hash_policy(cluster_policy(store, parsed[3], parsed[1], parsed[2])) if parsed else None

    return policy


# --- gateway ---------------------------------------------------------------------------------------
# protocol.IsHTTP (pkg/config/protocol): the servers whose port is plain-text HTTP
GATEWAY_HTTP = ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY")


def server_protocol(server: dict[str, Any]) -> str:
    return str(server["port"].get("protocol") or "HTTP").upper()


def server_tls_mode(server: dict[str, Any]) -> str:
    """The server's TLS mode; PASSTHROUGH when `tls` is set without one (the API's zero value)."""
    return (server.get("tls") or {}).get("mode") or "PASSTHROUGH"


def server_credentials(server: dict[str, Any], profile: IstioProfile) -> list[str]:
    """The Secret names a terminating server's key pairs come from: `credentialNames` (Istio 1.27+, one pair per
    key type) or `credentialName` (security/model ApplyCredentialSDSToServerCommonTLSContext)."""
    tls = server.get("tls") or {}
    if profile.minor >= 27 and tls.get("credentialNames"):
        return list(tls["credentialNames"])
    return [tls["credentialName"]] if tls.get("credentialName") else []


def server_kind(server: dict[str, Any], profile: IstioProfile) -> tuple[str, str]:
    """("http" | "https" | "passthrough", "") for a server meshlib translates, ("", why not) otherwise."""
    protocol, tls = server_protocol(server), server.get("tls")
    if protocol in GATEWAY_HTTP:
        return "http", ""
    mode = server_tls_mode(server)
    if protocol in ("HTTPS", "TLS") and tls and mode == "PASSTHROUGH":
        return "passthrough", ""
    if protocol == "HTTPS" and mode == "SIMPLE":
        if server_credentials(server, profile):
            return "https", ""
        return "", ("SIMPLE TLS with serverCertificate/privateKey files is not modelled: the embedded mesh serves "
                    "key pairs from Secrets named by credentialName")
    what = f"a {protocol} server" + (f" with tls mode {mode}" if tls else "")
    return "", f"{what} is not modelled by meshlib (HTTP, HTTPS SIMPLE and PASSTHROUGH servers are)"


def _sanitized_hosts(server: dict[str, Any], gw_namespace: str) -> list[str]:
    """model/gateway.go sanitizeServerHostNamespace: `./h` → `<gateway ns>/h`, `*/h` → `h`, `*/*` alone → `*`."""
    out = []
    for entry in server["hosts"]:
        ns, sep, host = entry.rpartition("/")
        if not sep:
            out.append(entry)
        elif ns == ".":
            out.append(f"{gw_namespace}/{host}")
        elif ns == "*":
            if host == "*":
                return ["*"]
            out.append(host)
        else:
            out.append(entry)
    return out


def _sni_hosts(hosts: list[str]) -> list[str]:
    """model/gateway.go GetSNIHostsForServer, listener.go buildListener: the server's hosts without namespace,
    deduplicated and sorted; `*` among them means no SNI match at all."""
    names = sorted({h.rpartition("/")[2] for h in hosts})
    return [] if "*" in names else names


def _server_host(entry: str, vs_ns: str) -> tuple[str | None, str]:
    ns, _, host = entry.rpartition("/")
    if ns in ("", "*"):
        return None, host
    return ns, host


def _gateway_port_target(store: ConfigStore, workload: Workload, port: int) -> int:
    for svc in store.services():
        if svc.namespace == workload.namespace and svc.selector and labels_match(svc.selector, workload.labels):
            sp = svc.port(port)
            if sp:
                return sp.target_port
    return port


@dataclass
class _Server:
    """One Gateway server as MergeGateways keeps it: its gateway, port number and the port Envoy listens on."""

    gw: Resource
    index: int
    spec: dict[str, Any]
    kind: str  # http | https | passthrough
    number: int
    target: int
    hosts: list[str]  # sanitized

    @property
    def gw_ref(self) -> str:
        return f"{self.gw.namespace}/{self.gw.name}"

    @property
    def route_config(self) -> str:
        if self.kind == "http":
            return gateway_route_config(self.target)
        return gateway_https_route_config(self.number, self.spec["port"].get("name", ""), self.gw.name,
                                          self.gw.namespace)


def _merged_servers(store: ConfigStore, workload: Workload) -> dict[int, list[_Server]]:
    """model/gateway.go MergeGateways: the servers of every Gateway selecting this workload, by listener port.
    The first server on a port decides whether it is plain-text HTTP or TLS; a later server of the other kind is
    skipped, and so is a TLS server whose hosts another TLS server on the port already has (Envoy would reject
    two filter chains with the same match)."""
    ports: dict[int, list[_Server]] = {}
    tls_hosts: dict[int, set[str]] = {}
    for gw in store.of_kind("Gateway"):
        if not labels_match(gw.spec.get("selector") or {}, workload.labels):
            continue
        for i, server in enumerate(gw.spec["servers"]):
            kind, _ = server_kind(server, store.profile)
            if not kind:
                continue
            number = server["port"]["number"]
            target = server["port"].get("targetPort") or _gateway_port_target(store, workload, number)
            hosts = _sanitized_hosts(server, gw.namespace)
            if server.get("tls"):
                known = tls_hosts.setdefault(target, set())
                if known & set(hosts):
                    continue
                known.update(hosts)
            entry = _Server(gw, i, server, kind, number, target, hosts)
            present = ports.setdefault(target, [])
            if present and (present[0].kind == "http") != (kind == "http"):
                continue
            if kind == "https" and any(s.route_config == entry.route_config for s in present):
                continue  # two HTTPS servers need distinct port names: the name is part of the route config's
            present.append(entry)
    return ports


def _gateway_routes(store: ConfigStore, workload: Workload, services: list[ServiceInfo],
                    pc: ProxyConfig) -> dict[int, Json]:
    """Route configs `http.<port>` (all plain-text servers on a port) and `https.<number>.<port name>.<gateway>.
    <namespace>` (one per terminating server), and the gateway's TLS listeners by port (gateway.go
    buildGatewayListeners, buildGatewayHTTPRouteConfig)."""
    tls_listeners: dict[int, Json] = {}
    for target, servers in sorted(_merged_servers(store, workload).items()):
        for s in servers:
            pc.gateway_ports.setdefault(s.number, target)
        if servers[0].kind == "http":
            rc_name = gateway_route_config(target)
            _gateway_route_config(store, workload, services, pc, rc_name, servers)
            pc.listener_ports[target] = rc_name
            continue
        chains: list[GatewayChain] = []
        chain_json: list[Json] = []
        seen_sni: set[str] = set()
        for s in servers:
            if s.kind == "https":
                rc_name = s.route_config
                _gateway_route_config(store, workload, services, pc, rc_name, [s])
                resources = []
                for name in server_credentials(s.spec, store.profile):
                    resource = credential_resource(name)
                    resources.append(resource)
                    credential, _ = store.credential(workload.namespace, name)
                    if credential is not None:
                        pc.secrets[resource] = (credential.cert, credential.key)
                chain = GatewayChain(tuple(_sni_hosts(s.hosts)), rc_name, tuple(resources))
                chains.append(chain)
                chain_json.append(https_chain(chain, s.spec.get("name") or f"outbound_0.0.0.0_{target}",
                                              _tls_params(s.spec.get("tls") or {}), pc))
            else:
                for chain, json_chain in _passthrough_chains(store, services, s, seen_sni, pc):
                    chains.append(chain)
                    chain_json.append(json_chain)
        if chains:  # a listener without filter chains is omitted ("must have more than 0 chains")
            pc.tls_chains[target] = chains
            tls_listeners[target] = gateway_tls_listener(target, chain_json)
    return tls_listeners


TLS_VERSIONS = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3"}


def _tls_params(tls: dict[str, Any]) -> Json:
    """listener.go BuildListenerTLSContext: the server's protocol versions and cipher suites, when set."""
    params: Json = {}
    if tls.get("minProtocolVersion") in TLS_VERSIONS:
        params["tlsMinimumProtocolVersion"] = TLS_VERSIONS[tls["minProtocolVersion"]]
    if tls.get("maxProtocolVersion") in TLS_VERSIONS:
        params["tlsMaximumProtocolVersion"] = TLS_VERSIONS[tls["maxProtocolVersion"]]
    if tls.get("cipherSuites"):
        params["cipherSuites"] = list(tls["cipherSuites"])
    return params


def _passthrough_chains(store: ConfigStore, services: list[ServiceInfo], s: _Server, seen_sni: set[str],
                        pc: ProxyConfig) -> list[tuple[GatewayChain, Json]]:
    """gateway.go buildGatewayNetworkFiltersFromTLSRoutes: for each VirtualService bound to the gateway whose hosts
    meet the server's, each `tls` match that applies to the server's port and gateway becomes a filter chain on
    its `sniHosts`, proxying TCP to the route's destination (a match repeating an SNI host already taken on the
    port is skipped)."""
    out = []
    resolve = _port_resolver(services, s.number)
    for vs in store.of_kind("VirtualService"):
        if s.gw_ref not in vs_gateways(vs) or not _hosts_meet(s.hosts, vs):
            continue
        for rule in vs.spec.get("tls") or []:
            for match in rule.get("match") or []:
                if match.get("port") and match["port"] != s.number:
                    continue
                gateways = [resolve_gateway_ref(g, vs.namespace) for g in match.get("gateways") or []]
                if gateways and s.gw_ref not in gateways:
                    continue
                sni = [h.lower() for h in match.get("sniHosts") or []]
                if seen_sni & set(sni):
                    continue
                seen_sni.update(sni)
                dests = rule.get("route") or []
                clusters = []
                for d in dests:
                    dest = d["destination"]
                    host = fqdn(dest["host"], vs.namespace)
                    port = resolve(host, (dest.get("port") or {}).get("number"))
                    if len(dests) == 1 or (d.get("weight") or 0) > 0:
                        clusters.append((outbound_cluster(port, dest.get("subset", ""), host), d.get("weight") or 0))
                names = () if "*" in sni else tuple(sorted(set(sni)))
                chain = GatewayChain(names, clusters=tuple(clusters))
                stat_prefix = f"{vs.name}.{vs.namespace}" if len(dests) > 1 else clusters[0][0]
                out.append((chain, passthrough_chain(chain, stat_prefix, len(dests) > 1, pc)))
    return out


def _hosts_meet(server_hosts: list[str], vs: Resource) -> bool:
    """gateway.go pickMatchingGatewayHosts: a server host (`ns/` only for VirtualServices of that namespace)
    overlaps one of the VirtualService's hosts."""
    for entry in server_hosts:
        ns, sep, host = entry.rpartition("/")
        if sep and ns != vs.namespace:
            continue
        if any(hosts_intersect(host, h) for h in vs_hosts(vs)):
            return True
    return False


def _more_specific(host: str) -> tuple[bool, int, str]:
    """host.Names' order (MoreSpecific): longest first, then alphabetical, wildcards last."""
    return host.startswith("*"), -len(host), host


def _gateway_route_config(store: ConfigStore, workload: Workload, services: list[ServiceInfo], pc: ProxyConfig,
                          rc_name: str, servers: list[_Server]) -> None:
    """gateway.go buildGatewayHTTPRouteConfig: one virtual host per host shared by a server and a bound
    VirtualService (the routes of every such VirtualService, catch-alls last), hosts with identical routes
    collapsed into one virtual host, or a blackhole virtual host when there is none."""
    mesh = store.mesh_settings()
    vss = store.of_kind("VirtualService")
    vhosts: dict[str, dict[str, Any]] = {}
    built: dict[tuple[str, tuple[str, str, str]], list[tuple[Json, RouteOrigin]]] = {}
    for s in servers:
        number = s.number
        ctx = TranslateContext(store.profile, mesh, number, _port_resolver(services, number), _hashing(store))
        for vs in vss:
            if s.gw_ref not in vs_gateways(vs):
                continue
            for host in vs_hosts(vs):
                hit = None
                for entry in s.hosts:
                    ns, shost = _server_host(entry, vs.namespace)
                    if ns not in (None, vs.namespace):
                        continue
                    if hosts_intersect(shost, host):
                        hit = host if not host.startswith("*") or shost.startswith("*") else shost
                        break
                if hit is None:
                    continue
                # routes are built once per gateway and VirtualService for the route config (gatewayRoutes)
                key = (s.gw_ref, vs.key)
                if key not in built:
                    built[key] = _vs_routes(vs, ctx, s.gw_ref, number, workload)
                pairs = built[key]
                if not pairs:
                    continue  # no rule applies to this gateway and port: the VirtualService is skipped
                vh_name = f"{hit}:{number}"
                vh = vhosts.setdefault(hit, {"name": vh_name, "domains": [hit], "routes": [], "_origins": [],
                                             "_built": []})
                if (s.spec.get("tls") or {}).get("httpsRedirect") is True:
                    vh["requireTls"] = "ALL"  # gateway.go: plain HTTP gets 301 to https (Envoy's require_tls)
                vh["_built"].append(key)
                for r, origin in pairs:
                    vh["routes"].append(r)
                    vh["_origins"].append(origin)
    if not vhosts:  # no VirtualService bound to any server of this route config: every request gets 404 NR
        port = servers[0].number
        vhosts["*"] = {"name": f"blackhole:{port}", "domains": ["*"], "routes": [], "_origins": [], "_built": []}
    out = []
    for vh in sorted(_collapsed(vhosts), key=lambda v: v["name"]):
        pairs = list(zip(vh.pop("_origins"), vh["routes"], strict=True))
        specific = [p for p in pairs if not is_catch_all(p[1]["match"])]
        catch_all = [p for p in pairs if is_catch_all(p[1]["match"])]
        ordered = specific + catch_all  # Istio moves catch-all routes of merged VirtualServices to the end
        vh["routes"] = [r for _, r in ordered]
        for i, (origin, _) in enumerate(ordered):
            pc.origins[(rc_name, vh["name"], i)] = origin
        out.append(vh)
    pc.route_configs[rc_name] = {"name": rc_name, "virtualHosts": out, **RC_DEFAULTS}


def _collapsed(vhosts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """gateway.go collapseDuplicateRoutes (PILOT_ENABLE_ROUTE_COLLAPSE_OPTIMIZATION, on in every modelled
    release): in host order, a virtual host whose routes are the very same route objects as an earlier one's
    (built from the same VirtualServices, in the same order) and whose requireTls agrees gives that one its
    domains instead of standing alone; the first keeps its name."""
    kept: dict[str, dict[str, Any]] = {}
    known: dict[tuple, str] = {}
    for host in sorted(vhosts, key=_more_specific):
        vh = vhosts[host]
        routes = tuple(vh.pop("_built"))
        first = known.get(routes)
        if first is not None and kept[first].get("requireTls") == vh.get("requireTls"):
            kept[first]["domains"] += vh["domains"]
            continue
        known[routes] = host
        kept[host] = vh
    return list(kept.values())


def _kept_matches(rule: dict[str, Any], vs: Resource, gateway: str, port: int,
                  source: Workload) -> list[tuple[int | None, dict[str, Any] | None]] | None:
    """Config-time selectors: drop match entries that don't apply to this proxy (istio-semantics §1.3).

    `source` is the proxy's own workload; like Istio's sourceMatchHTTP this holds for gateways too.
    """
    matches = rule.get("match")
    if not matches:
        return [(None, None)]
    kept = []
    for i, m in enumerate(matches):
        if m.get("port") and m["port"] != port:
            continue
        if m.get("gateways"):
            if gateway not in (resolve_gateway_ref(g, vs.namespace) for g in m["gateways"]):
                continue
        else:
            if m.get("sourceLabels") and not labels_match(m["sourceLabels"], source.labels):
                continue
            if m.get("sourceNamespace") and m["sourceNamespace"] != source.namespace:
                continue
        kept.append((i, m))
    return kept or None


def _vs_routes(vs: Resource, ctx: TranslateContext, gateway: str, port: int,
               source: Workload) -> list[tuple[Json, RouteOrigin]]:
    """Istio's BuildHTTPRoutesForVirtualService: the routes of the kept match entries in order, stopping after
    the first catch-all (nothing after it could match)."""
    out: list[tuple[Json, RouteOrigin]] = []
    for rule_i, rule in enumerate(vs.spec.get("http") or []):
        kept = _kept_matches(rule, vs, gateway, port, source)
        if kept is not None:
            routes = translate_rule(rule, vs, ctx, kept)  # [] when the rule's action is dropped
            for r, (mi, _) in zip(routes, kept, strict=False):
                out.append((r, RouteOrigin(vs, rule_i, mi)))
                if is_catch_all(r["match"]):
                    return out
        if not rule.get("match"):
            return out
    return out


# --- sidecar ---------------------------------------------------------------------------------------
HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC")
ROUTED_PROTOCOLS = (*HTTP_PROTOCOLS, "AUTO")  # ports whose virtual hosts istiod builds (IsHTTPOrSniffed)


def _sidecar_routes(store: ConfigStore, workload: Workload, services: list[ServiceInfo], pc: ProxyConfig) -> None:
    """Route config `<port>` for the 0.0.0.0 listener of each HTTP port, and `<fqdn>:<port>` for each sniffed
    Service port's VIP listener (listener.go buildSidecarOutboundHTTPListenerOpts: "a unique listener and route
    just for that service")."""
    http_ports = {p.port for s in services for p in s.ports if p.protocol in HTTP_PROTOCOLS}
    sniffed = [(s, p.port) for s in services if s.origin is not None and s.origin.kind == "Service"
               for p in s.ports if p.protocol == "AUTO"]
    rc_fields = dict(RC_DEFAULTS)
    if store.profile.port_domain_variants:  # ≤1.15 matched the port through `host:port` domains instead
        del rc_fields["ignorePortInHostMatching"]
    for port in sorted(http_ports | {p for _, p in sniffed}):
        vhosts, origins = _port_virtual_hosts(store, workload, services, port)
        if port in http_ports:
            rc_name = str(port)
            _add_route_config(pc, rc_name, [*vhosts, _catch_all_vhost(pc.outbound_policy)], origins, rc_fields)
            pc.listener_ports[port] = rc_name
        for svc in (s for s, p in sniffed if p == port):
            rc_name = f"{svc.host}:{port}"
            _add_route_config(pc, rc_name, _sniffed_virtual_hosts(vhosts, svc.host, port), origins, rc_fields)
            names = (svc.host, *short_aliases(svc.host, workload.namespace), svc.address)
            pc.sniffed.append(SniffedPort(svc.address, port, svc.host, rc_name, names))


def _sniffed_virtual_hosts(vhosts: list[Json], host: str, port: int) -> list[Json]:
    """The port's virtual hosts that name the service (httproute.go getVirtualHostsForSniffedServicePort): no
    catch-all, and a single one answers any authority (`*`), since only that service's traffic reaches it."""
    mine = [copy.deepcopy(vh) for vh in vhosts if host in vh["domains"] or f"{host}:{port}" in vh["domains"]]
    if len(mine) == 1:
        mine[0]["domains"] = ["*"]
    return mine


def _add_route_config(pc: ProxyConfig, rc_name: str, vhosts: list[Json], origins: dict[str, list[RouteOrigin]],
                      rc_fields: Json) -> None:
    for vh in vhosts:
        for i, origin in enumerate(origins.get(vh["name"], [])):
            pc.origins[(rc_name, vh["name"], i)] = origin
    pc.route_configs[rc_name] = {"name": rc_name, "virtualHosts": vhosts, **rc_fields}


def _port_virtual_hosts(store: ConfigStore, workload: Workload, services: list[ServiceInfo],
                        port: int) -> tuple[list[Json], dict[str, list[RouteOrigin]]]:
    """The virtual hosts istiod builds for a sidecar's outbound `port` (BuildSidecarOutboundVirtualHosts), sorted by
    name, without the catch-all; and the VirtualService rule behind each of their routes."""
    mesh = store.mesh_settings()
    mesh_vss = [vs for vs in store.of_kind("VirtualService") if "mesh" in vs_gateways(vs)]
    ctx = TranslateContext(store.profile, mesh, port, _port_resolver(services, port), _hashing(store))
    vhosts: list[Json] = []
    origins: dict[str, list[RouteOrigin]] = {}
    claimed: set[str] = set()
    port_services = [s for s in services if s.port(port) and s.port(port).protocol in ROUTED_PROTOCOLS]
    for svc in sorted(port_services, key=lambda s: s.host):
        vh_name = f"{svc.host}:{port}"
        domains = _domains(svc, port, workload.namespace, store)
        routes: list[Json] = []
        route_origins: list[RouteOrigin] = []
        # the first VirtualService (in creation order) that yields routes for this proxy owns the host
        for vs in (v for v in mesh_vss if any(host_matches(h, svc.host) for h in vs_hosts(v))):
            pairs = _vs_routes(vs, ctx, "mesh", port, workload)
            if pairs:
                routes = [r for r, _ in pairs]
                route_origins = [o for _, o in pairs]
                claimed.update(h for h in vs_hosts(vs) if host_matches(h, svc.host))
                break
        if not routes:
            routes = [_default_route(svc, port, ctx)]
            route_origins = []
        vhosts.append({"name": vh_name, "domains": domains, "routes": routes,
                       "includeRequestAttemptCount": True})
        origins[vh_name] = route_origins
    # VirtualService hosts that are not in the registry get their own virtual host, on the HTTP ports of the
    # registry services the same VirtualService names, or only on port 80 if it names none (Istio's hack);
    # a wildcard host gets one when it matches no registry service (httproute.go separateVSHostsAndServices).
    # These virtual hosts are built before the services' ones, so a domain both claim stays with the
    # VirtualService (httproute.go dedupeDomains): `catalog.istioinaction` written as a VS host wins over the
    # catalog service's own alias of that name.
    known = {s.host for s in services}
    vs_vhosts: list[Json] = []
    for vs in mesh_vss:
        registry_ports = {p.port for s in services for p in s.ports if p.protocol in ROUTED_PROTOCOLS
                          and any(host_matches(h, s.host) for h in vs_hosts(vs))}
        if port not in (registry_ports or {80}):
            continue
        for host in vs_hosts(vs):
            if host in known or host in claimed:
                continue
            if "*" in host and any(host_matches(host, s.host) for s in services):
                continue  # a wildcard over registry services is applied to those services above
            vh_name = f"{host}:{port}"
            if any(v["name"] == vh_name for v in vhosts + vs_vhosts):
                continue
            pairs = _vs_routes(vs, ctx, "mesh", port, workload)
            routes = [r for r, _ in pairs]
            route_origins = [o for _, o in pairs]
            if routes:
                vs_vhosts.append({"name": vh_name, "domains": [host], "routes": routes,
                                  "includeRequestAttemptCount": True})
                origins[vh_name] = route_origins
    taken = {d for v in vs_vhosts for d in v["domains"]}
    for vh in vhosts:
        vh["domains"] = [d for d in vh["domains"] if d not in taken]
    vhosts += vs_vhosts
    vhosts.sort(key=lambda v: v["name"])
    return vhosts, origins


def _absolute_domain(host: str, profile: IstioProfile) -> bool:
    """The trailing-dot domain (`host.`), from 1.27 for every host that is not an IP address, registry service or
    not (route/route.go generateVirtualHostDomains, 1.27)."""
    return profile.absolute_fqdn_domain and not is_ip(host)


def _domains(svc: ServiceInfo, port: int, proxy_ns: str, store: ConfigStore) -> list[str]:
    names = [svc.host]
    if _absolute_domain(svc.host, store.profile):
        names.append(svc.host + ".")
    names += short_aliases(svc.host, proxy_ns)
    if svc.address:
        names.append(svc.address)
    if store.profile.port_domain_variants:
        names = [d for n in names for d in (n, f"{n}:{port}")]
    return names


def _default_route(svc: ServiceInfo, port: int, ctx: TranslateContext) -> Json:
    cluster = outbound_cluster(port, "", svc.host)
    action: Json = {"cluster": cluster, "timeout": "0s"}
    hashing = ctx.hash_policy(cluster)
    if hashing:
        action["hashPolicy"] = hashing
    retry = retry_policy(None, ctx)
    if retry:
        action["retryPolicy"] = retry
    action["maxGrpcTimeout"] = "0s"
    return {"name": "default", "match": {"prefix": "/"}, "route": action,
            "decorator": {"operation": f"{svc.host}:{port}/*"}}


def _catch_all_vhost(policy: str) -> Json:
    if policy == "REGISTRY_ONLY":
        return {"name": BLOCK_ALL_VHOST, "domains": ["*"],
                "routes": [{"name": BLOCK_ALL_VHOST, "match": {"prefix": "/"}, "directResponse": {"status": 502}}],
                "includeRequestAttemptCount": True}
    return {"name": ALLOW_ANY_VHOST, "domains": ["*"],
            "routes": [{"name": ALLOW_ANY_VHOST, "match": {"prefix": "/"},
                        "route": {"cluster": PASSTHROUGH, "timeout": "0s", "maxGrpcTimeout": "0s"}}],
            "includeRequestAttemptCount": True}
