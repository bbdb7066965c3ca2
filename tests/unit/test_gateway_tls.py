"""Gateway TLS (issue 10): Secrets as a kind, HTTPS servers that terminate TLS with a `credentialName` key pair,
PASSTHROUGH servers routed by SNI from VirtualService `tls` routes, and the collapse of virtual hosts with the same
routes. Each row names where istiod (istio/istio) defines the behaviour and the releases it holds for; paths are
under `pilot/pkg/networking/core/` (`v1alpha3/` before 1.22) unless they say otherwise. Every store translated here
is also handed to `envoy --mode validate`, bound as the embedded mesh runs it (last test).
"""

from __future__ import annotations

import random

import pytest
from certs import KeyPair, self_signed, tls_secret
from helpers import GATEWAY_PROXY, NS, world, y
from test_envoy_validate import assert_valid

from meshlib.config.analyze import analyze
from meshlib.config.store import ConfigStore
from meshlib.errors import ConfigError
from meshlib.explain import decide, explain_text
from meshlib.router import Request, select_route
from meshlib.xds import ProxyConfig, build_proxy_config, find_proxy
from meshlib.xds.bind import Placement, PodEndpoint, bind

PROFILES = ("1.13", "1.17", "1.22", "1.28")
WEBAPP_HOST = "webapp.istioinaction.io"
WEBAPP = f"outbound|80||webapp.{NS}.svc.cluster.local"
CATALOG = f"outbound|80||catalog.{NS}.svc.cluster.local"
HTTPS_RC = f"https.443.https.coolstore-gateway.{NS}"
PAIR = self_signed(WEBAPP_HOST, "www.istioinaction.io")
STORES: list[ConfigStore] = []  # every store translated here: Envoy validates them all at the end


def gateway(*servers: str, name: str = "coolstore-gateway") -> str:
    body = "".join(f"  - {s.strip()}\n" for s in servers)
    return (f"apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n"
            f"  selector: {{istio: ingressgateway}}\n  servers:\n{body}")


HTTP_SERVER = '{port: {number: 80, name: http, protocol: HTTP}, hosts: ["webapp.istioinaction.io"]}'
HTTPS_SERVER = ('{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["webapp.istioinaction.io"], '
                'tls: {mode: SIMPLE, credentialName: webapp-credential}}')
PASSTHROUGH_SERVER = ('{port: {number: 443, name: tls, protocol: TLS}, hosts: ["*.passthrough.io"], '
                      'tls: {mode: PASSTHROUGH}}')


def webapp_vs(hosts: str = f'["{WEBAPP_HOST}"]', gateways: str = "[coolstore-gateway]", name: str = "webapp") -> str:
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
  - route: [{{destination: {{host: webapp, port: {{number: 80}}}}}}]
"""


def tls_vs(sni: str, route: str, hosts: str = '["*.passthrough.io"]', name: str = "passthrough",
           match_extra: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: {hosts}
  gateways: [coolstore-gateway]
  tls:
  - match: [{{sniHosts: {sni}{match_extra}}}]
    route: {route}
"""


def store_of(*docs: str, version: str | None = None, secret: KeyPair | None = PAIR) -> ConfigStore:
    extra = [tls_secret("webapp-credential", secret)] if secret is not None else []
    store = world(*docs, *extra, version=version)
    STORES.append(store)
    return store


def gateway_pc(store: ConfigStore) -> ProxyConfig:
    workload = find_proxy(store, GATEWAY_PROXY)
    assert workload is not None
    return build_proxy_config(store, workload)


def listener(pc: ProxyConfig, name: str) -> dict:
    found = [x for x in pc.listeners if x["name"] == name]
    assert found, f"no listener {name}: {[x['name'] for x in pc.listeners]}"
    return found[0]


# --- 1. Secrets -------------------------------------------------------------------------------------------------------
def test_a_tls_secret_is_a_modelled_kind_with_its_decoded_key_pair() -> None:
    store = store_of(gateway(HTTPS_SERVER), webapp_vs())
    secret = store.get("Secret", "istio-system", "webapp-credential")
    assert secret is not None and secret.modelled
    credential, why = store.credential("istio-system", "webapp-credential")
    assert credential is not None and why == ""
    assert (credential.cert, credential.key) == (PAIR.cert_pem, PAIR.key_pem)
    # pilot/pkg/credentials/kube/secrets.go extractKeyAndCert: generic cert/key, as stringData, work too
    text = (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: generic, namespace: istio-system}}\nstringData:\n"
            f"  cert: |\n{_indent(PAIR.cert_pem)}  key: |\n{_indent(PAIR.key_pem)}")
    store.apply_text(text, NS, "generic.yaml")
    assert store.credential("istio-system", "generic")[0] == credential


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.splitlines())


BAD_SECRETS = [
    pytest.param("type: kubernetes.io/tls\ndata:\n  tls.crt: '@@@'\n  tls.key: eA==\n", 6,
                 "data.tls.crt: not valid base64", id="bad-base64"),
    pytest.param("type: kubernetes.io/tls\ndata:\n  tls.crt: {crt}\n", 5,
                 "needs tls.key", id="no-key"),
    pytest.param("type: kubernetes.io/tls\ndata:\n  tls.crt: aGVsbG8=\n  tls.key: {key}\n", 6,
                 "data.tls.crt: no PEM CERTIFICATE block", id="not-pem"),
    pytest.param("type: kubernetes.io/tls\nstringData:\n  tls.crt: x\n  tls.key: y\n", 6,
                 "stringData.tls.crt: no PEM CERTIFICATE block", id="string-not-pem"),
    pytest.param("data:\n  'a/b': eA==\n", 5, "key 'a/b' is not a valid Secret key", id="bad-key"),
    pytest.param("stringData: {password: 3}\n", 4, "stringData.password: expected a string", id="number"),
    pytest.param("dat: {}\n", 4, "unknown top-level field 'dat' in Secret", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "line", "words"), BAD_SECRETS)
def test_a_bad_secret_is_one_line_naming_the_file_line_and_problem(body: str, line: int, words: str) -> None:
    import base64

    b64 = {"crt": base64.b64encode(PAIR.cert_pem.encode()).decode(),
           "key": base64.b64encode(PAIR.key_pem.encode()).decode()}
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: w}\n" + body.replace("{crt}", b64["crt"]).replace(
        "{key}", b64["key"])
    with pytest.raises(ConfigError) as err:
        ConfigStore().apply_text(text, "istio-system", "secret.yaml")
    message = str(err.value)
    assert message.startswith(f"secret.yaml:{line}: "), message
    assert words in message and "\n" not in message


# --- 2. HTTPS servers that terminate TLS ------------------------------------------------------------------------------
# model/gateway.go gatewayRDSRouteName: `https.<server port>.<port name>.<gateway>.<namespace>` (1.13–1.28, the same);
# gateway.go createGatewayHTTPFilterChainOpts + listener.go BuildListenerTLSContext: SNI = the server's hosts, ALPN h2
# and http/1.1, no client certificate; security/model/authentication.go ConstructSdsSecretConfigForCredential: the
# key pair by SDS over ADS as `kubernetes://<credentialName>` (1.13–1.28); listener.go buildListener: a TLS inspector.
@pytest.mark.parametrize("version", PROFILES)
def test_an_https_server_gets_a_tls_chain_on_its_own_route_config(version: str) -> None:
    pc = gateway_pc(store_of(gateway(HTTP_SERVER, HTTPS_SERVER), webapp_vs(), version=version))
    tls = listener(pc, "0.0.0.0_8443")
    assert tls["listenerFilters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    [chain] = tls["filterChains"]
    assert chain["filterChainMatch"] == {"serverNames": [WEBAPP_HOST]}
    context = chain["transportSocket"]["typedConfig"]
    assert context["requireClientCertificate"] is False
    assert context["commonTlsContext"]["alpnProtocols"] == ["h2", "http/1.1"]
    assert context["commonTlsContext"]["tlsCertificateSdsSecretConfigs"] == [
        {"name": "kubernetes://webapp-credential", "sdsConfig": {"ads": {}, "resourceApiVersion": "V3"}}]
    manager = chain["filters"][0]["typedConfig"]
    assert manager["rds"]["routeConfigName"] == HTTPS_RC and manager["statPrefix"] == "outbound_0.0.0.0_8443"
    [vh] = pc.route_configs[HTTPS_RC]["virtualHosts"]
    assert (vh["name"], vh["domains"]) == (f"{WEBAPP_HOST}:443", [WEBAPP_HOST])
    assert vh["routes"][0]["route"]["cluster"] == WEBAPP
    # route.go getRouteOperation: the decorator names the destination cluster's host and port, not the server's
    assert vh["routes"][0]["decorator"]["operation"] == f"webapp.{NS}.svc.cluster.local:80/*"
    assert pc.secrets == {"kubernetes://webapp-credential": (PAIR.cert_pem, PAIR.key_pem)}
    assert pc.gateway_ports == {80: 8080, 443: 8443}
    assert pc.route_configs["http.8080"]["virtualHosts"][0]["name"] == f"{WEBAPP_HOST}:80"  # HTTP unchanged


def test_the_https_route_name_uses_the_server_port_name_gateway_and_namespace() -> None:
    server = ('{port: {number: 443, name: https-web, protocol: HTTPS}, hosts: ["webapp.istioinaction.io"], '
              'name: web-tls, tls: {mode: SIMPLE, credentialName: webapp-credential, minProtocolVersion: TLSV1_2}}')
    pc = gateway_pc(store_of(gateway(server, name="web"), webapp_vs(gateways="[web]")))
    [chain] = listener(pc, "0.0.0.0_8443")["filterChains"]
    manager = chain["filters"][0]["typedConfig"]
    assert manager["rds"]["routeConfigName"] == f"https.443.https-web.web.{NS}"
    assert manager["statPrefix"] == "web-tls"  # gateway.go: the server's name is the stat prefix when it has one
    common = chain["transportSocket"]["typedConfig"]["commonTlsContext"]
    assert common["tlsParams"] == {"tlsMinimumProtocolVersion": "TLSv1_2"}


def test_an_https_server_without_bound_virtual_services_is_a_blackhole() -> None:
    pc = gateway_pc(store_of(gateway(HTTPS_SERVER)))
    [vh] = pc.route_configs[HTTPS_RC]["virtualHosts"]
    assert (vh["name"], vh["domains"], vh["routes"]) == ("blackhole:443", ["*"], [])


def test_a_wildcard_server_matches_any_sni() -> None:
    server = HTTPS_SERVER.replace('["webapp.istioinaction.io"]', '["*"]')
    pc = gateway_pc(store_of(gateway(server), webapp_vs()))
    [chain] = listener(pc, "0.0.0.0_8443")["filterChains"]
    assert "filterChainMatch" not in chain  # listener.go buildListener: `*` among the hosts: no SNI match


# --- missing or unusable Secrets --------------------------------------------------------------------------------------
# pilot/pkg/xds/sds.go SecretGen.generate: nothing is served for a Secret that does not exist (1.13–1.28); the
# listener and its chain stay as they are. pkg/config/analysis/analyzers/gateway/secret.go: IST0101 (1.13+), IST0161
# for a Secret without a usable key pair (1.18+).
@pytest.mark.parametrize("version", PROFILES)
def test_a_missing_secret_keeps_the_chain_and_serves_no_key_pair(version: str) -> None:
    store = store_of(gateway(HTTPS_SERVER), webapp_vs(), version=version, secret=None)
    pc = gateway_pc(store)
    [chain] = listener(pc, "0.0.0.0_8443")["filterChains"]
    assert chain["transportSocket"]["typedConfig"]["commonTlsContext"]["tlsCertificateSdsSecretConfigs"][0][
        "name"] == "kubernetes://webapp-credential"
    assert pc.secrets == {}
    [finding] = [f for f in analyze(store) if f.code == "IST0101"]
    assert finding.level == "Error" and str(finding.source) == "doc0.yaml:7"
    assert 'Referenced credentialName not found: "webapp-credential"' in finding.message
    # the embedded mesh keeps the SDS reference (nothing answers it) and waits only briefly for it
    bound = bind(pc, Placement("127.0.0.9", "/dev/null", ("127.0.0.1", 9)), {})
    tls = [x for x in bound.listeners if x["name"] == "0.0.0.0_8443"][0]
    sds = tls["filterChains"][0]["transportSocket"]["typedConfig"]["commonTlsContext"]
    assert sds["tlsCertificateSdsSecretConfigs"][0]["sdsConfig"]["initialFetchTimeout"] == "1s"
    # and the prediction says the handshake fails
    d = select_route(pc, Request.of(WEBAPP_HOST, "/", scheme="https"), 8443, random.Random(0))
    assert (d.status, d.details) == (0, "no_certificate")


def test_a_secret_in_another_namespace_than_the_gateway_workload_is_missing() -> None:
    store = store_of(gateway(HTTPS_SERVER), webapp_vs(), secret=None)
    store.apply_text(tls_secret("webapp-credential", PAIR, namespace=NS), NS, "secret.yaml")
    assert gateway_pc(store).secrets == {}
    assert [f.code for f in analyze(store) if f.code == "IST0101"] == ["IST0101"]


def test_a_generic_secret_without_a_key_pair_is_invalid() -> None:
    store = store_of(gateway(HTTPS_SERVER), webapp_vs(), secret=None)
    store.apply_text("apiVersion: v1\nkind: Secret\nmetadata: {name: webapp-credential, namespace: istio-system}\n"
                     "stringData: {password: hunter2}\n", NS, "secret.yaml")
    assert gateway_pc(store).secrets == {}
    [finding] = [f for f in analyze(store) if f.code == "IST0161"]
    assert "has no non-empty cert and key, nor tls.crt and tls.key (it has password)" in finding.message


def test_bound_key_pairs_are_written_into_the_tls_context() -> None:
    pc = gateway_pc(store_of(gateway(HTTPS_SERVER), webapp_vs()))
    bound = bind(pc, Placement("127.0.0.9", "/dev/null", ("127.0.0.1", 9)), {})
    tls = [x for x in bound.listeners if x["name"] == "0.0.0.0_8443"][0]
    assert tls["address"]["socketAddress"] == {"address": "127.0.0.9", "portValue": 8443}  # the pod's own IP
    common = tls["filterChains"][0]["transportSocket"]["typedConfig"]["commonTlsContext"]
    assert "tlsCertificateSdsSecretConfigs" not in common
    assert common["tlsCertificates"] == [{"certificateChain": {"inlineString": PAIR.cert_pem},
                                          "privateKey": {"inlineString": PAIR.key_pem}}]


# listener.go BuildListenerTLSContext + ApplyCredentialSDSToServerCommonTLSContext: `credentialNames` (one key pair
# per key type) from 1.27; the field is not in the API before.
@pytest.mark.parametrize(("version", "names"), [("1.26", None), ("1.27", ["kubernetes://a", "kubernetes://b"]),
                                                ("1.28", ["kubernetes://a", "kubernetes://b"])])
def test_credential_names_from_1_27(version: str, names: list[str] | None) -> None:
    server = HTTPS_SERVER.replace("credentialName: webapp-credential", "credentialNames: [a, b]")
    if names is None:
        with pytest.raises(ConfigError, match="credentialNames exists from Istio 1.27"):
            store_of(gateway(server), version=version)
        STORES.pop()  # the failed store never existed
        return
    pc = gateway_pc(store_of(gateway(server), webapp_vs(), version=version))
    common = listener(pc, "0.0.0.0_8443")["filterChains"][0]["transportSocket"]["typedConfig"]["commonTlsContext"]
    assert [s["name"] for s in common["tlsCertificateSdsSecretConfigs"]] == names


# --- 3. PASSTHROUGH ---------------------------------------------------------------------------------------------------
# gateway.go buildGatewayNetworkFiltersFromTLSRoutes (1.13–1.28): per matching `tls` route match, a chain on its
# sniHosts with a TCP proxy (networkfilter.go buildOutboundNetworkFilters: one destination: stat prefix and cluster
# `outbound|<port>||<host>`, the port from the destination, else the service's only port, else the server's;
# several: weighted clusters, stat prefix `<vs>.<namespace>`); a repeated SNI host on the port is skipped.
@pytest.mark.parametrize("version", PROFILES)
def test_passthrough_chains_per_sni_to_the_tls_routes_destination(version: str) -> None:
    pc = gateway_pc(store_of(
        gateway(PASSTHROUGH_SERVER),
        tls_vs('["a.passthrough.io"]', "[{destination: {host: webapp}}]"),
        tls_vs('["b.passthrough.io", "c.passthrough.io"]', """
    - {destination: {host: catalog, subset: version-v1}, weight: 80}
    - {destination: {host: catalog, subset: version-v2}, weight: 20}""", name="weighted"),
        tls_vs('["a.passthrough.io"]', "[{destination: {host: catalog}}]", name="again"), version=version))
    tls = listener(pc, "0.0.0.0_8443")
    assert tls["listenerFilters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    first, second = tls["filterChains"]
    assert first["filterChainMatch"] == {"serverNames": ["a.passthrough.io"]}
    assert "transportSocket" not in first  # passthrough: no TLS context
    assert first["filters"][0]["typedConfig"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "statPrefix": WEBAPP, "cluster": WEBAPP}
    assert second["filterChainMatch"] == {"serverNames": ["b.passthrough.io", "c.passthrough.io"]}
    proxy_config = second["filters"][0]["typedConfig"]
    assert proxy_config["statPrefix"] == f"weighted.{NS}"
    assert proxy_config["weightedClusters"]["clusters"] == [
        {"name": f"outbound|80|version-v1|catalog.{NS}.svc.cluster.local", "weight": 80},
        {"name": f"outbound|80|version-v2|catalog.{NS}.svc.cluster.local", "weight": 20}]
    assert pc.gateway_ports == {443: 8443} and pc.listener_ports == {}


def test_a_passthrough_match_for_another_port_or_gateway_gives_no_chain_and_no_listener() -> None:
    pc = gateway_pc(store_of(
        gateway(PASSTHROUGH_SERVER),
        tls_vs('["a.passthrough.io"]', "[{destination: {host: webapp}}]", match_extra=", port: 8443"),
        tls_vs('["b.passthrough.io"]', "[{destination: {host: webapp}}]", name="other",
               match_extra=", gateways: [elsewhere]")))
    assert "0.0.0.0_8443" not in [x["name"] for x in pc.listeners]  # gateway.go: no chains, no listener
    assert pc.tls_chains == {}


def test_https_and_passthrough_servers_share_the_port_by_sni() -> None:
    pc = gateway_pc(store_of(gateway(HTTPS_SERVER, PASSTHROUGH_SERVER), webapp_vs(),
                             tls_vs('["a.passthrough.io"]', "[{destination: {host: catalog, port: {number: 80}}}]")))
    chains = listener(pc, "0.0.0.0_8443")["filterChains"]
    assert [c["filterChainMatch"]["serverNames"] for c in chains] == [[WEBAPP_HOST], ["a.passthrough.io"]]
    for host, route_config, cluster in ((WEBAPP_HOST, HTTPS_RC, WEBAPP), ("a.passthrough.io", None, CATALOG)):
        d = select_route(pc, Request.of(host, "/", scheme="https"), 8443, random.Random(0))
        assert (d.route_config, d.cluster, d.status) == (route_config, cluster, None)
    d = select_route(pc, Request.of("z.elsewhere.io", "/", scheme="https"), 8443, random.Random(0))
    assert (d.status, d.details) == (0, "filter_chain_not_found")


# model/gateway.go MergeGateways: the first server on a port decides plain-text or TLS; a TLS server whose hosts an
# earlier one on the port has is skipped (Envoy would reject two chains with the same match).
def test_merge_conflicts_on_one_port_keep_the_first_server() -> None:
    clash = HTTPS_SERVER.replace("number: 443", "number: 8080")  # resolves to 8080, where HTTP listens
    twin = HTTPS_SERVER.replace("name: https", "name: https-2")
    pc = gateway_pc(store_of(gateway(HTTP_SERVER, clash, HTTPS_SERVER, twin), webapp_vs()))
    assert pc.listener_ports == {8080: "http.8080"}
    assert [c.route_config for c in pc.tls_chains[8443]] == [HTTPS_RC]


# --- 4. Route collapse ------------------------------------------------------------------------------------------------
# gateway.go collapseDuplicateRoutes + vhostMergeable (PILOT_ENABLE_ROUTE_COLLAPSE_OPTIMIZATION, default true in
# 1.13–1.28): hosts whose virtual hosts carry the very same routes (one VirtualService's, built once per gateway)
# and the same requireTls become one virtual host; the first in host order (longest, then alphabetical, wildcards
# last) keeps its name and gets the others' domains. Not for sidecars (httproute.go has no collapse).
@pytest.mark.parametrize("version", PROFILES)
def test_one_virtual_service_with_several_hosts_collapses_into_one_virtual_host(version: str) -> None:
    hosts = '["www.istioinaction.io", "webapp.istioinaction.io", "*.shop.io"]'
    server = '{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}'
    pc = gateway_pc(store_of(gateway(server), webapp_vs(hosts=hosts), version=version))
    [vh] = pc.route_configs["http.8080"]["virtualHosts"]
    assert vh["name"] == f"{WEBAPP_HOST}:80"
    assert vh["domains"] == [WEBAPP_HOST, "www.istioinaction.io", "*.shop.io"]
    d = select_route(pc, Request.of("a.shop.io", "/"), 8080, random.Random(0))
    assert (d.virtual_host, d.cluster) == (f"{WEBAPP_HOST}:80", WEBAPP)
    assert pc.origin("http.8080", vh["name"], 0) is not None


def test_hosts_whose_routes_differ_stay_apart() -> None:
    server = '{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}'
    canary = y("""
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata: {name: www-extra}
        spec:
          hosts: ["www.istioinaction.io"]
          gateways: [coolstore-gateway]
          http:
          - match: [{uri: {prefix: /api}}]
            route: [{destination: {host: catalog}}]
        """)
    pc = gateway_pc(store_of(gateway(server), webapp_vs(hosts='["www.istioinaction.io", "webapp.istioinaction.io"]'),
                             canary))
    names = {vh["name"]: vh["domains"] for vh in pc.route_configs["http.8080"]["virtualHosts"]}
    assert names == {f"{WEBAPP_HOST}:80": [WEBAPP_HOST], "www.istioinaction.io:80": ["www.istioinaction.io"]}


def test_https_redirect_keeps_virtual_hosts_apart() -> None:
    redirect = ('{port: {number: 80, name: http, protocol: HTTP}, hosts: ["www.istioinaction.io"], '
                'tls: {httpsRedirect: true}}')
    plain = '{port: {number: 80, name: http2, protocol: HTTP}, hosts: ["webapp.istioinaction.io"]}'
    pc = gateway_pc(store_of(gateway(redirect, plain),
                             webapp_vs(hosts='["www.istioinaction.io", "webapp.istioinaction.io"]')))
    vhosts = {vh["name"]: vh.get("requireTls") for vh in pc.route_configs["http.8080"]["virtualHosts"]}
    assert vhosts == {f"{WEBAPP_HOST}:80": None, "www.istioinaction.io:80": "ALL"}


# --- validation (pkg/config/validation validateServer, validateTLSOptions, validateTLSRoute) --------------------------
BAD_GATEWAYS = [
    pytest.param('{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["a.io"]}',
                 "a HTTPS server needs tls settings", id="https-without-tls"),
    pytest.param('{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["a.io"], tls: {mode: SIMPLE}}',
                 "SIMPLE TLS needs credentialName", id="simple-without-credential"),
    pytest.param('{port: {number: 80, name: http, protocol: HTTP}, hosts: ["a.io"], tls: {mode: SIMPLE}}',
                 "a HTTP server cannot have TLS settings", id="http-with-simple"),
    pytest.param('{port: {number: 443, protocol: HTTPS}, hosts: ["a.io"], tls: {mode: PASSTHROUGH}}',
                 "a HTTPS server's port needs a name", id="https-without-port-name"),
    pytest.param('{port: {number: 443, name: x, protocol: HTTPZ}, hosts: ["a.io"]}',
                 "unsupported protocol 'HTTPZ'", id="unknown-protocol"),
    pytest.param('{port: {number: 443, name: x, protocol: HTTPS}, hosts: ["a.io"], tls: {mode: SIMPLER}}',
                 "'SIMPLER' is not one of PASSTHROUGH", id="unknown-mode"),
]


@pytest.mark.parametrize(("server", "words"), BAD_GATEWAYS)
def test_a_bad_gateway_server_is_one_clear_line(server: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        ConfigStore().apply_text(gateway(server), NS, "gw.yaml")
    assert str(err.value).startswith("gw.yaml:7: ") and words in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_an_sni_host_outside_the_virtual_services_hosts_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        ConfigStore().apply_text(tls_vs('["a.elsewhere.io"]', "[{destination: {host: webapp}}]"), NS, "vs.yaml")
    assert str(err.value).startswith("vs.yaml:8: spec.tls[0].match[0].sniHosts[0]: SNI host 'a.elsewhere.io' is not "
                                     "matched by any host"), str(err.value)


def test_servers_meshlib_does_not_translate_are_reported_not_dropped_silently() -> None:
    tcp = '{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}'
    mutual = ('{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["a.io"], '
              'tls: {mode: MUTUAL, credentialName: webapp-credential}}')
    store = store_of(gateway(tcp, mutual))
    found = [(f.code, str(f.source)) for f in analyze(store) if f.code == "MSH0005"]
    assert found == [("MSH0005", "doc0.yaml:7"), ("MSH0005", "doc0.yaml:8")]
    assert gateway_pc(store).tls_chains == {} and [x["name"] for x in gateway_pc(store).listeners] == []


# --- 6. prediction ----------------------------------------------------------------------------------------------------
def test_explain_follows_https_and_passthrough_through_the_node_port() -> None:
    store = store_of(gateway(HTTP_SERVER, HTTPS_SERVER, PASSTHROUGH_SERVER), webapp_vs(),
                     tls_vs('["a.passthrough.io"]', "[{destination: {host: catalog}}]"))
    pc, d = decide(store, GATEWAY_PROXY, Request.of(f"{WEBAPP_HOST}:30005", "/api/catalog"))
    assert (d.route_config, d.virtual_host, d.cluster) == (HTTPS_RC, f"{WEBAPP_HOST}:443", WEBAPP)
    _, d = decide(store, GATEWAY_PROXY, Request.of(WEBAPP_HOST, "/", scheme="https"))
    assert d.route_config == HTTPS_RC
    _, d = decide(store, GATEWAY_PROXY, Request.of(WEBAPP_HOST, "/"))
    assert d.route_config == "http.8080"
    text = explain_text(store, GATEWAY_PROXY, Request.of("a.passthrough.io:30005", "/"))
    assert f"destination  {CATALOG}" in text and "TLS passthrough by SNI" in text


def test_placement_of_a_gateway_port_other_than_8080_is_the_pod_ip() -> None:
    pc = gateway_pc(store_of(gateway(HTTP_SERVER, HTTPS_SERVER), webapp_vs()))
    bound = bind(pc, Placement("127.0.0.9", "/dev/null", ("127.0.0.1", 9), listen={8080: ("127.0.0.1", 30000)}),
                 {(NS, "webapp"): [PodEndpoint("127.0.0.20")]})
    addresses = {x["name"]: x["address"]["socketAddress"] for x in bound.listeners}
    assert addresses == {"0.0.0.0_8080": {"address": "127.0.0.1", "portValue": 30000},
                         "0.0.0.0_8443": {"address": "127.0.0.9", "portValue": 8443}}


def test_the_tables_translations_pass_envoy_validate() -> None:
    """Every store above, every proxy bound to loopback as the mesh runs it, in one `envoy --mode validate` run."""
    assert_valid(STORES, "the gateway TLS tables' stores")
