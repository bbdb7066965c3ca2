"""Real Envoy accepts what meshlib translates: `envoy --mode validate` on every config, as the mesh runs it.

Each proxy's config is bound to loopback addresses (`meshlib.xds.bind`) and put in one static bootstrap with
the others (`meshlib.xds.static`); Envoy parses and checks all of it: fields, enums, regexes, domains, references.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CH5, NS, SERVICES, TRANSLATED, ch6_sets, ch6_store

from meshlib.config.loader import load_documents
from meshlib.config.store import ConfigStore
from meshlib.local.envoy.binary import validate
from meshlib.profile import profile_for
from meshlib.xds import build_proxy_config, find_proxy
from meshlib.xds.bind import Placement, PodEndpoint, Resources, bind
from meshlib.xds.static import static_bootstrap

PROFILES = ("1.13", "1.17", "1.22", "1.24", "1.28")
BATCH = 60


def bound(store: ConfigStore, index: int) -> list[Resources]:
    """Every proxy of `store`, on addresses of their own (127.<a>.<b>.x for batch position `index`)."""
    base = f"127.{10 + index // 200}.{index % 200}"
    workloads = store.workloads()
    ip = {(w.namespace, w.name): f"{base}.{i + 2}" for i, w in enumerate(workloads)}
    pods = {key: [PodEndpoint(addr)] for key, addr in ip.items()}
    out = []
    for w in workloads:
        addr = ip[(w.namespace, w.name)]
        place = Placement(addr, "/dev/null", ("127.0.0.1", 9), {p: (addr, 40000 + p) for p in w.container_ports()},
                          {8080: (addr, 30000)})
        out.append(bind(build_proxy_config(store, w), place, pods))
    return out


def assert_valid(stores: list[ConfigStore], what: str) -> None:
    assert stores, f"no {what} to validate: a check over nothing proves nothing"
    for start in range(0, len(stores), BATCH):
        batch = stores[start:start + BATCH]
        resources = [r for i, s in enumerate(batch) for r in bound(s, i)]
        reason = validate(static_bootstrap(resources))
        if reason is None:
            continue
        for i, store in enumerate(batch):  # find the culprit, then say which input it came from
            single = validate(static_bootstrap(bound(store, 0)))
            assert single is None, f"Envoy rejects the translation of {what} #{start + i}: {single}\n" + \
                "\n".join(f"  {r.ref()}" for r in store)
        pytest.fail(f"Envoy rejects a batch of {what} but no single one of them: {reason}")


CH5_SETS = [[CH5 / name] for name in sorted(p.name for p in CH5.glob("*.yaml"))] + [
    [CH5 / "catalog-dest-rule.yaml", CH5 / vs] for vs in ("catalog-vs-v2-mirror.yaml", "catalog-vs-v2-10-90-mesh.yaml",
                                                          "catalog-vs-v2-request-mesh.yaml")]
CH6_SETS = ch6_sets()


def ch5_store(extra: list[Path], version: str) -> ConfigStore:
    store = ConfigStore(profile_for(version))
    store.apply_documents(load_documents([SERVICES, CH5 / "webapp-catalog-gw-vs.yaml", *extra]), NS)
    return store


@pytest.mark.parametrize("version", PROFILES)
def test_envoy_accepts_every_config_for_the_repo_manifests(version: str) -> None:
    """Chapter 5 over the walkthrough's services; chapter 6 over simple-web, simple-backend and their gateway, every
    file alone and the files that act together (an EnvoyFilter with the VirtualService it patches), applied like
    `kubectl apply`. Every EnvoyFilter patch must have been applied: one left out would leave Envoy nothing to check."""
    stores = [ch5_store(extra, version) for extra in CH5_SETS] + [ch6_store(*names, version=version)
                                                                  for names in CH6_SETS]
    assert len(stores) == len(CH5_SETS) + len(CH6_SETS)
    for store in stores:
        for workload in store.workloads():
            assert build_proxy_config(store, workload).not_applied == [], workload.name
    assert_valid(stores, f"the repo's manifests (Istio {version})")


def test_envoy_accepts_every_config_the_tables_translate() -> None:
    """Runs after the table tests (conftest orders it last) over every store they translated."""
    unique = list({id(store): store for store, _ in TRANSLATED}.values())
    if not unique:
        pytest.fail("no table test translated anything before this test: run it with tests/unit as a whole")
    assert_valid(unique, "the translation tables' inputs")


def test_a_bad_regex_is_rejected_by_envoy_with_its_reason() -> None:
    """The validation is not vacuous: an invalid RE2 regex that the loader lets through is caught by Envoy."""
    store = ConfigStore(profile_for("1.17"))
    store.apply_documents(load_documents([SERVICES, CH5 / "catalog-dest-rule.yaml"]), NS)
    resources = bound(store, 0)
    webapp = next(i for i, w in enumerate(store.workloads()) if w.name == "webapp")
    route = resources[webapp].routes[0]["virtualHosts"][0]["routes"][0]
    route["match"] = {"safeRegex": {"regex": "(unclosed"}}
    reason = validate(static_bootstrap(resources))
    assert reason is not None and "(unclosed" in reason, reason


def test_a_go_duration_reaching_envoy_is_rejected_with_its_reason() -> None:
    """Not vacuous for EnvoyFilter values either: Envoy reads a Duration only as proto3 JSON seconds, so the `50ms`
    istiod accepts in a patch value (and meshlib converts to `0.050s`) would be refused if it reached Envoy as is."""
    store = ch6_store("simple-backend-vs-retry-status.yaml", "simple-backend-envoyfilter-retry-status.yaml")
    resources = bound(store, 0)
    web = next(i for i, w in enumerate(store.workloads()) if w.name == "simple-web")
    policies = [route["route"]["retryPolicy"] for rc in resources[web].routes for vh in rc["virtualHosts"]
                for route in vh["routes"] if "retryBackOff" in route.get("route", {}).get("retryPolicy", {})]
    assert [p["retryBackOff"] for p in policies] == [{"baseInterval": "0.050s"}]
    assert validate(static_bootstrap(resources)) is None
    policies[0]["retryBackOff"]["baseInterval"] = "50ms"
    reason = validate(static_bootstrap(resources))
    assert reason is not None and "50ms" in reason, reason


def test_every_workload_of_the_repo_is_bound() -> None:
    store = ConfigStore(profile_for("1.17"))
    store.apply_documents(load_documents([SERVICES]), NS)
    proxies = {w.name for w in store.workloads()}
    assert {"webapp", "catalog", "istio-ingressgateway"} <= proxies
    assert find_proxy(store, "deploy/webapp.istioinaction") is not None
    assert len(bound(store, 0)) == len(proxies)


