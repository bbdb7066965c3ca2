"""Benchmark of the split checks on the embedded mesh: a sequential check against the fixed-size check of the same
claim, in requests and in seconds (issue 14).

Run: `make bench` or `.venv/bin/python tests/bench/split_bench.py [--runs 5]`.

For each claim of features/canary.feature, the walkthrough's canary is deployed with the claimed weights on real
Envoy (and, for the misroute rows, with ten points moved), and the same step functions the features use send
and decide: `N requests are sent` + the fixed-size exact check, against `requests are sent until it is decided
whether ...` (batches until the sequential test stops). Each row is the mean over --runs runs, with fresh routing
randomness per run, beside the exact expected requests of the sequential test (meshlib.stats.sequential_oc).
Prints each figure beside its target; asserts nothing. All traffic goes to loopback, bounded in count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshlib.backend import LocalBackend
from meshlib.dsl import deploy, distribution, sending
from meshlib.dsl.world import World
from meshlib.expect import ExpectationFailed
from meshlib.stats import DEFAULT_ALPHA, sequential_design, sequential_oc

ROOT = Path(__file__).resolve().parents[2]
NS = "istioinaction"
HOST, PATH = "webapp.istioinaction.io", "/api/catalog"
BACKGROUND = ["services/catalog/kubernetes/catalog.yaml", "services/catalog/kubernetes/catalog-deployment-v2.yaml",
              "services/webapp/kubernetes/webapp.yaml", "ch5/webapp-catalog-gw-vs.yaml", "ch5/catalog-dest-rule.yaml"]
CONCURRENCY = 16  # as canary.feature's Background
SAVING_TARGET = 0.70  # the sequential check should need at most 70% of the fixed-size check's requests on average
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


@dataclass(frozen=True)
class Claim:
    title: str
    v2_share: float  # claimed share of catalog v2
    fixed: int  # requests of the fixed-size scenario in features/canary.feature
    table: bool  # the feature states it as a split table (else "about N% of responses come from catalog v2")


CLAIMS = [Claim("10% to the canary", 0.10, 400, table=False), Claim("50/50", 0.50, 800, table=True)]


@dataclass
class Tally:
    requests: list[int]
    seconds: list[float]
    waiting: list[float]  # of those seconds, waiting for Envoy's records of each batch to settle
    batches: list[int]
    failed: int = 0

    def row(self) -> str:
        return (f"{statistics.mean(self.requests):5.0f} requests (min {min(self.requests)}, max {max(self.requests)}) "
                f"in {statistics.mean(self.batches):4.1f} batches, {statistics.mean(self.seconds):5.2f} s "
                f"({statistics.mean(self.waiting):4.2f} s of it waiting for records)   "
                f"failed {self.failed} of {len(self.requests)}")


class SettleClock:
    """Times the backend's settle() (the wait for Envoy's access-log records after each batch)."""

    def __init__(self, backend: LocalBackend) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._settle = backend.settle
        backend.settle = self  # type: ignore[method-assign]

    def __call__(self) -> list[str]:
        started = time.perf_counter()
        unsettled = self._settle()
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return unsettled


def _world(backend: LocalBackend) -> World:
    world = World(backend, NS, ROOT / "manifests", alpha=DEFAULT_ALPHA)
    world.concurrency = CONCURRENCY
    return world


def _check(world: World, claim: Claim) -> None:
    if claim.table:
        distribution.split(world, "catalog", {"v1": 1.0 - claim.v2_share, "v2": claim.v2_share})
    else:
        distribution.about_share(world, claim.v2_share, "catalog", "v2")


def _fixed(world: World, claim: Claim) -> tuple[int, bool, str]:
    sending.through_gateway(world, claim.fixed, PATH, HOST)
    return claim.fixed, *_outcome(lambda: _check(world, claim))


def _sequential(world: World, claim: Claim) -> tuple[int, bool, str]:
    if claim.table:
        verdict = distribution.decide_split(world, "catalog", {"v1": 1.0 - claim.v2_share, "v2": claim.v2_share},
                                            HOST, PATH)
    else:
        verdict = distribution.decide_share(world, claim.v2_share, "catalog", "v2", HOST, PATH)
    passed, message = _outcome(lambda: _check(world, claim))
    assert passed == verdict.passed  # the Then step reads the When step's decision
    return verdict.total, passed, message if not passed else verdict.stopped()


def _outcome(check: Callable[[], None]) -> tuple[bool, str]:
    """(passed, the failure's first lines, or the decision when it passed)."""
    try:
        check()
    except ExpectationFailed as failure:
        return False, " ".join(str(failure).split())[:300]
    return True, "passed"


def measure(world: World, clock: SettleClock, claim: Claim, how: Callable[[World, Claim], tuple[int, bool, str]],
            runs: int, should_pass: bool) -> Tally:
    """`runs` checks of `claim`; a run that ends otherwise than it should is printed with what it said."""
    tally = Tally([], [], [], [])
    for _ in range(runs):
        waited, calls = clock.seconds, clock.calls
        started = time.perf_counter()
        requests, passed, message = how(world, claim)
        if passed != should_pass:
            print(f"    unexpected {'pass' if passed else 'failure'} after {requests} requests: {message}")
        tally.seconds.append(time.perf_counter() - started)
        tally.waiting.append(clock.seconds - waited)
        tally.batches.append(clock.calls - calls)
        tally.requests.append(requests)
        tally.failed += not passed
    return tally


def expected(claim: Claim, truth: float) -> float:
    names = {"v1": 1.0 - claim.v2_share, "v2": claim.v2_share} if claim.table else \
        {"v2": claim.v2_share, "not v2": 1.0 - claim.v2_share}
    design = sequential_design(names, DEFAULT_ALPHA, batch_multiple=CONCURRENCY)
    first = 1.0 - truth if claim.table else truth
    return sequential_oc(design, first).mean_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=8, help="runs per row (default 8)")
    args = parser.parse_args()
    print(f"split checks on the embedded mesh: {os.cpu_count()} CPUs, {CONCURRENCY} requests in flight, "
          f"alpha {DEFAULT_ALPHA}, power 0.99 against a 10-point misroute, mean of {args.runs} runs per row")
    backend = LocalBackend(NS, seed=None)
    clock = SettleClock(backend)
    try:
        world = _world(backend)
        deploy.apply_manifests(world, BACKGROUND)
        for claim in CLAIMS:
            truths = [("claim holds, both should pass", claim.v2_share, True),
                      ("10-point misroute, both should fail", claim.v2_share + 0.10, False)]
            for case, truth, should_pass in truths:
                v2 = round(100 * truth)
                deploy.apply_yaml(world, VS.format(v1=100 - v2, v2=v2))
                sending.through_gateway(world, 64, PATH, HOST)  # warm connections and routes before timing
                print(f"{claim.title}, {case} (v2 gets {v2}%):")
                fixed = measure(world, clock, claim, _fixed, args.runs, should_pass)
                seq = measure(world, clock, claim, _sequential, args.runs, should_pass)
                share = statistics.mean(seq.requests) / claim.fixed
                print(f"  fixed-size check   {fixed.row()}")
                print(f"  sequential check   {seq.row()}   exact expectation {expected(claim, truth):.0f} requests")
                verdict = "meets" if share <= SAVING_TARGET else "MISSES"
                print(f"  sequential/fixed: {share:.0%} of the requests, "
                      f"{statistics.mean(seq.seconds) / statistics.mean(fixed.seconds):.0%} of the time "
                      f"— target ≤ {SAVING_TARGET:.0%} of the requests: {verdict}; time, no target: each batch "
                      f"waits ~{statistics.mean(seq.waiting) / statistics.mean(seq.batches):.2f} s for its records")
    finally:
        backend.close()


if __name__ == "__main__":
    main()
