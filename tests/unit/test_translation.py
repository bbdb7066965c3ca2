"""Translation of Istio config into Envoy-shaped config, field by field (istio-semantics.md §1–§5, §8).

Most rows translate one VirtualService rule for `catalog` and look at the route the webapp sidecar gets.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers import (
    CATALOG,
    CATALOG_DEFAULT,
    CATALOG_GATEWAY,
    CH5,
    GATEWAY_PROXY,
    NS,
    SERVICES,
    V1,
    V2,
    catalog_routes,
    catalog_vs,
    first_route,
    proxy,
    vhost,
    world,
    y,
)

from meshlib.config.store import ConfigStore
from meshlib.errors import ConfigError, MeshlibError
from meshlib.profile import IstioProfile, profile_for
from meshlib.router.select import fraction_percent
from meshlib.xds.dialect import config_dump, istioctl_routes, to_snake
from meshlib.xds.route import route_match

RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = [{"name": "envoy.retry_host_predicates.previous_hosts",
                   "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
                                            "PreviousHostsPredicate"}}]


def match_of(match_yaml: str) -> dict:
    rule = "- match:\n" + "\n".join("  " + line for line in y(match_yaml).splitlines()) + \
        "\n  route:\n  - destination: {host: catalog, subset: version-v2}\n"
    return first_route(rule)["match"]


# --- 1. match fields → Envoy RouteMatch -----------------------------------------------------------------------------
MATCH_CASES = [
    ("- uri: {exact: /items}", {"path": "/items", "caseSensitive": True}),
    ("- headers: {uri: {exact: /x}, method: {exact: GET}}", {"prefix": "/", "caseSensitive": True}),  # ignored keys
    ("- uri: {prefix: /api}", {"prefix": "/api", "caseSensitive": True}),
    ("- uri: {regex: '/items/[0-9]+'}", {"safeRegex": {"regex": "/items/[0-9]+"}, "caseSensitive": True}),
    ("- uri: {prefix: /API}\n  ignoreUriCase: true", {"prefix": "/API", "caseSensitive": False}),
    ("- uri: {exact: /Items}\n  ignoreUriCase: true", {"path": "/Items", "caseSensitive": False}),
    ("- method: {exact: POST}",
     {"prefix": "/", "caseSensitive": True, "headers": [{"name": ":method", "stringMatch": {"exact": "POST"}}]}),
    ("- authority: {prefix: catalog}",
     {"prefix": "/", "caseSensitive": True, "headers": [{"name": ":authority", "stringMatch": {"prefix": "catalog"}}]}),
    ("- scheme: {exact: https}",
     {"prefix": "/", "caseSensitive": True, "headers": [{"name": ":scheme", "stringMatch": {"exact": "https"}}]}),
    ("- headers: {x-istio-cohort: {exact: internal}}",
     {"prefix": "/", "caseSensitive": True,
      "headers": [{"name": "x-istio-cohort", "stringMatch": {"exact": "internal"}}]}),
    ("- headers: {user-agent: {prefix: Mozilla}}",
     {"prefix": "/", "caseSensitive": True, "headers": [{"name": "user-agent", "stringMatch": {"prefix": "Mozilla"}}]}),
    ("- headers: {x-user: {regex: 'admin-[a-z]+'}}",
     {"prefix": "/", "caseSensitive": True,
      "headers": [{"name": "x-user", "stringMatch": {"safeRegex": {"regex": "admin-[a-z]+"}}}]}),
    ("- headers: {x-canary: {}}",
     {"prefix": "/", "caseSensitive": True, "headers": [{"name": "x-canary", "presentMatch": True}]}),
    ("- withoutHeaders: {x-canary: {exact: 'yes'}}",  # 1.17: no treatMissingHeaderAsEmpty (see the profile table)
     {"prefix": "/", "caseSensitive": True,
      "headers": [{"name": "x-canary", "stringMatch": {"exact": "yes"}, "invertMatch": True}]}),
    ("- withoutHeaders: {x-canary: {}}",
     {"prefix": "/", "caseSensitive": True, "headers": [{"name": "x-canary", "presentMatch": True,
                                                         "invertMatch": True}]}),
    ("- queryParams: {id: {exact: '7'}}",
     {"prefix": "/", "caseSensitive": True, "queryParameters": [{"name": "id", "stringMatch": {"exact": "7"}}]}),
    ("- queryParams: {id: {regex: '[0-9]+'}}",
     {"prefix": "/", "caseSensitive": True,
      "queryParameters": [{"name": "id", "stringMatch": {"safeRegex": {"regex": "[0-9]+"}}}]}),
    ("- queryParams: {debug: {}}",
     {"prefix": "/", "caseSensitive": True, "queryParameters": [{"name": "debug", "presentMatch": True}]}),
    ("- queryParams: {debug: {exact: ''}}",
     {"prefix": "/", "caseSensitive": True, "queryParameters": [{"name": "debug", "stringMatch": {"exact": ""}}]}),
]


@pytest.mark.parametrize(("match_yaml", "expected"), MATCH_CASES, ids=[c[0].split(":")[0][2:] + str(i)
                                                                        for i, c in enumerate(MATCH_CASES)])
def test_match_field_translation(match_yaml: str, expected: dict) -> None:
    assert match_of(match_yaml) == expected


def test_regex_star_means_presence_but_the_webhook_rejects_it() -> None:
    """Istio translates `regex: "*"` to presentMatch, but its webhook compiles the regex (Go RE2) and rejects it."""
    assert route_match({"headers": {"x-canary": {"regex": "*"}}, "queryParams": {"debug": {"regex": "*"}}},
                       profile_for(None)) == {
        "prefix": "/", "caseSensitive": True, "headers": [{"name": "x-canary", "presentMatch": True}],
        "queryParameters": [{"name": "debug", "presentMatch": True}]}
    with pytest.raises(ConfigError, match=r"headers.x-canary.regex: invalid RE2"):
        world(catalog_vs("- match: [{headers: {x-canary: {regex: '*'}}}]\n"
                         "  route:\n  - destination: {host: catalog}\n"))


def test_headers_and_without_headers_are_sorted_together_then_pseudo_headers() -> None:
    match = match_of("""
        - method: {exact: GET}
          headers:
            x-zone: {exact: eu}
            x-b: {prefix: b}
          withoutHeaders:
            x-a: {}
            x-c: {exact: 'no'}
          queryParams:
            z: {}
            a: {exact: '1'}
        """)
    assert [h["name"] for h in match["headers"]] == ["x-a", "x-b", "x-c", "x-zone", ":method"]
    assert [q["name"] for q in match["queryParameters"]] == ["a", "z"]


def test_match_entries_are_or_fields_are_and() -> None:
    routes = catalog_routes(world(catalog_vs("""
        - match:
          - uri: {prefix: /a}
            headers: {x-v: {exact: '2'}}
          - uri: {prefix: /b}
          route:
          - destination: {host: catalog, subset: version-v2}
        - route:
          - destination: {host: catalog, subset: version-v1}
        """)))
    assert [(r["match"].get("prefix"), len(r["match"].get("headers", [])), r["route"]["cluster"]) for r in routes] == [
        ("/a", 1, V2), ("/b", 0, V2), ("/", 0, V1)]


def test_route_names_join_rule_and_match_names() -> None:
    routes = catalog_routes(world(catalog_vs("""
        - name: to-v2
          match:
          - name: internal
            headers: {x-istio-cohort: {exact: internal}}
          - uri: {prefix: /v2}
          route:
          - destination: {host: catalog, subset: version-v2}
        - route:
          - destination: {host: catalog, subset: version-v1}
        """)))
    assert [r.get("name") for r in routes] == ["to-v2.internal", "to-v2", None]


# --- 2. config-time selectors drop match entries per proxy ----------------------------------------------------------
SLEEP_OTHER_NS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleep, namespace: other}
spec:
  template:
    metadata: {labels: {app: sleep}}
    spec:
      containers: [{name: sleep, image: curlimages/curl}]
"""

SELECTOR_VS = catalog_vs("""
    - match:
      - {match_entry}
      route:
      - destination: {host: catalog, subset: version-v2}
    - route:
      - destination: {host: catalog, subset: version-v1}
    """, gateways="[mesh, catalog-gateway]")


@pytest.mark.parametrize(("entry", "proxy_ref", "expected"), [
    ("sourceLabels: {app: webapp}", "deploy/webapp.istioinaction", [V2]),  # catch-all: Istio stops after it
    ("sourceLabels: {app: webapp}", "deploy/catalog-v2.istioinaction", [V1]),
    ("sourceLabels: {app: webapp}", "deploy/sleep.other", [V1]),
    ("sourceNamespace: istioinaction", "deploy/webapp.istioinaction", [V2]),
    ("sourceNamespace: istioinaction", "deploy/sleep.other", [V1]),
    ("{sourceNamespace: other, sourceLabels: {app: sleep}}", "deploy/sleep.other", [V2]),
    ("{sourceNamespace: other, sourceLabels: {app: webapp}}", "deploy/sleep.other", [V1]),
    ("port: 80", "deploy/webapp.istioinaction", [V2]),
    ("port: 9080", "deploy/webapp.istioinaction", [V1]),
    ("{gateways: [mesh], headers: {x-v: {exact: '2'}}}", "deploy/webapp.istioinaction", [V2, V1]),
    ("{gateways: [catalog-gateway], headers: {x-v: {exact: '2'}}}", "deploy/webapp.istioinaction", [V1]),
    # match-level gateways override sourceLabels
    ("{gateways: [mesh], sourceLabels: {app: nobody}, headers: {x-v: {exact: '2'}}}",
     "deploy/webapp.istioinaction", [V2, V1]),
])
def test_config_time_selectors_on_sidecars(entry: str, proxy_ref: str, expected: list[str]) -> None:
    store = world(SELECTOR_VS.replace("{match_entry}", entry), CATALOG_GATEWAY, SLEEP_OTHER_NS)
    routes = vhost(proxy(store, proxy_ref), "80", f"{CATALOG}:80")["routes"]
    assert [r["route"]["cluster"] for r in routes] == expected


@pytest.mark.parametrize(("entry", "expected"), [
    ("{gateways: [catalog-gateway], headers: {x-v: {exact: '2'}}}", [V2, V1]),
    ("{gateways: [istioinaction/catalog-gateway], headers: {x-v: {exact: '2'}}}", [V2, V1]),
    ("{gateways: [mesh], headers: {x-v: {exact: '2'}}}", [V1]),
    # sourceLabels/sourceNamespace are compared with the gateway's own workload (Istio's sourceMatchHTTP)
    ("{sourceLabels: {app: webapp}, headers: {x-v: {exact: '2'}}}", [V1]),
    ("{sourceLabels: {istio: ingressgateway}, headers: {x-v: {exact: '2'}}}", [V2, V1]),
    ("{sourceNamespace: istio-system, headers: {x-v: {exact: '2'}}}", [V2, V1]),
    ("{port: 8080, headers: {x-v: {exact: '2'}}}", [V1]),  # the server port (80) counts, not the target port
    ("{port: 80, headers: {x-v: {exact: '2'}}}", [V2, V1]),
])
def test_config_time_selectors_on_the_gateway(entry: str, expected: list[str]) -> None:
    vs = SELECTOR_VS.replace("{match_entry}", entry).replace("hosts: [catalog]",
                                                             "hosts: [catalog, catalog.istioinaction.io]")
    pc = proxy(world(vs, CATALOG_GATEWAY), GATEWAY_PROXY)
    routes = vhost(pc, "http.8080", "catalog.istioinaction.io:80")["routes"]
    assert [r["route"]["cluster"] for r in routes] == expected


def test_virtual_service_with_every_rule_dropped_falls_back_to_the_default_route() -> None:
    routes = catalog_routes(world(catalog_vs("""
        - match:
          - sourceLabels: {app: nobody}
          route:
          - destination: {host: catalog, subset: version-v2}
        """)))
    assert routes == [catalog_routes(world())[0]]
    assert routes[0]["name"] == "default" and routes[0]["route"]["cluster"] == CATALOG_DEFAULT


# --- 3. destinations and weights ------------------------------------------------------------------------------------
def test_single_destination_is_a_cluster_even_with_weight_zero() -> None:
    route = first_route("- route:\n  - destination: {host: catalog, subset: version-v1}\n    weight: 0\n")
    assert route["route"]["cluster"] == V1
    assert "weightedClusters" not in route["route"]


@pytest.mark.parametrize(("weights", "expected"), [
    ((90, 10), [(V1, 90), (V2, 10)]),
    ((50, 50), [(V1, 50), (V2, 50)]),
    ((100, 0), [(V1, 100)]),  # weight-0 entries dropped, even if only one remains (from 1.19; see profiles)
    ((0, 100), [(V2, 100)]),
    ((9, 1), [(V1, 9), (V2, 1)]),  # relative since 1.15
])
def test_weighted_clusters(weights: tuple[int, int], expected: list[tuple[str, int]]) -> None:
    route = first_route(f"""
        - route:
          - destination: {{host: catalog, subset: version-v1}}
            weight: {weights[0]}
          - destination: {{host: catalog, subset: version-v2}}
            weight: {weights[1]}
        """, version="1.19")
    clusters = route["route"]["weightedClusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in clusters] == expected
    assert "cluster" not in route["route"]


@pytest.mark.parametrize(("version", "total"), [("1.14", None), ("1.15", 100), ("1.16", 100), ("1.17", 100),
                                                ("1.18", None), ("1.24", None)])
def test_total_weight_only_for_1_15_to_1_17(version: str, total: int | None) -> None:
    route = first_route("""
        - route:
          - destination: {host: catalog, subset: version-v1}
            weight: 90
          - destination: {host: catalog, subset: version-v2}
            weight: 10
        """, version=version)
    assert route["route"]["weightedClusters"].get("totalWeight") == total


def test_destination_port_and_service_ports() -> None:
    store = world(catalog_vs("""
        - match: [{uri: {prefix: /explicit}}]
          route:
          - destination: {host: catalog, port: {number: 9090}}
        - match: [{uri: {prefix: /unknown}}]
          route:
          - destination: {host: ratings}
        - route:
          - destination: {host: catalog}
        """))
    assert [r["route"]["cluster"] for r in catalog_routes(store)] == [
        f"outbound|9090||{CATALOG}", "outbound|80||ratings.istioinaction.svc.cluster.local", CATALOG_DEFAULT]


# --- 4. mirroring ---------------------------------------------------------------------------------------------------
MIRROR_RULE = """
- route:
  - destination: {host: catalog, subset: version-v1}
  mirror: {host: catalog, subset: version-v2}
"""


@pytest.mark.parametrize(("extra", "fraction"), [
    ("", {"numerator": 100}),  # absent ⇒ 100%
    ("mirrorPercentage: {value: 50}", {"numerator": 500000, "denominator": "MILLION"}),
    ("mirrorPercentage: {value: 0.5}", {"numerator": 5000, "denominator": "MILLION"}),
    ("mirrorPercentage: {value: 100}", {"numerator": 1000000, "denominator": "MILLION"}),
    ("mirrorPercent: 25", {"numerator": 25}),  # deprecated integer: HUNDRED (omitted)
    ("mirrorPercentage: {value: 0}", None),  # explicit 0 ⇒ no mirror policy
    ("mirrorPercent: 0", None),
])
def test_mirror_percentage_forms(extra: str, fraction: dict | None) -> None:
    route = first_route(MIRROR_RULE + ("  " + extra + "\n" if extra else ""))
    if fraction is None:
        assert "requestMirrorPolicies" not in route["route"]
        return
    assert route["route"]["requestMirrorPolicies"] == [
        {"cluster": V2, "runtimeFraction": {"defaultValue": fraction}, "traceSampled": False}]


def test_mirrors_list() -> None:
    route = first_route("""
        - route:
          - destination: {host: catalog, subset: version-v1}
          mirrors:
          - destination: {host: catalog, subset: version-v2}
            percentage: {value: 10}
          - destination: {host: webapp}
          - destination: {host: catalog}
            percentage: {value: 0}
        """, version="1.20")
    assert [(p["cluster"], p["runtimeFraction"]["defaultValue"]) for p in route["route"]["requestMirrorPolicies"]] == [
        (V2, {"numerator": 100000, "denominator": "MILLION"}),
        ("outbound|80||webapp.istioinaction.svc.cluster.local", {"numerator": 100})]


@pytest.mark.parametrize(("version", "flag"), [("1.17", None), ("1.24", None), ("1.27", None), ("1.28", True)])
def test_disable_shadow_host_suffix_append_only_from_1_28(version: str, flag: bool | None) -> None:
    policy = first_route(MIRROR_RULE, version=version)["route"]["requestMirrorPolicies"][0]
    assert policy.get("disableShadowHostSuffixAppend") is flag


# --- 5. fault injection ---------------------------------------------------------------------------------------------
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


@pytest.mark.parametrize(("fault", "delay_pct", "abort_pct"), [
    ("delay: {fixedDelay: 5s, percentage: {value: 50}}", 50.0, None),
    ("delay: {fixedDelay: 5s}", 0.0, None),  # missing percentage ⇒ 0 (istio/api#2522)
    ("delay: {fixedDelay: 5s, percent: 30}", 30.0, None),  # deprecated integer: HUNDRED
    ("abort: {httpStatus: 500, percentage: {value: 12.5}}", None, 12.5),
    ("abort: {httpStatus: 500}", None, 0.0),  # missing percentage ⇒ nothing injected
    ("{delay: {fixedDelay: 1s, percentage: {value: 100}}, abort: {httpStatus: 503, percentage: {value: 10}}}",
     100.0, 10.0),
])
def test_fault_percentages(fault: str, delay_pct: float | None, abort_pct: float | None) -> None:
    fault = fault if fault.startswith("{") else "{" + fault + "}"
    route = first_route(f"- route:\n  - destination: {{host: catalog}}\n  fault: {fault}\n")
    config = route["typedPerFilterConfig"]["envoy.filters.http.fault"]
    assert config["@type"] == FAULT_TYPE
    if delay_pct is None:
        assert "delay" not in config
    else:
        assert fraction_percent(config["delay"].get("percentage")) == delay_pct
        assert config["delay"]["fixedDelay"] in ("5s", "1s")
    if abort_pct is None:
        assert "abort" not in config
    else:
        assert fraction_percent(config["abort"].get("percentage")) == abort_pct
        assert config["abort"]["httpStatus"] in (500, 503)


def test_fault_percentage_is_a_million_fraction() -> None:
    route = first_route("- route:\n  - destination: {host: catalog}\n  fault:\n    abort:\n      httpStatus: 500\n"
                        "      percentage: {value: 12.5}\n")
    assert route["typedPerFilterConfig"]["envoy.filters.http.fault"]["abort"]["percentage"] == \
        {"numerator": 125000, "denominator": "MILLION"}


def test_exponential_delay_is_unsupported_and_dropped() -> None:
    route = first_route("- route:\n  - destination: {host: catalog}\n  fault:\n    delay: {exponentialDelay: 1s}\n")
    assert "typedPerFilterConfig" not in route


# --- 6. retries and timeouts ----------------------------------------------------------------------------------------
def default_retry(with_503: bool) -> dict:
    policy = {"retryOn": RETRY_ON, "numRetries": 2, "retryHostPredicate": PREVIOUS_HOSTS,
              "hostSelectionRetryMaxAttempts": "5"}
    if with_503:
        policy["retriableStatusCodes"] = [503]
    return policy


@pytest.mark.parametrize(("version", "with_503"), [("1.13", True), ("1.17", True), ("1.23", True), ("1.24", False),
                                                   ("1.27", False), ("1.28", False)])
def test_default_retry_policy_by_version(version: str, with_503: bool) -> None:
    route = first_route("- route:\n  - destination: {host: catalog}\n", version=version)
    assert route["route"]["retryPolicy"] == default_retry(with_503)
    default = catalog_routes(world(version=version))[0]  # the service's default route too
    assert default["route"]["retryPolicy"] == default_retry(with_503)


@pytest.mark.parametrize(("retries", "version", "expected"), [
    ("{attempts: 0}", "1.17", None),  # explicitly disabled: no retryPolicy at all
    ("{attempts: 3}", "1.17", {**default_retry(True), "numRetries": 3}),  # starts from the default
    ("{attempts: 3}", "1.24", {**default_retry(False), "numRetries": 3}),
    ("{attempts: 3, retryOn: 5xx}", "1.17", {**default_retry(False), "numRetries": 3, "retryOn": "5xx"}),
    ("{attempts: 3, retryOn: '5xx,503,504'}", "1.24",
     {**default_retry(False), "numRetries": 3, "retryOn": "5xx,retriable-status-codes",
      "retriableStatusCodes": [503, 504]}),
    ("{attempts: 1, retryOn: 'retriable-status-codes,502'}", "1.24",
     {**default_retry(False), "numRetries": 1, "retryOn": "retriable-status-codes",
      "retriableStatusCodes": [502]}),
    ("{attempts: 2, perTryTimeout: 500ms}", "1.24", {**default_retry(False), "perTryTimeout": "0.500s"}),
    ("{attempts: 2, retryIgnorePreviousHosts: false}", "1.26",
     {k: v for k, v in default_retry(False).items() if k != "retryHostPredicate"}),
    ("{attempts: 2, backoff: 100ms}", "1.26", {**default_retry(False), "retryBackOff": {"baseInterval": "0.100s"}}),
])
def test_user_retries(retries: str, version: str, expected: dict | None) -> None:
    route = first_route(f"- route:\n  - destination: {{host: catalog}}\n  retries: {retries}\n", version=version)
    assert route["route"].get("retryPolicy") == expected


@pytest.mark.parametrize(("timeout", "expected"), [(None, "0s"), ("10s", "10s"), ("1.5s", "1.500s"),
                                                   ("500ms", "0.500s"), ("1m", "60s")])
def test_timeout(timeout: str | None, expected: str) -> None:
    extra = f"  timeout: {timeout}\n" if timeout else ""
    route = first_route("- route:\n  - destination: {host: catalog}\n" + extra)
    assert route["route"]["timeout"] == expected
    assert route["route"]["maxGrpcTimeout"] == expected


# --- 7. direct response, redirect, rewrite, headers -----------------------------------------------------------------
def test_direct_response() -> None:
    route = first_route("- directResponse: {status: 418, body: {string: teapot}}\n")
    assert route["directResponse"] == {"status": 418, "body": {"inlineString": "teapot"}}
    assert "route" not in route


@pytest.mark.parametrize(("redirect", "expected"), [
    ("{uri: /v2}", {"pathRedirect": "/v2", "responseCode": "MOVED_PERMANENTLY"}),
    ("{authority: new.example.com, redirectCode: 302}", {"hostRedirect": "new.example.com", "responseCode": "FOUND"}),
    ("{scheme: https, redirectCode: 308}", {"schemeRedirect": "https", "responseCode": "PERMANENT_REDIRECT"}),
    ("{uri: /x, port: 8443, redirectCode: 307}",
     {"pathRedirect": "/x", "portRedirect": 8443, "responseCode": "TEMPORARY_REDIRECT"}),
    ("{uri: /x, redirectCode: 303}", {"pathRedirect": "/x", "responseCode": "SEE_OTHER"}),
    ("{uri: /x, port: 80}", {"pathRedirect": "/x", "responseCode": "MOVED_PERMANENTLY"}),  # no explicit :80
    ("{scheme: https, port: 443}", {"schemeRedirect": "https", "responseCode": "MOVED_PERMANENTLY"}),
    ("{scheme: https, port: 80}", {"schemeRedirect": "https", "portRedirect": 80, "responseCode": "MOVED_PERMANENTLY"}),
    ("{uri: /x, derivePort: FROM_PROTOCOL_DEFAULT}", {"pathRedirect": "/x", "responseCode": "MOVED_PERMANENTLY"}),
])
def test_redirect(redirect: str, expected: dict) -> None:
    route = first_route(f"- redirect: {redirect}\n")
    assert route["redirect"] == expected


def test_redirect_derive_port_from_request_uses_the_listener_port() -> None:
    store = world(MULTIPORT, catalog_vs("- redirect: {uri: /x, derivePort: FROM_REQUEST_PORT}\n", hosts="[ratings]"))
    pc = proxy(store)
    assert vhost(pc, "9901", "ratings.istioinaction.svc.cluster.local:9901")["routes"][0]["redirect"][
        "portRedirect"] == 9901
    assert "portRedirect" not in vhost(pc, "80", "ratings.istioinaction.svc.cluster.local:80")["routes"][0]["redirect"]


def test_unsupported_redirect_code_drops_the_route() -> None:
    routes = catalog_routes(world(catalog_vs("""
        - match: [{uri: {prefix: /old}}]
          redirect: {uri: /new, redirectCode: 305}
        - route:
          - destination: {host: catalog, subset: version-v1}
        """)))
    assert [r["match"]["prefix"] for r in routes] == ["/"]


def test_rewrite() -> None:
    route = first_route("""
        - match: [{uri: {prefix: /api/catalog}}]
          rewrite: {uri: /items, authority: catalog.internal}
          route:
          - destination: {host: catalog}
        """)
    assert route["route"]["prefixRewrite"] == "/items"
    assert route["route"]["hostRewriteLiteral"] == "catalog.internal"
    regex = first_route("""
        - rewrite: {uriRegexRewrite: {match: '^/v1/(.*)', rewrite: '/\\1'}}
          route:
          - destination: {host: catalog}
        """)
    assert regex["route"]["regexRewrite"] == {"pattern": {"regex": "^/v1/(.*)"}, "substitution": "/\\1"}


def test_header_operations() -> None:
    route = first_route("""
        - headers:
            request:
              set: {x-b: '2', x-a: '1', host: other.example.com}
              add: {x-c: '3'}
              remove: [x-debug, ':path']
            response:
              set: {x-served-by: catalog}
          route:
          - destination: {host: catalog}
        """)
    assert route["requestHeadersToAdd"] == [
        {"header": {"key": "x-a", "value": "1"}, "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-b", "value": "2"}, "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-c", "value": "3"}, "appendAction": "APPEND_IF_EXISTS_OR_ADD"}]
    assert route["requestHeadersToRemove"] == ["x-debug"]
    assert route["responseHeadersToAdd"] == [
        {"header": {"key": "x-served-by", "value": "catalog"}, "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert route["route"]["hostRewriteLiteral"] == "other.example.com"


def test_route_metadata_and_decorator() -> None:
    route = first_route("- route:\n  - destination: {host: catalog, subset: version-v1}\n")
    assert route["metadata"] == {"filterMetadata": {"istio": {
        "config": "/apis/networking.istio.io/v1alpha3/namespaces/istioinaction/virtual-service/catalog"}}}
    assert route["decorator"] == {"operation": f"{CATALOG}:80/*"}
    weighted = first_route("""
        - match: [{uri: {exact: /items}}]
          route:
          - destination: {host: catalog, subset: version-v1}
            weight: 50
          - destination: {host: catalog, subset: version-v2}
            weight: 50
        """)
    assert weighted["decorator"] == {"operation": "catalog:80/items"}


# --- 8. the walkthrough's gateway output (seed §5.2.5) --------------------------------------------------------------
def walkthrough(*names: str, version: str | None = None) -> ConfigStore:
    return ConfigStore.from_paths([SERVICES, *(CH5 / n for n in names)], NS, profile_for(version))


def test_seed_gateway_routes_for_the_cohort_header() -> None:
    pc = proxy(walkthrough("catalog-dest-rule.yaml", "catalog-gateway.yaml", "catalog-vs-v2-request.yaml"),
               GATEWAY_PROXY)
    rc = istioctl_routes(pc, "http.8080")
    assert len(rc) == 1 and rc[0]["name"] == "http.8080"
    assert [vh["name"] for vh in rc[0]["virtualHosts"]] == ["catalog.istioinaction.io:80"]
    vh = rc[0]["virtualHosts"][0]
    assert vh["domains"] == ["catalog.istioinaction.io"]
    first, second = vh["routes"]
    assert first["match"] == {"prefix": "/", "caseSensitive": True,
                              "headers": [{"name": "x-istio-cohort", "stringMatch": {"exact": "internal"}}]}
    assert first["route"]["cluster"] == V2
    assert first["route"]["timeout"] == "0s"
    assert second["match"] == {"prefix": "/"}
    assert second["route"]["cluster"] == V1
    assert rc[0]["ignorePortInHostMatching"] is True
    assert [x["name"] for x in pc.listeners] == ["0.0.0.0_8080"]


def test_gateway_with_no_bound_virtual_service_is_a_blackhole() -> None:
    pc = proxy(walkthrough("catalog-dest-rule.yaml", "catalog-gateway.yaml"), GATEWAY_PROXY)
    assert pc.route_configs["http.8080"]["virtualHosts"] == [
        {"name": "blackhole:80", "domains": ["*"], "routes": []}]


def test_no_blackhole_when_another_gateway_on_the_port_has_routes() -> None:
    pc = proxy(walkthrough("catalog-gateway.yaml", "webapp-catalog-gw-vs.yaml"), GATEWAY_PROXY)
    assert [vh["name"] for vh in pc.route_configs["http.8080"]["virtualHosts"]] == ["webapp.istioinaction.io:80"]


def test_gateway_virtual_services_for_one_host_merge_with_catch_alls_last() -> None:
    first = catalog_vs("""
        - route:
          - destination: {host: catalog, subset: version-v1}
        """, hosts="[catalog.istioinaction.io]", gateways="[catalog-gateway]", name="a-default")
    second = catalog_vs("""
        - match: [{headers: {x-istio-cohort: {exact: internal}}}]
          route:
          - destination: {host: catalog, subset: version-v2}
        - route:
          - destination: {host: catalog}
        """, hosts="[catalog.istioinaction.io]", gateways="[catalog-gateway]", name="b-cohort")
    pc = proxy(world(first, second, CATALOG_GATEWAY), GATEWAY_PROXY)
    routes = vhost(pc, "http.8080", "catalog.istioinaction.io:80")["routes"]
    assert [r["route"]["cluster"] for r in routes] == [V2, V1, CATALOG_DEFAULT]
    # the origin of each route follows the reordering
    assert [pc.origin("http.8080", "catalog.istioinaction.io:80", i).resource.name for i in range(3)] == [
        "b-cohort", "a-default", "b-cohort"]


def test_gateway_stops_emitting_routes_after_a_catch_all() -> None:
    """Rules after a catch-all are unreachable; Istio does not emit them, so merging cannot revive them."""
    vs = catalog_vs("""
        - route:
          - destination: {host: catalog, subset: version-v1}
        - match: [{headers: {x-istio-cohort: {exact: internal}}}]
          route:
          - destination: {host: catalog, subset: version-v2}
        """, hosts="[catalog.istioinaction.io]", gateways="[catalog-gateway]")
    pc = proxy(world(vs, CATALOG_GATEWAY), GATEWAY_PROXY)
    assert [r["route"]["cluster"] for r in vhost(pc, "http.8080", "catalog.istioinaction.io:80")["routes"]] == [V1]


def test_gateway_gets_no_default_routes_and_no_catch_all_vhost() -> None:
    pc = proxy(walkthrough("catalog-dest-rule.yaml", "catalog-gateway.yaml", "catalog-vs-v1.yaml"), GATEWAY_PROXY)
    assert [vh["name"] for vh in pc.route_configs["http.8080"]["virtualHosts"]] == ["catalog.istioinaction.io:80"]
    assert list(pc.route_configs) == ["http.8080"]


# --- 9. sidecar route config `80`: domains per version, catch-all ---------------------------------------------------
def catalog_domains(version: str, proxy_ref: str = "deploy/webapp.istioinaction") -> tuple[list[str], str]:
    store = world(SLEEP_OTHER_NS, version=version)
    ip = store.find_service(CATALOG).address
    return vhost(proxy(store, proxy_ref), "80", f"{CATALOG}:80")["domains"], ip


@pytest.mark.parametrize("version", ["1.16", "1.17", "1.24", "1.26"])
def test_sidecar_domains_without_port_variants(version: str) -> None:
    domains, ip = catalog_domains(version)
    assert domains == [CATALOG, "catalog", "catalog.istioinaction.svc", "catalog.istioinaction", ip]


@pytest.mark.parametrize("version", ["1.27", "1.28"])
def test_sidecar_domains_with_absolute_fqdn_from_1_27(version: str) -> None:
    domains, ip = catalog_domains(version)
    assert domains == [CATALOG, CATALOG + ".", "catalog", "catalog.istioinaction.svc", "catalog.istioinaction", ip]


def test_sidecar_domains_with_port_variants_up_to_1_15() -> None:
    domains, ip = catalog_domains("1.15")
    names = [CATALOG, "catalog", "catalog.istioinaction.svc", "catalog.istioinaction", ip]
    assert domains == [d for n in names for d in (n, f"{n}:80")]


@pytest.mark.parametrize(("version", "fqdn_dot"), [("1.17", False), ("1.27", True)])
def test_sidecar_domains_from_another_namespace(version: str, fqdn_dot: bool) -> None:
    domains, ip = catalog_domains(version, "deploy/sleep.other")
    assert domains == [CATALOG, *([CATALOG + "."] if fqdn_dot else []), "catalog.istioinaction",
                       "catalog.istioinaction.svc", ip]


MULTIPORT = """
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports:
  - {name: http, port: 80, targetPort: 9080}
  - {name: http-admin, port: 9901}
"""


@pytest.mark.parametrize(("version", "port_variants"), [("1.15", True), ("1.17", False)])
def test_port_variants_use_the_route_config_port(version: str, port_variants: bool) -> None:
    pc = proxy(world(MULTIPORT, version=version))
    domains = vhost(pc, "9901", "ratings.istioinaction.svc.cluster.local:9901")["domains"]
    assert ("ratings:9901" in domains) is port_variants
    assert "ratings:80" not in domains


@pytest.mark.parametrize(("version", "ignore_port"), [("1.15", None), ("1.16", True), ("1.24", True)])
def test_sidecar_ignores_port_in_host_matching_from_1_16(version: str, ignore_port: bool | None) -> None:
    rc = proxy(world(version=version)).route_configs["80"]
    assert rc.get("ignorePortInHostMatching") is ignore_port
    assert rc["validateClusters"] is False and rc["maxDirectResponseBodySizeBytes"] == 1048576


def test_sidecar_virtual_hosts_are_sorted_with_the_catch_all_last() -> None:
    pc = proxy(walkthrough("forum-serviceentry.yaml"))
    names = [vh["name"] for vh in pc.route_configs["80"]["virtualHosts"]]
    assert names[-1] == "allow_any"
    assert names[:-1] == sorted(names[:-1])
    assert {f"{CATALOG}:80", "jsonplaceholder.typicode.com:80", "forum.istioinaction.svc.cluster.local:80"} <= set(
        names)


ALLOW_ANY_VHOST = {"name": "allow_any", "domains": ["*"], "includeRequestAttemptCount": True,
                   "routes": [{"name": "allow_any", "match": {"prefix": "/"},
                               "route": {"cluster": "PassthroughCluster", "timeout": "0s", "maxGrpcTimeout": "0s"}}]}
BLOCK_ALL_VHOST = {"name": "block_all", "domains": ["*"], "includeRequestAttemptCount": True,
                   "routes": [{"name": "block_all", "match": {"prefix": "/"}, "directResponse": {"status": 502}}]}

REGISTRY_ONLY_MESH = (CH5 / "mesh-registry-only.yaml").read_text()


def sidecar_resource(mode: str, selector: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {{name: default}}
spec:
  {selector}
  outboundTrafficPolicy: {{mode: {mode}}}
"""


@pytest.mark.parametrize(("docs", "expected"), [
    ((), ALLOW_ANY_VHOST),
    ((REGISTRY_ONLY_MESH,), BLOCK_ALL_VHOST),
    ((sidecar_resource("REGISTRY_ONLY"),), BLOCK_ALL_VHOST),
    ((REGISTRY_ONLY_MESH, sidecar_resource("ALLOW_ANY")), ALLOW_ANY_VHOST),
    ((sidecar_resource("REGISTRY_ONLY", "workloadSelector: {labels: {app: webapp}}"),), BLOCK_ALL_VHOST),
    ((sidecar_resource("REGISTRY_ONLY", "workloadSelector: {labels: {app: catalog}}"),), ALLOW_ANY_VHOST),
])
def test_sidecar_catch_all_by_outbound_traffic_policy(docs: tuple[str, ...], expected: dict) -> None:
    vhosts = proxy(world(*docs)).route_configs["80"]["virtualHosts"]
    assert vhosts[-1] == expected


def test_sidecar_egress_hosts_hide_services() -> None:
    sc = """
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: default}
spec:
  egress:
  - hosts: ["./webapp.istioinaction.svc.cluster.local"]
"""
    pc = proxy(world(sc))
    assert [vh["name"] for vh in pc.route_configs["80"]["virtualHosts"]] == [
        "webapp.istioinaction.svc.cluster.local:80", "allow_any"]
    assert not any(CATALOG in c for c in pc.clusters)


def test_service_entry_gets_a_virtual_host_and_a_strict_dns_cluster() -> None:
    pc = proxy(walkthrough("forum-serviceentry.yaml"), "deploy/forum.istioinaction")
    vh = vhost(pc, "80", "jsonplaceholder.typicode.com:80")
    assert vh["domains"] == ["jsonplaceholder.typicode.com"]
    assert vh["routes"][0]["route"]["cluster"] == "outbound|80||jsonplaceholder.typicode.com"
    cluster = pc.clusters["outbound|80||jsonplaceholder.typicode.com"]
    assert cluster["type"] == "STRICT_DNS" and "edsClusterConfig" not in cluster


@pytest.mark.parametrize(("resolution", "cluster_type"), [("NONE", "ORIGINAL_DST"), ("STATIC", "EDS"),
                                                          ("DNS", "STRICT_DNS"), ("DNS_ROUND_ROBIN", "LOGICAL_DNS")])
def test_service_entry_resolution_to_cluster_type(resolution: str, cluster_type: str) -> None:
    se = (CH5 / "forum-serviceentry.yaml").read_text().replace("resolution: DNS", f"resolution: {resolution}")
    assert proxy(world(se)).clusters["outbound|80||jsonplaceholder.typicode.com"]["type"] == cluster_type


def test_subset_clusters_exist_only_with_a_destination_rule() -> None:
    without = [c for c in proxy(world(dr=False)).clusters if CATALOG in c]
    assert without == [CATALOG_DEFAULT]
    with_dr = proxy(world())
    assert [c for c in with_dr.clusters if CATALOG in c] == [CATALOG_DEFAULT, V1, V2]
    assert [e.workload for e in with_dr.endpoints[V1]] == ["catalog"]
    assert [e.workload for e in with_dr.endpoints[V2]] == ["catalog-v2"]
    assert sorted(e.workload for e in with_dr.endpoints[CATALOG_DEFAULT]) == ["catalog", "catalog-v2"]
    assert {e.port for e in with_dr.endpoints[V1]} == {3000}


def test_cluster_essentials() -> None:
    c = proxy(world()).clusters[V1]
    assert c["type"] == "EDS" and c["edsClusterConfig"]["serviceName"] == V1
    assert (c["connectTimeout"], c["lbPolicy"]) == ("10s", "LEAST_REQUEST")
    assert c["circuitBreakers"]["thresholds"][0]["maxRetries"] == 4294967295
    assert c["metadata"]["filterMetadata"]["istio"]["services"] == [
        {"host": CATALOG, "name": "catalog", "namespace": NS}]
    assert proxy(world(version="1.13")).clusters[V1]["lbPolicy"] == "ROUND_ROBIN"


def test_two_mesh_virtual_services_for_one_host_first_applied_wins() -> None:
    a = catalog_vs("- route:\n  - destination: {host: catalog, subset: version-v1}\n", name="first")
    b = catalog_vs("- route:\n  - destination: {host: catalog, subset: version-v2}\n", name="second")
    assert [r["route"]["cluster"] for r in catalog_routes(world(a, b))] == [V1]
    assert [r["route"]["cluster"] for r in catalog_routes(world(b, a))] == [V2]
    store = world(a, b)
    store.apply_text(y(a).replace("version-v1", "version-v2"), NS)  # an update keeps the creation order
    assert [r["route"]["cluster"] for r in catalog_routes(store)] == [V2]
    pc = proxy(store)
    assert pc.origin("80", f"{CATALOG}:80", 0).resource.name == "first"


def test_a_virtual_service_with_no_route_for_this_proxy_does_not_hide_the_next_one() -> None:
    a = catalog_vs("- match: [{sourceLabels: {app: nobody}}]\n  route:\n  - destination: {host: catalog}\n",
                   name="first")
    b = catalog_vs("- route:\n  - destination: {host: catalog, subset: version-v2}\n", name="second")
    assert [r["route"]["cluster"] for r in catalog_routes(world(a, b))] == [V2]


def test_virtual_service_for_a_host_outside_the_registry() -> None:
    vs = catalog_vs("- route:\n  - destination: {host: catalog, subset: version-v1}\n", hosts="[legacy.example.com]")
    pc = proxy(world(vs, MULTIPORT))
    vh = vhost(pc, "80", "legacy.example.com:80")
    assert vh["domains"] == ["legacy.example.com"]
    assert vh["routes"][0]["route"]["cluster"] == V1
    assert all(v["name"] != "legacy.example.com:9901" for v in pc.route_configs["9901"]["virtualHosts"])


# --- 10. the two JSON dialects --------------------------------------------------------------------------------------
def test_config_dump_is_snake_case_and_keeps_type_urls_and_filter_names() -> None:
    pc = proxy(world(catalog_vs("""
        - route:
          - destination: {host: catalog, subset: version-v1}
            weight: 90
          - destination: {host: catalog, subset: version-v2}
            weight: 10
          fault:
            abort: {httpStatus: 500, percentage: {value: 1}}
        """)))
    dump = config_dump(pc)
    text = json.dumps(dump)
    kinds = [c["@type"].rsplit(".", 1)[1] for c in dump["configs"]]
    assert kinds == ["ListenersConfigDump", "ClustersConfigDump", "RoutesConfigDump"]
    routes = dump["configs"][2]["dynamic_route_configs"]
    rc80 = next(r["route_config"] for r in routes if r["route_config"]["name"] == "80")
    assert rc80["@type"] == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    vh = next(v for v in rc80["virtual_hosts"] if v["name"] == f"{CATALOG}:80")
    route = vh["routes"][0]
    assert route["route"]["weighted_clusters"]["clusters"] == [{"name": V1, "weight": 90}, {"name": V2, "weight": 10}]
    assert route["route"]["retry_policy"]["retry_host_predicate"][0]["typed_config"]["@type"].endswith(
        "PreviousHostsPredicate")
    assert set(route["typed_per_filter_config"]) == {"envoy.filters.http.fault"}
    assert route["metadata"]["filter_metadata"]["istio"]["config"].endswith("/virtual-service/catalog")
    assert "weightedClusters" not in text and "virtualHosts" not in text and "routeConfigName" not in text
    listener = dump["configs"][0]["dynamic_listeners"][0]["active_state"]["listener"]
    hcm = listener["filter_chains"][0]["filters"][0]
    assert hcm["name"] == "envoy.filters.network.http_connection_manager"
    assert hcm["typed_config"]["rds"]["route_config_name"] == "80"
    assert dump["configs"][1]["dynamic_active_clusters"][0]["cluster"]["@type"].endswith("cluster.v3.Cluster")


def test_istioctl_dialect_is_camel_case() -> None:
    rc = istioctl_routes(proxy(world()), "80")[0]
    assert "virtualHosts" in rc and "virtual_hosts" not in rc
    assert to_snake({"maxGrpcTimeout": "0s", "typedPerFilterConfig": {"envoy.filters.http.fault": {"@type": "x"}}}) == \
        {"max_grpc_timeout": "0s", "typed_per_filter_config": {"envoy.filters.http.fault": {"@type": "x"}}}


# --- 11. version knobs ----------------------------------------------------------------------------------------------
PASSTHROUGH_OLD = ("InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv6")
PASSTHROUGH_NEW = ("InboundPassthroughCluster",)
KNOBS = {  # version: (weights_must_sum_100, emit_total_weight, port_domain_variants, absolute_fqdn_domain,
    #                   default_retriable_503, inbound_passthrough_clusters, shadow_host_suffix, default_lb_policy)
    "1.13": (True, False, True, False, True, PASSTHROUGH_OLD, True, "ROUND_ROBIN"),
    "1.14": (True, False, True, False, True, PASSTHROUGH_OLD, True, "LEAST_REQUEST"),
    "1.15": (False, True, True, False, True, PASSTHROUGH_OLD, True, "LEAST_REQUEST"),
    "1.17": (False, True, False, False, True, PASSTHROUGH_OLD, True, "LEAST_REQUEST"),
    "1.23": (False, False, False, False, True, PASSTHROUGH_NEW, True, "LEAST_REQUEST"),
    "1.24": (False, False, False, False, False, PASSTHROUGH_NEW, True, "LEAST_REQUEST"),
    "1.27": (False, False, False, True, False, PASSTHROUGH_NEW, True, "LEAST_REQUEST"),
    "1.28": (False, False, False, True, False, PASSTHROUGH_NEW, False, "LEAST_REQUEST"),
}


@pytest.mark.parametrize(("version", "knobs"), KNOBS.items(), ids=list(KNOBS))
def test_version_knobs(version: str, knobs: tuple) -> None:
    profile = profile_for(version)
    names = [f.name for f in dataclasses.fields(IstioProfile) if f.name != "version"][:len(knobs)]
    assert dict(zip(names, knobs, strict=True)) == {n: getattr(profile, n) for n in names}
    assert profile.version == version and profile.minor == int(version.split(".")[1])


@pytest.mark.parametrize(("raw", "version"), [(None, "1.17"), ("1.24.2", "1.24"), ("istio-1.28", "1.28"),
                                              ("v1.15", "1.15"), (" 1.16 ", "1.16")])
def test_version_spellings(raw: str | None, version: str) -> None:
    assert profile_for(raw).version == version


@pytest.mark.parametrize("raw", ["1.12", "1.29", "2.0", "latest", "1", "1.x"])
def test_unknown_version_is_an_error(raw: str) -> None:
    with pytest.raises(MeshlibError, match="Istio"):
        profile_for(raw)
