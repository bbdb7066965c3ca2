"""Service ports Istio sniffs: a port whose name (up to its first `-`) and `appProtocol` name no protocol Istio
knows gets its own outbound listener on the service VIP, `<vip>_<port>`, with an HTTP chain chosen by the HTTP
inspector (route config `<fqdn>:<port>`) and a TCP chain for everything else (issue 10).

Sources, the same from Istio 1.13 to 1.28: pilot/pkg/serviceregistry/kube/conversion.go (the port's protocol:
appProtocol, else the name's prefix, else Unsupported); pilot/pkg/networking/core/listener.go
(ListenerProtocolAuto binds the VIP; buildSidecarOutboundHTTPListenerOpts names the route `<hostname>:<port>`);
httproute.go getVirtualHostsForSniffedServicePort (only the service's virtual host, its domains `*`, no
catch-all)."""

from __future__ import annotations

import random

import pytest
from helpers import NS, proxy, world

from meshlib.config.store import _port_protocol
from meshlib.local.envoy.binary import validate
from meshlib.router import Request, select_route
from meshlib.xds.bind import Placement, PodEndpoint, Resources, bind
from meshlib.xds.static import static_bootstrap

PROFILES = ("1.13", "1.17", "1.22", "1.28")
REVIEWS_HOST = f"reviews.{NS}.svc.cluster.local"


def reviews(port: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: reviews}}
spec:
  selector: {{app: reviews}}
  ports: [{port}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: reviews-v2}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: reviews, version: v2}}}}
  template:
    metadata: {{labels: {{app: reviews, version: v2}}}}
    spec:
      containers: [{{name: reviews, image: istioinaction/reviews:latest, ports: [{{containerPort: 9080}}]}}]
"""


REVIEWS_VS = """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
  - route: [{destination: {host: reviews}}]
"""


@pytest.mark.parametrize(("name", "app_protocol", "protocol"), [
    ("http", None, "HTTP"), ("http-web", None, "HTTP"), ("HTTP", None, "HTTP"), ("http2", None, "HTTP2"),
    ("grpc", None, "GRPC"), ("grpc-web", None, "GRPC"), ("tcp-db", None, "TCP"), ("tls", None, "TCP"),
    ("https", None, "TCP"), ("mongo", None, "TCP"), ("redis-cache", None, "TCP"), ("mysql", None, "TCP"),
    ("", None, "AUTO"), (None, None, "AUTO"), ("web", None, "AUTO"), ("httpx", None, "AUTO"),
    ("metrics", None, "AUTO"), ("web", "http", "HTTP"), ("http", "tcp", "TCP"), ("web", "kubernetes.io/h2c", "HTTP2"),
    ("http", "something-else", "AUTO"),
])
def test_a_ports_protocol_is_what_istio_reads_from_its_name_and_app_protocol(name, app_protocol, protocol):
    assert _port_protocol(name, app_protocol) == protocol


@pytest.mark.parametrize("version", PROFILES)
def test_an_unnamed_port_gets_a_vip_listener_and_a_route_config_of_its_own(version):
    store = world(reviews("{port: 9080}"), version=version)
    pc = proxy(store)
    [sniffed] = pc.sniffed
    assert sniffed.route_config == f"{REVIEWS_HOST}:9080"
    listener = next(x for x in pc.listeners if x["name"] == sniffed.listener)
    svc = store.find_service(REVIEWS_HOST)
    assert svc is not None and listener["name"] == f"{svc.address}_9080"
    assert listener["address"]["socketAddress"] == {"address": svc.address, "portValue": 9080}
    [http] = listener["filterChains"]
    assert http["filterChainMatch"]["applicationProtocols"] == ["http/1.0", "http/1.1", "h2c"]
    assert http["filters"][0]["typedConfig"]["rds"]["routeConfigName"] == f"{REVIEWS_HOST}:9080"
    tcp = listener["defaultFilterChain"]["filters"][0]["typedConfig"]
    assert tcp["cluster"] == f"outbound|9080||{REVIEWS_HOST}"
    assert [f["name"] for f in listener["listenerFilters"]] == ["envoy.filters.listener.http_inspector"]
    rc = pc.route_configs[f"{REVIEWS_HOST}:9080"]
    assert [(vh["name"], vh["domains"]) for vh in rc["virtualHosts"]] == [(f"{REVIEWS_HOST}:9080", ["*"])]
    assert 9080 not in pc.listener_ports and "9080" not in pc.route_configs  # no 0.0.0.0_9080 for a sniffed port


@pytest.mark.parametrize("version", PROFILES)
def test_a_named_port_stays_on_the_shared_per_port_route_config(version):
    pc = proxy(world(reviews("{name: http-api, port: 9080}"), version=version))
    assert pc.sniffed == []
    assert pc.listener_ports[9080] == "9080"
    names = [vh["name"] for vh in pc.route_configs["9080"]["virtualHosts"]]
    assert f"{REVIEWS_HOST}:9080" in names and names[-1] == "allow_any"


def test_a_virtual_service_routes_the_sniffed_port_and_prediction_uses_its_route_config():
    pc = proxy(world(reviews("{port: 9080}"), REVIEWS_VS))
    rc = pc.route_configs[f"{REVIEWS_HOST}:9080"]
    [vh] = rc["virtualHosts"]
    assert len(vh["routes"]) == 2 and vh["routes"][0]["match"]["headers"][0]["name"] == "x-user"
    for authority in ("reviews:9080", f"{REVIEWS_HOST}:9080", f"reviews.{NS}:9080"):
        d = select_route(pc, Request.of(authority, "/", headers={"x-user": "jason"}), 9080, random.Random(0))
        assert (d.route_config, d.status) == (f"{REVIEWS_HOST}:9080", 418), authority
    plain = select_route(pc, Request.of("reviews:9080", "/"), 9080, random.Random(0))
    assert plain.cluster == f"outbound|9080||{REVIEWS_HOST}"
    elsewhere = select_route(pc, Request.of("ratings:9080", "/"), 9080, random.Random(0))
    assert elsewhere.route_config is None and elsewhere.cluster == "PassthroughCluster"


def test_a_sniffed_port_beside_an_http_service_on_the_same_port_keeps_its_own_listener():
    """An HTTP service on 9080 makes `0.0.0.0_9080` with route config `9080`, which lists the sniffed service too
    (its virtual hosts are built for HTTP and sniffed ports alike); the sniffed service's VIP listener still wins
    for its own traffic."""
    details = reviews("{name: http, port: 9080}").replace("reviews", "details")
    pc = proxy(world(reviews("{port: 9080}"), details))
    assert pc.listener_ports[9080] == "9080"
    names = [vh["name"] for vh in pc.route_configs["9080"]["virtualHosts"]]
    assert f"{REVIEWS_HOST}:9080" in names and f"details.{NS}.svc.cluster.local:9080" in names
    assert pc.route_config_for(9080, "reviews") == f"{REVIEWS_HOST}:9080"
    assert pc.route_config_for(9080, "details") == "9080"


def test_envoy_accepts_the_sniffed_listener_as_translated_and_as_the_mesh_runs_it():
    store = world(reviews("{port: 9080}"), REVIEWS_VS)
    pc = proxy(store)
    translated = Resources(list(pc.clusters.values()), [], [x for x in pc.listeners if x["name"].endswith("_9080")],
                           list(pc.route_configs.values()))
    assert validate(static_bootstrap([translated])) is None
    place = Placement("127.0.0.2", "/dev/null", ("127.0.0.1", 9), {}, {})
    running = bind(pc, place, {(NS, "reviews-v2"): [PodEndpoint("127.0.0.3")]})
    internal = next(x for x in running.listeners if x["name"].endswith("_9080"))
    assert "internalListener" in internal and "defaultFilterChain" not in internal
    capture = next(x for x in running.listeners if x["name"] == "virtualOutbound")
    vhosts = capture["filterChains"][0]["filters"][0]["typedConfig"]["routeConfig"]["virtualHosts"]
    mine = next(v for v in vhosts if v["name"] == f"capture|{internal['name']}")
    assert "reviews:9080" in mine["domains"] and f"{REVIEWS_HOST}:9080" in mine["domains"]
    assert validate(static_bootstrap([running])) is None
