"""The embedded mesh as istiod + Envoy: config reaches running proxies like xDS, a rejected config changes
nothing, `proxy-config` shows what Envoy runs, `proxy-status` shows whether each proxy runs the latest push."""

from __future__ import annotations

import json
import time

import pytest
from meshclient import CH5, NS, SERVICES, WEBAPP_HOST, request, send_many
from testkit.alpha import RANDOM_ALPHA

from meshlib.local.mesh import ProxyRejected
from meshlib.local.serve import Handlers
from meshlib.stats import binomial_check
from meshlib.xds.dialect import from_config_dump, routes_table

WORLD = [SERVICES, CH5 / "webapp-catalog-gw-vs.yaml", CH5 / "catalog-dest-rule.yaml"]
TOO_COMPLEX = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - match: [{uri: {regex: "/items/[a-z0-9]{1,200}"}}]
    route: [{destination: {host: catalog, subset: version-v2}}]
"""


def envoy_pids(mesh) -> dict[str, int]:
    return {p.name: p.sidecar.envoy.pid for p in mesh.pods() if p.sidecar is not None}


def images(replies) -> int:
    return sum("imageUrl" in r.text for r in replies)


def test_apply_changes_running_envoys_without_restarting_them(start_mesh):
    mesh = start_mesh(WORLD)
    before = envoy_pids(mesh)
    assert images(send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)) > 0  # v1 and v2 both answer

    mesh.apply([CH5 / "catalog-vs-v1-mesh.yaml"])

    assert images(send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)) == 0  # the route now pins v1
    assert envoy_pids(mesh) == before, "a config change restarted a proxy"
    assert {status.state for _, status in mesh.proxy_status()} == {"SYNCED"}


def test_a_config_envoy_rejects_is_one_clear_error_and_changes_nothing(start_mesh):
    mesh = start_mesh(WORLD)
    mesh.apply([CH5 / "catalog-vs-v1-mesh.yaml"])
    before = envoy_pids(mesh)
    vs_before = mesh.store.get("VirtualService", NS, "catalog")
    assert vs_before is not None and str(vs_before.source).endswith("catalog-vs-v1-mesh.yaml:1")

    with pytest.raises(ProxyRejected) as err:
        mesh.apply(text=TOO_COMPLEX)

    message = str(err.value)
    assert "VirtualService/catalog.istioinaction (<inline>:1) not applied" in message, message
    assert "RE2 program size" in message and "every proxy keeps its last good config" in message, message
    assert "\n" not in message
    assert mesh.store.get("VirtualService", NS, "catalog") is vs_before  # the store is as before
    assert {status.state for _, status in mesh.proxy_status()} == {"SYNCED"}
    assert envoy_pids(mesh) == before
    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)
    assert [r.status for r in replies] == [200] * 20 and images(replies) == 0  # still the last good route


def test_proxy_config_shows_what_the_running_envoy_has(start_mesh):
    mesh = start_mesh(WORLD)
    mesh.apply([CH5 / "catalog-vs-v2-request-mesh.yaml"])
    dump = mesh.config_dump("webapp", NS)
    kinds = {c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]}
    assert {"ListenersConfigDump", "ClustersConfigDump", "RoutesConfigDump", "EndpointsConfigDump"} <= kinds
    pc = from_config_dump(dump, "webapp", "sidecar", NS)
    table = routes_table(pc)
    cohort = [row for row in table.splitlines() if "x-istio-cohort=internal" in row]
    assert len(cohort) == 1 and cohort[0].split()[-1] == "catalog.istioinaction", table  # the applied route runs
    v2 = "outbound|80|version-v2|catalog.istioinaction.svc.cluster.local"
    assert v2 in pc.clusters and pc.clusters[v2]["type"] == "EDS"

    out = Handlers(mesh, None).proxy_config({"proxy": "deploy/webapp", "namespace": NS, "what": "endpoints"})
    catalog_v2 = mesh.find_pods("catalog-v2", NS)[0]
    assert f"{catalog_v2.ip}:3000" in out and v2 in out, out
    raw = json.loads(Handlers(mesh, None).proxy_config({"proxy": "deploy/webapp", "namespace": NS,
                                                        "what": "all", "output": "config_dump"}))
    assert raw["configs"][0]["@type"].startswith("type.googleapis.com/envoy.admin.v3.")


def test_proxy_status_lists_every_proxy_synced(start_mesh):
    mesh = start_mesh(WORLD)
    out = Handlers(mesh, None).proxy_status({})
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS"]
    assert len(lines) - 1 == len(mesh.pods())
    assert all(line.split()[2:6] == ["SYNCED"] * 4 for line in lines[1:]), out
    assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 200


def _deployment(name: str, version: str, locality: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: catalog, version: {version}}}}}
  template:
    metadata: {{labels: {{app: catalog, version: {version}, istio-locality: {locality}}}}}
    spec:
      containers:
      - name: catalog
        image: istioinaction/catalog:latest
        env: [{{name: SHOW_IMAGE, value: "{str(version == 'v2').lower()}"}}]
        ports: [{{containerPort: 3000}}]
"""


WEBAPP_IN_ZONE_A = (SERVICES / "webapp" / "kubernetes" / "webapp.yaml").read_text().replace(
    "      labels:\n        app: webapp\n", "      labels:\n        app: webapp\n        istio-locality: us-east.a\n")


OUTLIER_DR = """\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: catalog}
spec:
  host: catalog
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}
"""


def _two_zones(start_mesh):
    """webapp in us-east/a; catalog v1 in us-east/a and catalog v2 (answers with images) in us-east/b."""
    mesh = start_mesh([SERVICES / "catalog" / "kubernetes" / "catalog.yaml", CH5 / "webapp-catalog-gw-vs.yaml"])
    mesh.apply(text=WEBAPP_IN_ZONE_A + "---\n" + _deployment("catalog", "v1", "us-east.a") + "---\n"
               + _deployment("catalog-v2", "v2", "us-east.b"))
    return mesh


def test_with_outlier_detection_traffic_stays_in_the_callers_zone(start_mesh):
    """Locality failover (istiod's, from pod labels): webapp in us-east/a reaches only the catalog pod of its own
    zone while that pod is healthy; without outlier detection both zones answer."""
    assert "istio-locality: us-east.a" in WEBAPP_IN_ZONE_A
    mesh = _two_zones(start_mesh)
    assert 0 < images(send_many(mesh, "/api/catalog", WEBAPP_HOST, 40)) < 40  # both zones answer

    mesh.apply(text=OUTLIER_DR)
    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 40)
    assert [r.status for r in replies] == [200] * 40
    assert images(replies) == 0, "a request left the caller's zone while its own zone was healthy"


def test_distribute_sends_the_stated_share_of_a_zones_traffic_to_each_zone(start_mesh):
    """localityLbSetting `distribute` (istiod's locality weights): webapp in us-east/a sends 20% to its own zone and
    80% to us-east/b, where failover alone would keep everything in its zone. Exact binomial test at alpha 0.001
    on 400 requests."""
    mesh = _two_zones(start_mesh)
    mesh.apply(text=OUTLIER_DR + """\
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-east/a/*
          to: {"us-east/a/*": 20, "us-east/b/*": 80}
""")
    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 400)
    assert [r.status for r in replies] == [200] * 400
    verdict = binomial_check(images(replies), 400, 0.80, alpha=RANDOM_ALPHA, label="catalog in us-east/b")
    assert verdict.passed, verdict.describe()


def test_a_gateway_server_with_https_redirect_answers_301_to_https(start_mesh):
    """Gateway `tls.httpsRedirect` (istiod: require_tls ALL on the server's virtual hosts): the running gateway
    Envoy answers plain HTTP with 301 to the https URL and forwards nothing (issue 10)."""
    mesh = start_mesh(WORLD)
    assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 200
    redirecting = (CH5 / "webapp-catalog-gw-vs.yaml").read_text().replace(
        '    - "webapp.istioinaction.io"\n', '    - "webapp.istioinaction.io"\n    tls: {httpsRedirect: true}\n', 1)
    assert "httpsRedirect" in redirecting
    mesh.apply(text=redirecting)
    reply = request(mesh, "/api/catalog?x=1", WEBAPP_HOST)
    assert reply.status == 301, reply
    assert reply.headers["location"] == "https://webapp.istioinaction.io/api/catalog?x=1"


CH6 = CH5.parent / "ch6"
SIMPLE_WEB_HOST = "simple-web.istioinaction.io"
CH6_WORLD = [CH6 / "simple-backend.yaml", CH6 / "simple-web.yaml", CH6 / "simple-web-gateway.yaml"]
def _backend_vhost(mesh) -> dict:
    dump = mesh.config_dump("simple-web", NS)
    rc = next(r["route_config"] for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")
              for r in c.get("dynamic_route_configs", []) if r["route_config"]["name"] == "80")
    return next(vh for vh in rc["virtual_hosts"] if vh["name"].startswith("simple-backend."))


def test_chapter_6_hedging_and_a_go_duration_back_off_run_on_envoy(start_mesh):
    """The repo's hedging EnvoyFilter with its per-try timeout, and the retry-status filter whose back-off is written
    `50ms` as the book writes it (istiod reads Go durations in patch values): the running simple-web Envoy takes
    both, and a 1 s simple-backend-1 never answers a client, as its attempts pass the 300 ms per-try timeout and
    another endpoint answers first."""
    mesh = start_mesh(CH6_WORLD)
    for name in ("simple-backend-1-slow.yaml", "simple-backend-vs-retry-per-try-timeout.yaml",
                 "simple-backend-envoyfilter-hedging.yaml", "simple-backend-envoyfilter-retry-status.yaml"):
        mesh.apply([CH6 / name])
    assert mesh.proxy_config("simple-web", NS).not_applied == []
    vhost = _backend_vhost(mesh)
    assert vhost["hedge_policy"] == {"hedge_on_per_try_timeout": True}
    policy = vhost["routes"][0]["route"]["retry_policy"]
    assert policy["per_try_timeout"] == "0.300s" and policy["retry_back_off"] == {"base_interval": "0.050s"}
    replies = send_many(mesh, "/", SIMPLE_WEB_HOST, 20)
    assert [r.status for r in replies] == [200] * 20, [str(r) for r in replies if r.status != 200]
    assert not any("simple-backend-1" in r.text for r in replies)


def test_when_the_zones_backend_fails_outlier_detection_fails_over_to_the_other_zone(start_mesh):
    """Locality failover (istiod's priorities, from istio-locality labels): simple-web in us-west1-a calls only the
    simple-backend of its zone; once that pod fails every request, outlier detection ejects it and the us-west1-b
    pods answer. Envoy applies a health change within its update_merge_window (1 s, Istio leaves the default) of
    the last membership change for that priority only when the window ends, so the check waits it out."""
    mesh = start_mesh(CH6_WORLD)
    for name in ("simple-backend-zones.yaml", "simple-web-zone-a.yaml", "simple-backend-dr-outlier.yaml"):
        mesh.apply([CH6 / name])
    replies = send_many(mesh, "/", SIMPLE_WEB_HOST, 20)
    assert [r.status for r in replies] == [200] * 20 and all("simple-backend-1" in r.text for r in replies)

    mesh.apply([CH6 / "simple-backend-1-zone-a-failing.yaml"])
    assert request(mesh, "/", SIMPLE_WEB_HOST).status == 500  # the first failure ejects it
    time.sleep(1.5)
    replies = send_many(mesh, "/", SIMPLE_WEB_HOST, 20)
    assert [r.status for r in replies] == [200] * 20 and all("simple-backend-2" in r.text for r in replies)
