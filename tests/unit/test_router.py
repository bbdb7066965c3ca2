"""Route selection over translated config, as Envoy does it: virtual hosts, matchers, outcomes, weights, mirrors.

Randomness is injected: the statistical test uses a seeded `random.Random`; the boundary tests use a fake RNG
whose `random()` returns fixed values, so the weight and percentage arithmetic is checked exactly.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
from helpers import (
    CATALOG_DEFAULT,
    CATALOG_GATEWAY,
    CH5,
    GATEWAY_PROXY,
    V1,
    V2,
    catalog_vs,
    proxy,
    route_to,
    world,
)
from scipy.stats import binom

from meshlib.router import Request, select_route
from meshlib.router.match import domain_matches, route_matches, select_virtual_host
from meshlib.router.select import fraction_percent, pick_weighted, roll
from meshlib.xds import ProxyConfig


class FakeRandom:
    """Stands in for random.Random: `random()` returns the given values in order and fails when they run out."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        self.values = list(values)
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        if not self.values:
            raise AssertionError("the router drew a random number it should not need")
        return self.values.pop(0)


def req(authority: str = "catalog", path: str = "/", headers: dict[str, str] | None = None,
        method: str = "GET") -> Request:
    return Request.of(authority, path, method, headers or {})


# --- virtual host selection -----------------------------------------------------------------------------------------
DOMAIN_RC = {"ignorePortInHostMatching": True, "virtualHosts": [
    {"name": "star", "domains": ["*"]},
    {"name": "prefix", "domains": ["api.*"]},
    {"name": "long-prefix", "domains": ["api.example.*"]},
    {"name": "suffix", "domains": ["*.example.com"]},
    {"name": "long-suffix", "domains": ["*.shop.example.com"]},
    {"name": "exact", "domains": ["api.example.com", "catalog"]},
]}


@pytest.mark.parametrize(("host", "vhost"), [
    ("api.example.com", "exact"),  # exact beats *.example.com and api.*
    ("API.Example.COM", "exact"),  # hosts compare case-insensitively
    ("api.example.com:8080", "exact"),  # the port is ignored (ignorePortInHostMatching)
    ("www.example.com", "suffix"),
    ("cart.shop.example.com", "long-suffix"),  # the longer suffix wins
    ("api.example.org", "long-prefix"),  # the longer prefix wins
    ("api.other", "prefix"),
    ("api.shop.example.com", "long-suffix"),  # suffix beats prefix
    ("unknown.test", "star"),
    ("catalog", "exact"),
])
def test_virtual_host_domain_precedence(host: str, vhost: str) -> None:
    assert select_virtual_host(DOMAIN_RC, req(host))["name"] == vhost


def test_without_star_an_unknown_host_has_no_virtual_host() -> None:
    rc = {"ignorePortInHostMatching": True, "virtualHosts": DOMAIN_RC["virtualHosts"][1:]}
    assert select_virtual_host(rc, req("catalog.internal")) is None


def test_port_counts_when_the_route_config_does_not_ignore_it() -> None:
    rc = {"virtualHosts": [{"name": "with-port", "domains": ["catalog:80"]}, {"name": "bare", "domains": ["catalog"]}]}
    assert select_virtual_host(rc, req("catalog:80"))["name"] == "with-port"
    assert select_virtual_host(rc, req("catalog"))["name"] == "bare"
    assert select_virtual_host(rc, req("catalog:8080")) is None


@pytest.mark.parametrize(("domain", "host", "rank"), [
    ("a.b", "a.b", 3), ("*.b", "a.b", 2), ("a.*", "a.b", 1), ("*", "a.b", 0), ("*.b", "b", -1), ("x.b", "a.b", -1)])
def test_domain_match_kinds(domain: str, host: str, rank: int) -> None:
    assert domain_matches(domain, host) == rank


# --- route matchers -------------------------------------------------------------------------------------------------
def m(**kw: Any) -> dict[str, Any]:
    """A route match: {"prefix": "/"} plus the given fields."""
    return {"prefix": "/", **kw} if not ({"path", "safeRegex", "prefix"} & kw.keys()) else kw


def header(name: str, invert: bool = False, missing_empty: bool = False, **spec: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"name": name}
    if spec.get("present"):
        h["presentMatch"] = True
    else:
        h["stringMatch"] = spec
    if invert:
        h["invertMatch"] = True
    if missing_empty:
        h["treatMissingHeaderAsEmpty"] = True
    return h


MATCHER_CASES = [
    # path: prefix compares the raw :path (query included), exact and regex the path without the query
    (m(prefix="/items"), req(path="/items?id=7"), True),
    (m(prefix="/items"), req(path="/itemsXYZ"), True),
    (m(prefix="/items/"), req(path="/items"), False),
    (m(path="/items"), req(path="/items?id=7"), True),
    (m(path="/items"), req(path="/items/7"), False),
    (m(path="/items"), req(path="/Items"), False),
    (m(path="/items", caseSensitive=False), req(path="/ITEMS"), True),
    (m(prefix="/API", caseSensitive=False), req(path="/api/items"), True),
    (m(prefix="/API"), req(path="/api/items"), False),
    # RE2 full match: a regex that matches only a substring must not match
    (m(safeRegex={"regex": "/items/[0-9]+"}), req(path="/items/42"), True),
    (m(safeRegex={"regex": "/items/[0-9]+"}), req(path="/items/42?x=1"), True),
    (m(safeRegex={"regex": "/items/[0-9]+"}), req(path="/items/42abc"), False),
    (m(safeRegex={"regex": "/items/[0-9]+"}), req(path="/v1/items/42"), False),
    (m(safeRegex={"regex": "/items"}), req(path="/ITEMS"), False),
    (m(safeRegex={"regex": "/items"}, caseSensitive=False), req(path="/ITEMS"), False),  # case flag: not for regex
    # headers: names case-insensitive, values case-sensitive
    (m(headers=[header("X-Istio-Cohort", exact="internal")]), req(headers={"x-istio-cohort": "internal"}), True),
    # an absent header matches no string matcher, inverted or not (Envoy's HeaderUtility::matchHeaders), unless
    # treatMissingHeaderAsEmpty (istiod from 1.22) compares "" instead; an inverted presence check does match
    (m(headers=[header("x-canary", invert=True, exact="yes")]), req(), False),
    (m(headers=[header("x-canary", invert=True, missing_empty=True, exact="yes")]), req(), True),
    (m(headers=[header("x-canary", invert=True, missing_empty=True, exact="")]), req(), False),
    (m(headers=[header("x-canary", invert=True, exact="yes")]), req(headers={"x-canary": "no"}), True),
    (m(headers=[header("x-canary", invert=True, present=True)]), req(), True),
    (m(headers=[header("x-istio-cohort", exact="internal")]), req(headers={"X-ISTIO-COHORT": "internal"}), True),
    (m(headers=[header("x-istio-cohort", exact="internal")]), req(headers={"x-istio-cohort": "Internal"}), False),
    (m(headers=[header("x-istio-cohort", exact="internal")]), req(), False),
    (m(headers=[header("user-agent", prefix="Mozilla")]), req(headers={"user-agent": "Mozilla/5.0"}), True),
    (m(headers=[header("x-user", safeRegex={"regex": "admin"})]), req(headers={"x-user": "superadmin"}), False),
    (m(headers=[header("x-user", safeRegex={"regex": ".*admin"})]), req(headers={"x-user": "superadmin"}), True),
    (m(headers=[header("x-canary", present=True)]), req(headers={"x-canary": ""}), True),
    (m(headers=[header("x-canary", present=True)]), req(), False),
    # fields within one match are AND
    (m(headers=[header("a", exact="1"), header("b", exact="2")]), req(headers={"a": "1"}), False),
    (m(headers=[header("a", exact="1"), header("b", exact="2")]), req(headers={"a": "1", "b": "2"}), True),
    # withoutHeaders: string form passes when absent or different; presence form only when absent
    (m(headers=[header("x-canary", True, True, exact="yes")]), req(), True),
    (m(headers=[header("x-canary", True, True, exact="yes")]), req(headers={"x-canary": "no"}), True),
    (m(headers=[header("x-canary", True, True, exact="yes")]), req(headers={"x-canary": "yes"}), False),
    (m(headers=[header("x-canary", True, True, exact="")]), req(), False),  # missing treated as empty
    (m(headers=[header("x-canary", True, present=True)]), req(), True),
    (m(headers=[header("x-canary", True, present=True)]), req(headers={"x-canary": "no"}), False),
    # pseudo headers
    (m(headers=[header(":method", exact="POST")]), req(method="post"), True),
    (m(headers=[header(":method", exact="POST")]), req(), False),
    (m(headers=[header(":authority", exact="catalog")]), req("catalog:80"), False),  # raw Host, port included
    (m(headers=[header(":authority", prefix="catalog")]), req("catalog:80"), True),
    # query parameters
    (m(queryParameters=[{"name": "id", "stringMatch": {"exact": "7"}}]), req(path="/items?id=7"), True),
    (m(queryParameters=[{"name": "id", "stringMatch": {"exact": "7"}}]), req(path="/items?id=77"), False),
    (m(queryParameters=[{"name": "id", "stringMatch": {"exact": "7"}}]), req(path="/items?ID=7"), False),
    (m(queryParameters=[{"name": "id", "stringMatch": {"exact": "7"}}]), req(path="/items?id=8&id=7"), False),
    (m(queryParameters=[{"name": "id", "stringMatch": {"safeRegex": {"regex": "[0-9]+"}}}]),
     req(path="/?id=12"), True),
    (m(queryParameters=[{"name": "id", "stringMatch": {"safeRegex": {"regex": "[0-9]"}}}]), req(path="/?id=12"), False),
    (m(queryParameters=[{"name": "debug", "presentMatch": True}]), req(path="/?debug"), True),
    (m(queryParameters=[{"name": "debug", "presentMatch": True}]), req(path="/?other=1"), False),
    (m(queryParameters=[{"name": "debug", "stringMatch": {"exact": ""}}]), req(path="/?debug"), True),
    (m(queryParameters=[{"name": "debug", "stringMatch": {"exact": ""}}]), req(path="/"), False),
]


@pytest.mark.parametrize(("match", "request_", "matches"), MATCHER_CASES,
                         ids=[f"{i}-{'match' if c[2] else 'no'}" for i, c in enumerate(MATCHER_CASES)])
def test_route_matchers(match: dict, request_: Request, matches: bool) -> None:
    assert route_matches(match, request_) is matches


def bare_proxy(routes: list[dict], domains: tuple[str, ...] = ("catalog",)) -> ProxyConfig:
    """A hand-written sidecar config: one route config `80` with one virtual host; clusters c1..c3 with a pod."""
    pc = ProxyConfig("deploy/test.ns", "sidecar", "ns", {})
    pc.route_configs["80"] = {"name": "80", "ignorePortInHostMatching": True,
                              "virtualHosts": [{"name": "vh", "domains": list(domains), "routes": routes}]}
    pc.listener_ports[80] = "80"
    for c in ("c1", "c2", "c3"):
        pc.clusters[c] = {"name": c}
        pc.endpoints[c] = [object()]  # one healthy endpoint
    return pc


def r(cluster: str, **match: Any) -> dict:
    return {"match": m(**match), "route": {"cluster": cluster}}


@pytest.mark.parametrize(("routes", "path", "cluster"), [
    ([r("c1", prefix="/a"), r("c2", prefix="/")], "/a/b", "c1"),
    ([r("c1", prefix="/a"), r("c2", prefix="/")], "/b", "c2"),
    ([r("c2", prefix="/"), r("c1", prefix="/a")], "/a/b", "c2"),  # first match wins, not the longest
    ([r("c1", path="/a"), r("c2", prefix="/a"), r("c3", prefix="/")], "/a", "c1"),
    ([r("c1", path="/a"), r("c2", prefix="/a"), r("c3", prefix="/")], "/a/x", "c2"),
])
def test_first_matching_route_wins(routes: list[dict], path: str, cluster: str) -> None:
    d = select_route(bare_proxy(routes), req(path=path), 80, FakeRandom())
    assert (d.cluster, d.status) == (cluster, None)


# --- outcomes on the translated walkthrough config ------------------------------------------------------------------
GATEWAY_VS = catalog_vs("""
    - match: [{uri: {prefix: /api}}]
      route:
      - destination: {host: catalog, subset: version-v1}
    """, hosts="[catalog.istioinaction.io]", gateways="[catalog-gateway]", name="catalog-vs-from-gw")


def outcome(d: Any) -> tuple:
    return d.status, d.flags, d.details, d.body


def test_unknown_host_at_the_gateway_is_404_nr() -> None:
    pc = proxy(world(GATEWAY_VS, CATALOG_GATEWAY), GATEWAY_PROXY)
    d = route_to(pc, req("webapp.istioinaction.io", "/api"), 8080)
    assert outcome(d) == (404, "NR", "route_not_found", "")
    assert d.virtual_host is None


def test_no_matching_route_is_404_nr() -> None:
    pc = proxy(world(GATEWAY_VS, CATALOG_GATEWAY), GATEWAY_PROXY)
    d = route_to(pc, req("catalog.istioinaction.io", "/other"), 8080)
    assert outcome(d) == (404, "NR", "route_not_found", "")
    assert d.virtual_host == "catalog.istioinaction.io:80"
    ok = route_to(pc, req("catalog.istioinaction.io:30000", "/api/items"), 8080)
    assert (ok.status, ok.cluster) == (None, V1)


def test_gateway_blackhole_is_404_nr() -> None:
    pc = proxy(world(CATALOG_GATEWAY), GATEWAY_PROXY)
    d = route_to(pc, req("catalog.istioinaction.io"), 8080)
    assert (d.virtual_host, *outcome(d)) == ("blackhole:80", 404, "NR", "route_not_found", "")


def test_subset_without_destination_rule_is_503_nc() -> None:
    pc = proxy(world(catalog_vs("- route:\n  - destination: {host: catalog, subset: version-v1}\n"), dr=False))
    d = route_to(pc, req("catalog.istioinaction"))
    assert outcome(d) == (503, "NC", "cluster_not_found", "")
    assert d.cluster == V1


def test_subset_selecting_no_pods_is_503_uh() -> None:
    dr_v3 = """
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: catalog}
spec:
  host: catalog
  subsets:
  - {name: version-v3, labels: {version: v3}}
"""
    pc = proxy(world(dr_v3, catalog_vs("- route:\n  - destination: {host: catalog, subset: version-v3}\n"), dr=False))
    d = route_to(pc, req("catalog"))
    assert outcome(d) == (503, "UH", "no_healthy_upstream", "no healthy upstream")


def test_no_healthy_endpoint_is_503_uh() -> None:
    pc = proxy(world(catalog_vs("- route:\n  - destination: {host: catalog, subset: version-v1}\n")))
    d = select_route(pc, req("catalog"), 80, FakeRandom(), healthy={V1: 0})
    assert outcome(d) == (503, "UH", "no_healthy_upstream", "no healthy upstream")


@pytest.mark.parametrize(("docs", "expected"), [
    ((), (None, "-", "via_upstream", "")),
    (((CH5 / "mesh-registry-only.yaml").read_text(),), (502, "-", "direct_response", "")),
])
def test_unknown_host_from_a_sidecar_by_outbound_policy(docs: tuple[str, ...], expected: tuple) -> None:
    pc = proxy(world(*docs))
    d = route_to(pc, req("jsonplaceholder.typicode.com", "/posts"))
    assert outcome(d) == expected
    if expected[0] is None:
        assert (d.virtual_host, d.cluster, d.route_name) == ("allow_any", "PassthroughCluster", "allow_any")
    else:
        assert (d.virtual_host, d.route_name) == ("block_all", "block_all")


def test_service_entry_host_is_routed_under_registry_only() -> None:
    pc = proxy(world((CH5 / "mesh-registry-only.yaml").read_text(), (CH5 / "forum-serviceentry.yaml").read_text()))
    d = route_to(pc, req("jsonplaceholder.typicode.com", "/posts"))
    assert (d.status, d.cluster) == (None, "outbound|80||jsonplaceholder.typicode.com")


@pytest.mark.parametrize(("docs", "cluster", "flags", "status"), [
    ((), "PassthroughCluster", "-", None),
    (((CH5 / "mesh-registry-only.yaml").read_text(),), "BlackHoleCluster", "UH", 0),
])
def test_port_without_http_route_config(docs: tuple[str, ...], cluster: str, flags: str, status: int | None) -> None:
    d = route_to(proxy(world(*docs)), req("db.example.com:5432"), 5432)
    assert (d.cluster, d.flags, d.status) == (cluster, flags, status)


FAULT_VS = """
- route:
  - destination: {host: catalog, subset: version-v1}
  fault:
    abort: {httpStatus: 500, percentage: {value: 100}}
"""


def test_fault_abort_is_a_local_reply_fi() -> None:
    d = route_to(proxy(world(catalog_vs(FAULT_VS))), req("catalog"), rng=FakeRandom())
    assert outcome(d) == (500, "FI", "fault_filter_abort", "fault filter abort")


@pytest.mark.parametrize(("value", "draw", "aborted"), [(50, 0.4999, True), (50, 0.5, False), (0.5, 0.004, True),
                                                        (0.5, 0.0051, False)])
def test_fault_abort_percentage_roll(value: float, draw: float, aborted: bool) -> None:
    pc = proxy(world(catalog_vs(FAULT_VS.replace("value: 100", f"value: {value}"))))
    d = route_to(pc, req("catalog"), rng=FakeRandom([draw]))
    assert (d.status == 500) is aborted


def test_fault_without_percentage_never_fires() -> None:
    pc = proxy(world(catalog_vs(FAULT_VS.replace(", percentage: {value: 100}", ""))))
    d = route_to(pc, req("catalog"), rng=FakeRandom())  # no draw needed for 0%
    assert (d.status, d.cluster, d.fault) == (None, V1, None)


def test_fault_delay_is_flagged_di() -> None:
    vs = FAULT_VS.replace("abort: {httpStatus: 500, percentage: {value: 100}}",
                          "delay: {fixedDelay: 2s, percentage: {value: 100}}")
    d = route_to(proxy(world(catalog_vs(vs))), req("catalog"), rng=FakeRandom())
    assert (d.status, d.flags, d.fault.delay_seconds, d.cluster) == (None, "DI", 2.0, V1)


def test_direct_response_and_redirect_are_local_replies() -> None:
    vs = catalog_vs("""
        - match: [{uri: {prefix: /old}}]
          redirect: {uri: /new, redirectCode: 302}
        - directResponse: {status: 418, body: {string: teapot}}
        """)
    pc = proxy(world(vs))
    assert outcome(route_to(pc, req("catalog", "/old"))) == (302, "-", "direct_response", "")
    assert outcome(route_to(pc, req("catalog", "/x"))) == (418, "-", "direct_response", "teapot")


def test_service_without_virtual_service_uses_the_default_route() -> None:
    d = route_to(proxy(world()), req("catalog.istioinaction.svc.cluster.local:80"))
    assert (d.status, d.cluster, d.route_name, d.virtual_service) == (None, CATALOG_DEFAULT, "default", None)


# --- weights --------------------------------------------------------------------------------------------------------
WEIGHTED_90_10 = (CH5 / "catalog-vs-v2-10-90-mesh.yaml").read_text()


def test_weighted_split_over_10000_seeded_picks_is_within_the_binomial_bound() -> None:
    """90/10 split: the number of v2 picks in n=10,000 is Binomial(n, 0.1); it must fall in the central 99.9%
    interval (scipy.stats.binom.interval(0.999, n, 0.1) = [903, 1100]). A fair implementation fails with
    probability 0.1%, and the seed fixes the outcome."""
    pc = proxy(world(WEIGHTED_90_10))
    rng = random.Random(20240501)
    n = 10_000
    counts = Counter(route_to(pc, req("catalog"), rng=rng).cluster for _ in range(n))
    low, high = binom.interval(0.999, n, 0.10)
    assert set(counts) == {V1, V2}
    assert low <= counts[V2] <= high, (counts, (low, high))
    assert counts[V1] + counts[V2] == n


@pytest.mark.parametrize(("weights", "draw", "expected"), [
    ((90, 10), 0.0, "c1"),
    ((90, 10), 0.8999999, "c1"),
    ((90, 10), 0.9, "c2"),  # [0, 0.9) → first, [0.9, 1) → second
    ((90, 10), 0.9999999, "c2"),
    ((9, 1), 0.8999999, "c1"),  # relative weights: the same split
    ((9, 1), 0.9, "c2"),
    ((50, 30, 20), 0.4999999, "c1"),
    ((50, 30, 20), 0.5, "c2"),
    ((50, 30, 20), 0.7999999, "c2"),
    ((50, 30, 20), 0.8, "c3"),
    ((100,), 0.9999999, "c1"),
])
def test_weighted_pick_boundaries(weights: tuple[int, ...], draw: float, expected: str) -> None:
    clusters = [{"name": f"c{i + 1}", "weight": w} for i, w in enumerate(weights)]
    rng = FakeRandom([draw])
    assert pick_weighted(clusters, rng) == expected
    assert rng.calls == 1
    route = {"match": {"prefix": "/"}, "route": {"weightedClusters": {"clusters": clusters}}}
    d = select_route(bare_proxy([route]), req(), 80, FakeRandom([draw]))
    assert d.cluster == expected and d.weighted == [(c["name"], c["weight"]) for c in clusters]


# --- mirroring ------------------------------------------------------------------------------------------------------
def mirror_vs(percentage: str) -> str:
    return catalog_vs(f"""
        - route:
          - destination: {{host: catalog, subset: version-v1}}
          mirror: {{host: catalog, subset: version-v2}}
          {percentage}
        """)


@pytest.mark.parametrize(("percentage", "draws", "percent", "fired"), [
    ("", [], 100.0, True),  # absent ⇒ 100%: no draw needed
    ("mirrorPercentage: {value: 100}", [], 100.0, True),
    ("mirrorPercentage: {value: 50}", [0.4999], 50.0, True),
    ("mirrorPercentage: {value: 50}", [0.5], 50.0, False),
    ("mirrorPercentage: {value: 0.1}", [0.000999], 0.1, True),
    ("mirrorPercentage: {value: 0.1}", [0.001], 0.1, False),
    ("mirrorPercent: 25", [0.2499], 25.0, True),
    ("mirrorPercent: 25", [0.25], 25.0, False),
])
def test_mirror_roll(percentage: str, draws: list[float], percent: float, fired: bool) -> None:
    rng = FakeRandom(draws)
    d = route_to(proxy(world(mirror_vs(percentage))), req("catalog"), rng=rng)
    assert d.cluster == V1 and d.status is None
    assert [(x.cluster, x.percent, x.fired) for x in d.mirrors] == [(V2, percent, fired)]
    assert rng.values == []


def test_mirror_zero_percent_means_no_mirror() -> None:
    d = route_to(proxy(world(mirror_vs("mirrorPercentage: {value: 0}"))), req("catalog"), rng=FakeRandom())
    assert d.mirrors == []


@pytest.mark.parametrize(("version", "suffix"), [("1.17", True), ("1.27", True), ("1.28", False)])
def test_mirror_shadow_suffix_by_version(version: str, suffix: bool) -> None:
    d = route_to(proxy(world(mirror_vs(""), version=version)), req("catalog"), rng=FakeRandom())
    assert d.mirrors[0].shadow_suffix is suffix


@pytest.mark.parametrize(("fraction", "percent"), [
    (None, 0.0), ({}, 0.0), ({"numerator": 100}, 100.0), ({"numerator": 25}, 25.0),
    ({"numerator": 500000, "denominator": "MILLION"}, 50.0), ({"numerator": 1, "denominator": "TEN_THOUSAND"}, 0.01)])
def test_fraction_percent(fraction: dict | None, percent: float) -> None:
    assert fraction_percent(fraction) == pytest.approx(percent)


def test_roll_does_not_draw_for_0_or_100_percent() -> None:
    rng = FakeRandom()
    assert roll(rng, 100) is True and roll(rng, 0) is False
    assert rng.calls == 0
