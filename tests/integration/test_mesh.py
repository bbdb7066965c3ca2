"""The embedded mesh end to end: real HTTP over loopback, asserting what a user of the walkthrough sees.

Sections 5.2–5.5 of the walkthrough (seed/istio-in-action-ch5-traffic-control.md) first, then each routing
feature of the proxy (istio-semantics.md §1–§4), metrics (§6.1) and live reconfiguration.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
import yaml
from meshclient import (
    CATALOG_HOST,
    CATALOG_V1,
    CATALOG_V2,
    CH5,
    COHORT,
    FORUM,
    NS,
    WEBAPP,
    WEBAPP_HOST,
    count_lines,
    pod_names,
    request,
    send_many,
    settle,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from testkit.alpha import RANDOM_ALPHA

from meshlib.stats import binomial_check

CATALOGS = [CATALOG_V1, CATALOG_V2]
WEBAPP_WORLD = [*CATALOGS, WEBAPP, CH5 / "webapp-catalog-gw-vs.yaml"]
GATEWAY_WORLD = [*CATALOGS, CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-gateway.yaml"]

V1_ITEMS_LINE_GW = f"GET {CATALOG_HOST} /items 200"
V1_ITEMS_LINE_MESH = "GET catalog.istioinaction:80 /items 200"


def gateway_vs(*rules: dict[str, Any], name: str = "catalog-vs-from-gw") -> str:
    """A VirtualService for catalog.istioinaction.io at catalog-gateway with the given `http` rules."""
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService", "metadata": {"name": name},
        "spec": {"hosts": [CATALOG_HOST], "gateways": ["catalog-gateway"], "http": list(rules)},
    }, sort_keys=False)


def to(subset: str) -> list[dict[str, Any]]:
    """A `route:` with one destination: the catalog's `subset`."""
    return [{"destination": {"host": "catalog", "subset": subset}}]


def weighted(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"destination": {"host": "catalog", "subset": subset}, "weight": w} for subset, w in pairs]


def served_by(mesh, path: str, headers: dict[str, str] | None = None) -> str:
    """Which catalog version logged the request (so 404s for unknown items count too)."""
    before = {w: len(mesh.logs(w, NS)) for w in ("catalog", "catalog-v2")}
    reply = request(mesh, path, CATALOG_HOST, headers)
    grew = [w for w in before if len(mesh.logs(w, NS)) > before[w]]
    assert len(grew) == 1, (path, reply, grew)
    if reply.status == 200:
        assert reply.has_image == (grew[0] == "catalog-v2"), reply
    return {"catalog": "v1", "catalog-v2": "v2"}[grew[0]]


def images(replies) -> int:
    return sum(1 for r in replies if r.has_image)


def statuses(replies) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in replies:
        out[r.status] = out.get(r.status, 0) + 1
    return out


# ==========================================================================================================
# The walkthrough, section by section
# ==========================================================================================================


def test_5_2_2_gateway_routes_catalog_host_to_the_catalog(start_mesh):
    mesh = start_mesh([CATALOG_V1, CH5 / "catalog-gateway.yaml", CH5 / "catalog-vs.yaml"])

    reply = request(mesh, "/items", CATALOG_HOST)

    assert reply.status == 200, reply
    items = reply.json()
    assert [i["name"] for i in items][:2] == ["Elinor Glasses", "Atlas Shirt"]
    assert not reply.has_image
    assert mesh.logs("catalog", NS) == [V1_ITEMS_LINE_GW]


def test_5_2_3_without_subsets_both_versions_answer(start_mesh):
    mesh = start_mesh([*CATALOGS, CH5 / "catalog-gateway.yaml", CH5 / "catalog-vs.yaml"])

    replies = send_many(mesh, "/items", CATALOG_HOST, 60)

    assert statuses(replies) == {200: 60}
    assert 0 < images(replies) < 60, "both catalog v1 and v2 should answer while no subset is routed"


def test_5_2_4_all_traffic_to_v1_at_the_gateway(start_mesh):
    mesh = start_mesh([*CATALOGS, CH5 / "catalog-gateway.yaml", CH5 / "catalog-vs.yaml"])
    mesh.apply([CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v1.yaml"])

    replies = send_many(mesh, "/items", CATALOG_HOST, 50)

    assert statuses(replies) == {200: 50}
    assert images(replies) == 0
    assert mesh.logs("catalog-v2", NS) == []
    assert count_lines(mesh, "catalog", V1_ITEMS_LINE_GW) == 50


def test_5_2_4_all_traffic_to_v1_inside_the_mesh(start_mesh):
    mesh = start_mesh(WEBAPP_WORLD)
    before = send_many(mesh, "/api/catalog", WEBAPP_HOST, 40)
    assert 0 < images(before) < 40, "precondition: webapp reaches both versions through the catalog Service"

    mesh.apply([CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v1-mesh.yaml"])
    v2_lines = len(mesh.logs("catalog-v2", NS))
    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 50)

    assert statuses(replies) == {200: 50}
    assert images(replies) == 0, [str(r) for r in replies if r.has_image][:3]
    assert len(mesh.logs("catalog-v2", NS)) == v2_lines


def test_5_2_5_internal_cohort_header_goes_to_v2_at_the_gateway(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply([CH5 / "catalog-vs-v2-request.yaml"])

    cohort = send_many(mesh, "/items", CATALOG_HOST, 20, headers=COHORT)
    others = send_many(mesh, "/items", CATALOG_HOST, 20)
    wrong_value = send_many(mesh, "/items", CATALOG_HOST, 10, headers={"x-istio-cohort": "Internal"})

    assert statuses(cohort + others + wrong_value) == {200: 50}
    assert images(cohort) == 20
    assert images(others) == 0
    assert images(wrong_value) == 0, "header values match case-sensitively"


def test_5_2_6_routing_deep_in_the_call_graph(start_mesh):
    mesh = start_mesh(WEBAPP_WORLD)
    mesh.apply([CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v2-request-mesh.yaml",
                CH5 / "webapp-access-log.yaml"])

    cohort = send_many(mesh, "/api/catalog", WEBAPP_HOST, 20, headers=COHORT)
    others = send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)

    assert statuses(cohort + others) == {200: 40}
    assert images(cohort) == 20
    assert images(others) == 0
    # the webapp's sidecar made the decision: its access log names the subset clusters it picked
    proxy_log = mesh.logs("webapp", NS, container="istio-proxy")
    v2 = [line for line in proxy_log if "outbound|80|version-v2|catalog.istioinaction.svc.cluster.local" in line]
    v1 = [line for line in proxy_log if "outbound|80|version-v1|catalog.istioinaction.svc.cluster.local" in line]
    assert (len(v2), len(v1)) == (20, 20), proxy_log[:4]
    assert all('"catalog.istioinaction:80"' in line and '"GET /items HTTP/1.1" 200' in line for line in v1 + v2)


def test_5_3_ten_percent_of_traffic_shifts_to_v2(start_mesh):
    """1,000 requests at the 90/10 VS: an exact two-sided binomial test at RANDOM_ALPHA (0.1% false failures)
    passes when the v2 count lies in `verdict.acceptance` (70 to 132 of 1,000)."""
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v2-10-90-mesh.yaml"],
                      seed=53)

    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 1000, concurrency=32)

    assert statuses(replies) == {200: 1000}
    verdict = binomial_check(images(replies), len(replies), 0.10, alpha=RANDOM_ALPHA, label="v2")
    assert verdict.passed, verdict.describe()
    assert not verdict.underpowered, verdict.describe()
    # what the sidecars saw agrees with what the clients saw
    assert len(mesh.logs("catalog-v2", NS)) == verdict.successes
    assert len(mesh.logs("catalog", NS)) == 1000 - verdict.successes


def test_5_4_mirrored_traffic_never_reaches_clients(start_mesh):
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v2-mirror.yaml"])

    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 100)

    assert statuses(replies) == {200: 100}
    assert images(replies) == 0
    # Envoy appends -shadow to the host part of the Host header (before the port) up to Istio 1.27;
    # the webapp calls `catalog.istioinaction:80`
    shadow = "GET catalog.istioinaction-shadow:80 /items 200"
    # read once, at once: the mesh waits until every proxy's records of the requests it began are in (the
    # mirror copies too), so no step needs to poll for them
    mirrored = count_lines(mesh, "catalog-v2", shadow)
    assert mirrored == 100, mesh.logs("catalog-v2", NS)[:5]
    assert {pod.rsplit("-", 2)[0]: progress for pod, progress in mesh.records_progress().items()} == {
        "istio-ingressgateway": (100, 100), "webapp": (200, 200), "catalog": (100, 100),
        "catalog-v2": (100, 100)}  # webapp: inbound and outbound; its capture pass writes none
    assert set(mesh.logs("catalog-v2", NS)) == {shadow}
    assert count_lines(mesh, "catalog", V1_ITEMS_LINE_MESH) == 100
    # catalog-v2's sidecar reports the mirrored requests it served
    v2_metrics = mesh.metrics_text("catalog-v2", NS)
    assert 'reporter="destination",source_workload="webapp"' in v2_metrics
    assert re.search(r'istio_requests_total\{reporter="destination",[^}]*destination_workload="catalog-v2"[^}]*'
                     r'response_code="200"[^}]*\} 100\.0', v2_metrics), v2_metrics


def test_5_4_mirror_of_a_short_host_name_arrives_as_catalog_shadow(start_mesh):
    """The book's log line: a client calling `catalog:80` makes the mirror arrive as `catalog-shadow:80`."""
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v2-mirror.yaml"])
    short_host = WEBAPP.read_text().replace("value: catalog.istioinaction", "value: catalog")
    assert short_host != WEBAPP.read_text()
    mesh.apply(text=short_host)

    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)

    assert statuses(replies) == {200: 20}
    assert images(replies) == 0
    line = "GET catalog-shadow:80 /items 200"
    assert wait_until(lambda: count_lines(mesh, "catalog-v2", line), lambda n: n >= 20) == 20, \
        mesh.logs("catalog-v2", NS)[:5]
    assert count_lines(mesh, "catalog", "GET catalog:80 /items 200") == 20


def test_5_4_mirror_keeps_the_host_on_istio_1_28(start_mesh):
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v2-mirror.yaml"],
                      istio_version="1.28")

    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 30)

    assert statuses(replies) == {200: 30}
    assert images(replies) == 0
    mirrored = wait_until(lambda: count_lines(mesh, "catalog-v2", V1_ITEMS_LINE_MESH), lambda n: n >= 30)
    assert mirrored == 30, mesh.logs("catalog-v2", NS)[:5]
    assert not any("-shadow" in line for line in mesh.logs("catalog-v2", NS))


FORUM_ACCESS_LOG = """\
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: forum
spec:
  selector:
    matchLabels:
      app: forum
  accessLogging:
  - providers:
    - name: envoy
    disabled: false
"""


def test_5_5_egress_allow_any_then_registry_only_then_service_entry(start_mesh):
    mesh = start_mesh([*WEBAPP_WORLD, FORUM])
    mesh.apply(text=FORUM_ACCESS_LOG)

    allowed = request(mesh, "/api/users", WEBAPP_HOST)
    assert allowed.status == 200, allowed
    assert allowed.json()[0]["username"] == "Bret"
    assert any(" 200 - via_upstream " in line and '"jsonplaceholder.typicode.com"' in line
               and line.endswith(" allow_any") for line in mesh.logs("forum", NS, container="istio-proxy"))

    mesh.apply([CH5 / "mesh-registry-only.yaml"])
    blocked = request(mesh, "/api/users", WEBAPP_HOST)
    assert (blocked.status, blocked.text) == (500, "error calling Forum service")
    proxy_log = mesh.logs("forum", NS, container="istio-proxy")
    block = [line for line in proxy_log if '"GET /users HTTP/1.1" 502 - direct_response' in line]
    assert len(block) == 1, proxy_log
    assert '"jsonplaceholder.typicode.com"' in block[0] and block[0].endswith(" block_all"), block[0]
    inbound = [line for line in proxy_log if '"GET /api/users HTTP/1.1" 500 - via_upstream' in line]
    assert len(inbound) == 1 and inbound[0].endswith(" default"), proxy_log

    mesh.apply([CH5 / "forum-serviceentry.yaml"])
    again = request(mesh, "/api/users", WEBAPP_HOST)
    assert again.status == 200, again
    assert [u["id"] for u in again.json()] == [1, 2, 3, 4]


def test_5_5_registry_only_with_access_log_file_from_istio_operator(start_mesh):
    """The IstioOperator variant: `meshConfig.accessLogFile` turns on every proxy's access log."""
    operator = (CH5 / "mesh-registry-only.yaml").read_text() + "    accessLogFile: /dev/stdout\n"
    mesh = start_mesh([*WEBAPP_WORLD, FORUM])
    mesh.apply(text=operator)

    blocked = request(mesh, "/api/users", WEBAPP_HOST)

    assert (blocked.status, blocked.text) == (500, "error calling Forum service")
    block = [line for line in mesh.logs("forum", NS, container="istio-proxy")
             if '"GET /users HTTP/1.1" 502 - direct_response' in line]
    assert len(block) == 1 and block[0].endswith(" block_all"), mesh.logs("forum", NS, container="istio-proxy")
    gateway_log = mesh.logs("istio-ingressgateway", "istio-system", container="istio-proxy")
    assert any('"GET /api/users HTTP/1.1" 500 - via_upstream' in line for line in gateway_log), gateway_log
    # internal services stay reachable
    assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 200


# ==========================================================================================================
# Routing features of the proxy
# ==========================================================================================================


def test_header_matches_exact_prefix_regex_and_presence(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"headers": {"x-user": {"exact": "alice"}}},
                   {"headers": {"x-team": {"prefix": "dev"}}},
                   {"headers": {"x-build": {"regex": "b[0-9]+"}}},
                   {"headers": {"x-canary": {}}}],
         "route": to("version-v2")},
        {"route": to("version-v1")},
    ))

    def goes_to_v2(headers: dict[str, str]) -> bool:
        reply = request(mesh, "/items", CATALOG_HOST, headers)
        assert reply.status == 200, reply
        return reply.has_image

    assert goes_to_v2({"x-user": "alice"})
    assert not goes_to_v2({"x-user": "alice2"})
    assert not goes_to_v2({"x-user": "Alice"})
    assert goes_to_v2({"X-User": "alice"}), "header names match case-insensitively"
    assert goes_to_v2({"x-team": "devops"})
    assert not goes_to_v2({"x-team": "ops-dev"})
    assert goes_to_v2({"x-build": "b42"})
    assert not goes_to_v2({"x-build": "b42-rc"}), "regex must match the whole value"
    assert goes_to_v2({"x-canary": ""})
    assert goes_to_v2({"x-canary": "anything"})
    assert not goes_to_v2({})


def test_all_fields_of_one_match_entry_must_hold(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"headers": {"x-user": {"exact": "alice"}}, "uri": {"prefix": "/items/"}}],
         "route": to("version-v2")},
        {"route": to("version-v1")},
    ))

    assert request(mesh, "/items/1", CATALOG_HOST, {"x-user": "alice"}).has_image
    assert not request(mesh, "/items", CATALOG_HOST, {"x-user": "alice"}).has_image
    assert not request(mesh, "/items/1", CATALOG_HOST).has_image


def test_path_matches_exact_prefix_regex_and_query(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"exact": "/items/1"}},
                   {"uri": {"regex": "/items/[23]"}},
                   {"uri": {"prefix": "/api/"}},
                   {"queryParams": {"cohort": {"exact": "beta"}}}],
         "route": to("version-v2")},
        {"route": to("version-v1")},
    ))

    assert served_by(mesh, "/items/1") == "v2"
    assert served_by(mesh, "/items/1?debug=1") == "v2", "exact path match ignores the query string"
    assert served_by(mesh, "/items/12") == "v1"
    assert served_by(mesh, "/items/1/") == "v1"
    assert served_by(mesh, "/items/2") == "v2"
    assert served_by(mesh, "/items/3") == "v2"
    assert served_by(mesh, "/items/23") == "v1", "regex must match the whole path"
    assert served_by(mesh, "/items/4") == "v1"
    assert served_by(mesh, "/api/items") == "v2"
    assert served_by(mesh, "/apiitems") == "v1"
    assert served_by(mesh, "/items?cohort=beta") == "v2"
    assert served_by(mesh, "/items?cohort=beta2") == "v1"
    assert served_by(mesh, "/items?other=1&cohort=beta") == "v2"
    assert served_by(mesh, "/items") == "v1"


def test_without_headers_and_ignore_uri_case(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"prefix": "/ITEMS"}, "ignoreUriCase": True, "withoutHeaders": {"x-legacy": {}}}],
         "route": to("version-v2")},
        {"route": to("version-v1")},
    ))

    assert served_by(mesh, "/items") == "v2"
    assert served_by(mesh, "/Items/1") == "v2", "ignoreUriCase"
    assert served_by(mesh, "/items", {"x-legacy": "1"}) == "v1"
    assert served_by(mesh, "/items", {"x-legacy": ""}) == "v1", "withoutHeaders {} means: header absent"


def test_two_virtual_services_for_one_host_merge_at_the_gateway(start_mesh):
    """Gateways concatenate the routes of every bound VS for a host and move catch-alls last (§1.11)."""
    mesh = start_mesh([*GATEWAY_WORLD, CH5 / "catalog-vs-v1.yaml"])
    mesh.apply(text=gateway_vs({"match": [{"headers": {"x-istio-cohort": {"exact": "internal"}}}],
                                "route": to("version-v2")}, name="catalog-vs-cohort"))

    assert images(send_many(mesh, "/items", CATALOG_HOST, 10, headers=COHORT)) == 10
    assert images(send_many(mesh, "/items", CATALOG_HOST, 10)) == 0


def test_unmatched_request_gets_404_without_catch_all(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs({"match": [{"uri": {"prefix": "/items"}}], "route": to("version-v1")}))

    assert request(mesh, "/items", CATALOG_HOST).status == 200
    reply = request(mesh, "/healthz", CATALOG_HOST)
    assert (reply.status, reply.body) == (404, b"")
    assert count_lines(mesh, "catalog", "GET catalog.istioinaction.io /healthz 200") == 0


def test_weighted_clusters_drop_zero_weights_and_use_relative_weights(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD, seed=11)
    mesh.apply(text=gateway_vs({"route": weighted(("version-v1", 0), ("version-v2", 100))}))
    assert images(send_many(mesh, "/items", CATALOG_HOST, 30)) == 30

    mesh.apply(text=gateway_vs({"route": weighted(("version-v1", 3), ("version-v2", 1))}))
    replies = send_many(mesh, "/items", CATALOG_HOST, 400)
    assert statuses(replies) == {200: 400}
    verdict = binomial_check(images(replies), len(replies), 0.25, alpha=RANDOM_ALPHA, label="v2")
    assert verdict.passed, verdict.describe()


def test_mirror_percentage_zero_mirrors_nothing(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs({"route": to("version-v1"), "mirror": {"host": "catalog", "subset": "version-v2"},
                                "mirrorPercentage": {"value": 0}}))

    replies = send_many(mesh, "/items", CATALOG_HOST, 50)

    assert statuses(replies) == {200: 50}
    assert images(replies) == 0
    assert settle(lambda: len(mesh.logs("catalog-v2", NS))) == 0
    assert count_lines(mesh, "catalog", V1_ITEMS_LINE_GW) == 50


def test_mirror_percentage_mirrors_about_that_share(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD, seed=5)
    mesh.apply(text=gateway_vs({"route": to("version-v1"), "mirror": {"host": "catalog", "subset": "version-v2"},
                                "mirrorPercentage": {"value": 50}}))

    replies = send_many(mesh, "/items", CATALOG_HOST, 300)

    assert statuses(replies) == {200: 300}
    assert images(replies) == 0
    mirrored = settle(lambda: count_lines(mesh, "catalog-v2", "GET catalog.istioinaction.io-shadow /items 200"))
    verdict = binomial_check(mirrored, 300, 0.5, alpha=RANDOM_ALPHA, label="mirrored")
    assert verdict.passed, verdict.describe()


def test_route_timeout_answers_504_upstream_request_timeout(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"prefix": "/items"}}], "timeout": "0.5s", "route": to("version-v1")},
        {"route": to("version-v1")},
    ))
    blowup = request(mesh, "/blowup", CATALOG_HOST, method="POST",
                     body=b'{"mode": "latency", "latency_ms": 1500}')
    assert blowup.status == 200, blowup

    reply = request(mesh, "/items", CATALOG_HOST)

    assert (reply.status, reply.text) == (504, "upstream request timeout")
    assert 0.45 <= reply.seconds < 1.4, reply.seconds
    # without a timeout (the default `0s`), the slow answer arrives
    assert request(mesh, "/api/items", CATALOG_HOST).status == 200


def test_retries_attempts_3_on_5xx_make_four_attempts(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"prefix": "/items"}}], "retries": {"attempts": 3, "retryOn": "5xx"},
         "route": to("version-v1")},
        {"route": to("version-v1")},
    ))
    assert request(mesh, "/blowup", CATALOG_HOST, method="POST", body=b'{"mode": "500"}').status == 200

    reply = request(mesh, "/items", CATALOG_HOST)

    assert reply.status == 500
    assert count_lines(mesh, "catalog", "GET catalog.istioinaction.io /items 500") == 4


def test_per_try_timeout_is_retried_within_the_route(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"prefix": "/items"}}],
         "retries": {"attempts": 2, "perTryTimeout": "0.2s", "retryOn": "gateway-error"},
         "route": to("version-v1")},
        {"route": to("version-v1")},
    ))
    blowup = b'{"mode": "latency", "latency_ms": 700}'
    assert request(mesh, "/blowup", CATALOG_HOST, method="POST", body=blowup).status == 200

    reply = request(mesh, "/items", CATALOG_HOST)

    assert (reply.status, reply.text) == (504, "upstream request timeout")
    assert 0.6 <= reply.seconds < 1.5, reply.seconds
    attempts = wait_until(lambda: len([x for x in mesh.logs("catalog", NS) if x.startswith("GET ")]),
                          lambda n: n >= 3, timeout=3)
    assert attempts == 3, mesh.logs("catalog", NS)


def test_default_retry_policy_on_1_17_does_not_retry_500(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply([CH5 / "catalog-vs-v1.yaml"])
    assert request(mesh, "/blowup", CATALOG_HOST, method="POST", body=b'{"mode": "500"}').status == 200

    reply = request(mesh, "/items", CATALOG_HOST)

    assert reply.status == 500
    assert count_lines(mesh, "catalog", "GET catalog.istioinaction.io /items 500") == 1


HTTPBIN = """\
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  labels:
    app: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 80
  selector:
    app: httpbin
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin
  template:
    metadata:
      labels:
        app: httpbin
        version: v1
    spec:
      containers:
      - name: httpbin
        image: docker.io/kennethreitz/httpbin
        ports:
        - containerPort: 80
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: httpbin-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "httpbin.istioinaction.io"
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - "httpbin.istioinaction.io"
  gateways:
  - httpbin-gateway
  http:
  - route:
    - destination:
        host: httpbin
"""
HTTPBIN_HOST = "httpbin.istioinaction.io"


@pytest.mark.parametrize(("version", "attempts"), [("1.17", 3), ("1.24", 1)])
def test_default_retry_policy_retries_503_only_before_1_24(start_mesh, version, attempts):
    mesh = start_mesh(istio_version=version)
    mesh.apply(text=HTTPBIN)

    reply = request(mesh, "/status/503", HTTPBIN_HOST)

    assert reply.status == 503
    line = f"GET {HTTPBIN_HOST} /status/503 503"
    assert count_lines(mesh, "httpbin", line) == attempts, mesh.logs("httpbin", NS)


def test_fault_abort_answers_without_calling_upstream(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs({"fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
                                "route": to("version-v1")}))

    replies = send_many(mesh, "/items", CATALOG_HOST, 10)

    assert {(r.status, r.text) for r in replies} == {(418, "fault filter abort")}
    assert mesh.logs("catalog", NS) == []


def test_fault_without_percentage_injects_nothing(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs({"fault": {"abort": {"httpStatus": 500}}, "route": to("version-v1")}))

    assert statuses(send_many(mesh, "/items", CATALOG_HOST, 10)) == {200: 10}


def test_fault_delay_holds_the_request_then_forwards_it(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs({"fault": {"delay": {"fixedDelay": "0.3s", "percentage": {"value": 100}}},
                                "route": to("version-v1")}))

    reply = request(mesh, "/items", CATALOG_HOST)

    assert reply.status == 200, reply
    assert reply.seconds >= 0.3
    assert count_lines(mesh, "catalog", V1_ITEMS_LINE_GW) == 1


def test_direct_response(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"prefix": "/maintenance"}}],
         "directResponse": {"status": 503, "body": {"string": "catalog is under maintenance"}}},
        {"route": to("version-v1")},
    ))

    reply = request(mesh, "/maintenance/now", CATALOG_HOST)

    assert (reply.status, reply.text) == (503, "catalog is under maintenance")
    assert request(mesh, "/items", CATALOG_HOST).status == 200
    assert mesh.logs("catalog", NS) == [V1_ITEMS_LINE_GW]


def test_unknown_host_at_the_gateway_is_404_no_route(start_mesh):
    mesh = start_mesh([*GATEWAY_WORLD, CH5 / "catalog-vs.yaml"])

    reply = request(mesh, "/items", "shop.example.com")

    assert (reply.status, reply.body) == (404, b"")
    assert request(mesh, "/items", CATALOG_HOST).status == 200
    assert request(mesh, "/items", f"{CATALOG_HOST}:{mesh.gateway_port}").status == 200, \
        "the gateway ignores the port in host matching"


def test_subset_without_destination_rule_is_503_no_cluster(start_mesh):
    mesh = start_mesh([*CATALOGS, CH5 / "catalog-gateway.yaml", CH5 / "catalog-vs-v1.yaml"])

    reply = request(mesh, "/items", CATALOG_HOST)

    assert (reply.status, reply.body) == (503, b"")
    assert mesh.logs("catalog", NS) == []
    mesh.apply([CH5 / "catalog-dest-rule.yaml"])
    assert request(mesh, "/items", CATALOG_HOST).status == 200


def test_subset_selecting_no_pods_is_503_no_healthy_upstream(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text="""\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: catalog
spec:
  host: catalog.istioinaction.svc.cluster.local
  subsets:
  - name: version-v1
    labels:
      version: v1
  - name: version-v3
    labels:
      version: v3
""")
    mesh.apply(text=gateway_vs({"route": to("version-v3")}))

    reply = request(mesh, "/items", CATALOG_HOST)

    assert (reply.status, reply.text) == (503, "no healthy upstream")


def test_x_request_id_is_generated_and_propagated(start_mesh):
    mesh = start_mesh()
    mesh.apply(text=HTTPBIN)

    generated = request(mesh, "/headers?show_env=1", HTTPBIN_HOST).json()["headers"]
    given = request(mesh, "/headers?show_env=1", HTTPBIN_HOST, {"x-request-id": "my-request-1"}).json()["headers"]

    assert uuid.UUID(generated["X-Request-Id"]).version == 4, generated
    assert given["X-Request-Id"] == "my-request-1"
    assert given["Host"] == HTTPBIN_HOST


def test_x_request_id_reaches_the_catalog_through_webapp(start_mesh):
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "webapp-access-log.yaml"])
    mesh.apply(text=FORUM_ACCESS_LOG.replace("forum", "catalog"))

    assert request(mesh, "/api/catalog", WEBAPP_HOST, {"x-request-id": "trace-me-42"}).status == 200
    assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 200

    webapp_log = mesh.logs("webapp", NS, container="istio-proxy")
    catalog_log = mesh.logs("catalog", NS, container="istio-proxy") + mesh.logs("catalog-v2", NS,
                                                                                   container="istio-proxy")
    assert sum('"trace-me-42"' in line for line in webapp_log) == 2, webapp_log  # inbound and outbound
    assert sum('"trace-me-42"' in line for line in catalog_log) == 1, catalog_log
    # the id the gateway generated for the second request is the same at every hop
    ids = {re.findall(r'"([0-9a-f-]{36})"', line)[0] for line in webapp_log + catalog_log
           if re.search(r'"[0-9a-f-]{36}"', line)}
    assert len(ids) == 1, ids


def test_dropped_connections_are_retried_exactly_as_configured(start_mesh):
    """One upstream attempt per try: the proxy's HTTP client must not retry on its own."""
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"prefix": "/items"}}], "retries": {"attempts": 2, "retryOn": "5xx"},
         "route": to("version-v1")},
        {"route": to("version-v1")},
    ))
    assert request(mesh, "/blowup", CATALOG_HOST, method="POST", body=b'{"mode": "drop"}').status == 200

    reply = request(mesh, "/items", CATALOG_HOST)

    assert reply.status == 503
    assert reply.text.startswith("upstream connect error or disconnect/reset before headers. reset reason: "), reply
    assert count_lines(mesh, "catalog", "GET catalog.istioinaction.io /items -") == 3, mesh.logs("catalog", NS)


def test_a_dropped_connection_inside_the_mesh_reaches_the_caller_as_a_503(start_mesh):
    """The destination sidecar answers 503 when its app resets; the source sidecar's 1.17 default policy
    retries that 503 twice, so the catalog sees three attempts."""
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v1-mesh.yaml",
                       CH5 / "catalog-gateway.yaml", CH5 / "catalog-vs-v1.yaml"])
    assert request(mesh, "/blowup", CATALOG_HOST, method="POST", body=b'{"mode": "drop"}').status == 200

    reply = request(mesh, "/api/catalog", WEBAPP_HOST)

    assert (reply.status, reply.text) == (500, "error calling Catalog service")
    assert count_lines(mesh, "catalog", V1_ITEMS_LINE_MESH.replace(" 200", " -")) == 3, mesh.logs("catalog", NS)


ACCESS_LOG_ON = """\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: control-plane
  namespace: istio-system
spec:
  meshConfig:
    accessLogFile: /dev/stdout
"""


def test_gateway_access_log_shows_response_flags_of_local_replies(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=ACCESS_LOG_ON)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"prefix": "/nc"}}], "route": to("version-v9")},
        {"match": [{"uri": {"prefix": "/fi"}}], "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
         "route": to("version-v1")},
        {"match": [{"uri": {"prefix": "/items"}}], "retries": {"attempts": 2, "retryOn": "5xx"},
         "route": to("version-v1")},
        {"route": to("version-v1")},
    ))
    assert request(mesh, "/blowup", CATALOG_HOST, method="POST", body=b'{"mode": "500"}').status == 200

    assert request(mesh, "/x", "unknown.example.com").status == 404
    assert request(mesh, "/nc", CATALOG_HOST).status == 503
    assert request(mesh, "/fi", CATALOG_HOST).status == 418
    assert request(mesh, "/items", CATALOG_HOST).status == 500

    log = mesh.logs("istio-ingressgateway", "istio-system", container="istio-proxy")

    def line_for(request_line: str) -> str:
        found = [x for x in log if f'"{request_line} HTTP/1.1"' in x]
        assert len(found) == 1, (request_line, log)
        return found[0]

    assert '" 404 NR route_not_found ' in line_for("GET /x")
    assert '" 503 NC cluster_not_found ' in line_for("GET /nc")
    assert '" 418 FI fault_filter_abort ' in line_for("GET /fi")
    assert '" 500 URX via_upstream ' in line_for("GET /items"), "retries exhausted on a retriable status"
    assert "outbound|80|version-v1|catalog.istioinaction.svc.cluster.local" in line_for("GET /items")
    assert count_lines(mesh, "catalog", "GET catalog.istioinaction.io /items 500") == 3


def test_redirect_answers_with_a_location(start_mesh):
    mesh = start_mesh(GATEWAY_WORLD)
    mesh.apply(text=gateway_vs(
        {"match": [{"uri": {"prefix": "/old-items"}}], "redirect": {"uri": "/items"}},
        {"match": [{"uri": {"prefix": "/elsewhere"}}],
         "redirect": {"uri": "/catalog", "authority": "shop.example.com", "redirectCode": 302}},
        {"route": to("version-v1")},
    ))

    moved = request(mesh, "/old-items", CATALOG_HOST)
    found = request(mesh, "/elsewhere", CATALOG_HOST)

    assert (moved.status, moved.headers.get("location")) == (301, f"http://{CATALOG_HOST}/items")
    assert (found.status, found.headers.get("location")) == (302, "http://shop.example.com/catalog")
    assert mesh.logs("catalog", NS) == []


def test_rewrite_and_header_operations(start_mesh):
    mesh = start_mesh()
    mesh.apply(text=HTTPBIN)
    mesh.apply(text=yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService", "metadata": {"name": "httpbin"},
        "spec": {"hosts": [HTTPBIN_HOST], "gateways": ["httpbin-gateway"], "http": [{
            "match": [{"uri": {"prefix": "/echo/"}}],
            "rewrite": {"uri": "/anything/"},
            "headers": {"request": {"set": {"x-team": "payments"}, "add": {"x-added": "yes"},
                                    "remove": ["x-secret"]},
                        "response": {"set": {"x-served-by": "mesh"}}},
            "route": [{"destination": {"host": "httpbin"}}],
        }]},
    }, sort_keys=False))

    reply = request(mesh, "/echo/orders?id=7", HTTPBIN_HOST, {"x-team": "sales", "x-secret": "s3cr3t"})

    assert reply.status == 200, reply
    echoed = reply.json()
    assert echoed["url"] == f"http://{HTTPBIN_HOST}/anything/orders?id=7"
    assert echoed["args"] == {"id": "7"}
    assert echoed["headers"]["X-Team"] == "payments"
    assert echoed["headers"]["X-Added"] == "yes"
    assert "X-Secret" not in echoed["headers"]
    assert reply.headers.get("x-served-by") == "mesh"
    assert request(mesh, "/get", HTTPBIN_HOST).status == 404, "no route outside /echo/"


# ==========================================================================================================
# Metrics
# ==========================================================================================================


def samples(text: str, name: str, **labels: str) -> list:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out.append(sample)
    return out


def test_istio_standard_metrics_after_traffic(start_mesh):
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v1-mesh.yaml"])

    assert statuses(send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)) == {200: 20}

    catalog = mesh.metrics_text("catalog", NS)
    dest = samples(catalog, "istio_requests_total", reporter="destination", destination_workload="catalog",
                   destination_workload_namespace=NS, destination_app="catalog", destination_version="v1",
                   source_workload="webapp", destination_service="catalog.istioinaction.svc.cluster.local",
                   destination_service_name="catalog", response_code="200", response_flags="-",
                   connection_security_policy="none")
    assert [s.value for s in dest] == [20.0], catalog
    line = next(x for x in catalog.splitlines() if x.startswith("istio_requests_total{"))
    assert re.match(r'istio_requests_total\{reporter="destination",source_workload="webapp",.*'
                    r'destination_workload="catalog",.*response_code="200"', line), line

    gateway = mesh.metrics_text("istio-ingressgateway", "istio-system")
    gw = samples(gateway, "istio_requests_total", reporter="source", source_workload="istio-ingressgateway",
                 destination_workload="webapp", destination_service_name="webapp", response_code="200",
                 connection_security_policy="unknown")
    assert [s.value for s in gw] == [20.0], gateway

    webapp = mesh.metrics_text("webapp", NS)
    outbound = samples(webapp, "istio_requests_total", reporter="source", source_workload="webapp",
                       destination_workload="catalog", response_code="200")
    inbound = samples(webapp, "istio_requests_total", reporter="destination",
                      source_workload="istio-ingressgateway", destination_workload="webapp")
    assert [s.value for s in outbound] == [20.0]
    assert [s.value for s in inbound] == [20.0]

    buckets = samples(catalog, "istio_request_duration_milliseconds_bucket", reporter="destination",
                      destination_workload="catalog")
    bounds = [s.labels["le"] for s in buckets]
    assert bounds[:3] == ["0.5", "1.0", "5.0"] and bounds[-1] == "+Inf", bounds
    assert buckets[-1].value == 20.0
    count = samples(catalog, "istio_request_duration_milliseconds_count", reporter="destination")
    assert [s.value for s in count] == [20.0]
    assert samples(catalog, "istio_request_duration_milliseconds_sum", reporter="destination")
    assert samples(catalog, "istio_response_bytes_bucket", reporter="destination")
    assert "istio_requests_total_created" not in catalog, "Istio exposes no _created series"


def test_local_replies_are_counted_with_their_flags(start_mesh):
    mesh = start_mesh([*CATALOGS, CH5 / "catalog-gateway.yaml", CH5 / "catalog-vs-v1.yaml"])

    assert request(mesh, "/items", CATALOG_HOST).status == 503

    gateway = mesh.metrics_text("istio-ingressgateway", "istio-system")
    nc = samples(gateway, "istio_requests_total", reporter="source", response_code="503", response_flags="NC")
    assert [s.value for s in nc] == [1.0], gateway
    assert "reporter=\"destination\"" not in mesh.metrics_text("catalog", NS)


# ==========================================================================================================
# Live reconfiguration
# ==========================================================================================================


def test_applying_a_virtual_service_changes_routing_without_restarting_pods(start_mesh):
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "catalog-dest-rule.yaml"])
    pods_before = sorted(p.name for p in mesh.pods())
    port = mesh.gateway_port
    assert 0 < images(send_many(mesh, "/api/catalog", WEBAPP_HOST, 40)) < 40

    mesh.apply([CH5 / "catalog-vs-v1-mesh.yaml"])
    assert images(send_many(mesh, "/api/catalog", WEBAPP_HOST, 40)) == 0

    mesh.apply(text=(CH5 / "catalog-vs-v1-mesh.yaml").read_text().replace("version-v1", "version-v2"))
    assert images(send_many(mesh, "/api/catalog", WEBAPP_HOST, 40)) == 40

    mesh.delete_kind("VirtualService", NS)
    assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 404, "the gateway's VS is gone too"

    assert sorted(p.name for p in mesh.pods()) == pods_before
    assert mesh.gateway_port == port


def test_scaling_replicas_adds_pods_and_spreads_traffic(start_mesh):
    mesh = start_mesh([*GATEWAY_WORLD, CH5 / "catalog-vs-v1.yaml"])
    first = pod_names(mesh, "catalog")
    assert len(first) == 1

    mesh.apply(text=CATALOG_V1.read_text().replace("replicas: 1", "replicas: 3"))
    scaled = pod_names(mesh, "catalog")

    assert len(scaled) == 3 and set(first) <= set(scaled), (first, scaled)
    assert statuses(send_many(mesh, "/items", CATALOG_HOST, 60)) == {200: 60}
    # the apps' log lines arrive from their processes a moment after the responses: wait (bounded) for all 60
    per_pod = wait_until(lambda: {p.name: len(p.logs["catalog"].read()) for p in mesh.find_pods("catalog", NS)},
                         lambda counts: sum(counts.values()) >= 60, 5.0)
    assert sum(per_pod.values()) == 60 and min(per_pod.values()) > 0, per_pod

    mesh.apply(text=CATALOG_V1.read_text())
    assert len(pod_names(mesh, "catalog")) == 1
    assert statuses(send_many(mesh, "/items", CATALOG_HOST, 10)) == {200: 10}


def test_changing_the_pod_template_replaces_pods(start_mesh):
    mesh = start_mesh([*GATEWAY_WORLD, CH5 / "catalog-vs-v1.yaml"])
    old = pod_names(mesh, "catalog")
    v2_pods = pod_names(mesh, "catalog-v2")
    assert not request(mesh, "/items", CATALOG_HOST).has_image

    with_image = CATALOG_V1.read_text().replace(
        "        image: istioinaction/catalog:latest",
        '        - name: SHOW_IMAGE\n          value: "true"\n        image: istioinaction/catalog:latest')
    mesh.apply(text=with_image)

    new = pod_names(mesh, "catalog")
    assert len(new) == 1 and not set(new) & set(old), (old, new)
    assert pod_names(mesh, "catalog-v2") == v2_pods
    assert request(mesh, "/items", CATALOG_HOST).has_image
    assert mesh.logs("catalog", NS) == [V1_ITEMS_LINE_GW], "the new pod starts with an empty log"


def test_requests_during_reconfiguration_all_succeed(start_mesh):
    """Config pushes while traffic flows: no request fails between the old and the new routes."""
    mesh = start_mesh([*WEBAPP_WORLD, CH5 / "catalog-dest-rule.yaml", CH5 / "catalog-vs-v1-mesh.yaml"])
    v2 = (CH5 / "catalog-vs-v1-mesh.yaml").read_text().replace("version-v1", "version-v2")
    replies = []
    deadline = time.monotonic() + 10
    for i in range(6):
        if i % 2:
            mesh.apply(text=v2)
        else:
            mesh.apply([CH5 / "catalog-vs-v1-mesh.yaml"])
        replies += send_many(mesh, "/api/catalog", WEBAPP_HOST, 20)
        assert time.monotonic() < deadline
    assert statuses(replies) == {200: 120}
    assert images(replies) == 60
