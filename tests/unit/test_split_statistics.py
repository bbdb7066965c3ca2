"""The split check's error rates, measured by simulation on the pure router (the code the sidecars run).

A correct 90/10 VirtualService must fail the "about 10% come from v2" check no more often than alpha
allows; a 10-point misroute (80/20 deployed, 10% claimed) must be caught with the power the check reports.
"""

from __future__ import annotations

import math
import random

from meshlib.config.store import ConfigStore
from meshlib.router import Request, select_route
from meshlib.stats import DEFAULT_ALPHA, binomial_check, misroute_power
from meshlib.xds import build_proxy_config, find_proxy

MANIFESTS = ["manifests/services", "manifests/ch5/catalog-dest-rule.yaml"]
VS = """apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: catalog}}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {{host: catalog, subset: version-v1}}
      weight: {v1}
    - destination: {{host: catalog, subset: version-v2}}
      weight: {v2}
"""
RUNS, N = 400, 300


def webapp_config(v1: int, v2: int):
    store = ConfigStore.from_paths(MANIFESTS, "istioinaction")
    store.apply_text(VS.format(v1=v1, v2=v2), "istioinaction")
    return build_proxy_config(store, find_proxy(store, "deploy/webapp.istioinaction"))


def failure_rate(v1: int, v2: int, claimed: float, seed: int) -> float:
    pc = webapp_config(v1, v2)
    rng = random.Random(seed)
    request = Request.of("catalog.istioinaction:80", "/items")
    failures = 0
    for _ in range(RUNS):
        hits = sum("version-v2" in (select_route(pc, request, 80, rng).cluster or "") for _ in range(N))
        failures += not binomial_check(hits, N, claimed).passed
    return failures / RUNS


def test_false_failure_rate_of_a_correct_split_is_within_alpha() -> None:
    rate = failure_rate(90, 10, 0.10, seed=11)
    bound = DEFAULT_ALPHA + 3 * math.sqrt(DEFAULT_ALPHA * (1 - DEFAULT_ALPHA) / RUNS)  # alpha + 3 sigma
    print(f"false-failure rate {rate:.4f} over {RUNS} runs of {N} requests (alpha {DEFAULT_ALPHA}, bound {bound:.4f})")
    assert rate <= bound


def test_a_ten_point_misroute_is_caught_with_the_reported_power() -> None:
    power = misroute_power(N, 0.10, 0.10)
    rate = failure_rate(80, 20, 0.10, seed=12)
    sigma = math.sqrt(power * (1 - power) / RUNS) or 1 / RUNS
    print(f"misroute 20% vs claimed 10%: caught {rate:.3f}, reported power {power:.3f}")
    assert rate >= power - 3 * sigma - 1 / RUNS
