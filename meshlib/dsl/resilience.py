"""Resilience checks: how load balancing spread requests over pods, and what the caller's Envoy counted
(retries, circuit-breaker overflows, outlier ejections) for the clusters of a service.

Envoy's counters are read from the caller's merged metrics endpoint (its own stats after Istio's); a check
names the clusters it read and fails when there are none, so it cannot pass by looking at nothing.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from meshlib.dsl.responses import traced
from meshlib.dsl.world import World
from meshlib.expect import fail, table
from meshlib.report.tables import html_table
from meshlib.traffic import Response
from meshlib.xds.naming import parse_cluster

RETRIES = ("envoy_cluster_upstream_rq_retry",)
OVERFLOWS = ("envoy_cluster_upstream_rq_pending_overflow", "envoy_cluster_upstream_cx_overflow",
             "envoy_cluster_upstream_rq_retry_overflow")
EJECTIONS = ("envoy_cluster_outlier_detection_ejections_enforced",)  # counters are compared without `_total`
HEALTHY, MEMBERS = "envoy_cluster_membership_healthy", "envoy_cluster_membership"  # the gauge membership_total
# Envoy applies a host health change (an ejection) at once unless another came within its update merge window
# (`commonLbConfig.updateMergeWindow`, 1 s by default, which istiod leaves unset): then the workers' load
# balancers get it when the window ends. The counters and gauges read here change at once.
MERGE_WINDOW = 1.0


@dataclass(frozen=True)
class ClusterCounts:
    """Envoy counters of the caller's clusters for one service: {cluster: {counter: value}}."""

    caller: str
    service: str
    clusters: dict[str, dict[str, float]]

    def total(self, names: tuple[str, ...]) -> float:
        return sum(v for counters in self.clusters.values() for n, v in counters.items() if n in names)

    def rows(self, names: tuple[str, ...]) -> list[tuple[str, str, float]]:
        return [(cluster, name.removeprefix("envoy_cluster_"), counters.get(name, 0))
                for cluster, counters in sorted(self.clusters.items()) for name in names]

    def evidence(self, names: tuple[str, ...]) -> str:
        rows = [(c, n, f"{v:g}") for c, n, v in self.rows(names)]
        return f"Envoy counters at the {self.caller} sidecar for {self.service}:\n" + table(
            ("cluster", "counter", "value"), rows)

    def document(self, names: tuple[str, ...]) -> str:
        return html_table(("cluster", "counter", "value"), self.rows(names),
                          title=f"Envoy counters at the {self.caller} sidecar for {self.service}")


def cluster_counts(world: World, caller: str, service: str) -> ClusterCounts:
    """The caller's Envoy counters for every outbound cluster of `service` (by the host's short name)."""
    text = world.backend.metrics_text(caller, world.namespace)
    clusters: dict[str, dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            cluster = sample.labels.get("cluster_name", "")
            parsed = parse_cluster(cluster)
            if parsed and parsed[0] == "outbound" and parsed[3].split(".")[0] == service:
                clusters[cluster][sample.name.removesuffix("_total")] = sample.value
    if not clusters:
        raise fail(f"the {caller} sidecar to have clusters for {service}",
                   "its Envoy has none (is the service name right, and does the caller see it?)")
    return ClusterCounts(caller, service, dict(clusters))


def _counter_check(world: World, caller: str, service: str, names: tuple[str, ...], what: str,
                   expect_some: bool) -> float:
    counts = cluster_counts(world, caller, service)
    world.attach(f"{what} at {caller} → {service}", counts.document(names), "html")
    total = counts.total(names)
    if expect_some and total == 0:
        raise fail(f"the {caller} sidecar to have {what} for {service}",
                   f"its {len(counts.clusters)} clusters for {service} count none", counts.evidence(names))
    if not expect_some and total > 0:
        raise fail(f"no {what} at the {caller} sidecar for {service}", f"it counts {total:g}",
                   counts.evidence(names))
    return total


def retried(world: World, caller: str, service: str, some: bool = True) -> float:
    """The caller's Envoy retried requests to `service` (or, with some=False, retried none)."""
    return _counter_check(world, caller, service, RETRIES, "retries", some)


def overflowed(world: World, caller: str, service: str) -> float:
    """The caller's circuit breaker for `service` refused requests or connections (Envoy answers 503 UO)."""
    return _counter_check(world, caller, service, OVERFLOWS, "circuit-breaker overflows", True)


def ejected(world: World, caller: str, service: str) -> float:
    """The caller's outlier detection ejected at least one endpoint of `service`; returns once the ejections are
    in the caller's load balancing (one update merge window later), so the next requests see them."""
    total = _counter_check(world, caller, service, EJECTIONS, "outlier ejections", True)
    _merged(world, caller)
    return total


def _merged(world: World, caller: str) -> None:
    time.sleep(MERGE_WINDOW)
    world.attach("ejections in effect", f"waited {MERGE_WINDOW:g} s, Envoy's host update merge window, so the "
                 f"{caller} sidecar's load balancer has the ejections before the next requests")


def none_healthy(world: World, caller: str, service: str) -> None:
    """Every endpoint of `service` is out of the caller's load balancing (all ejected): with istiod's panic
    threshold of 0, Envoy then answers 503 with UH (no healthy upstream) instead of sending to them."""
    counts = cluster_counts(world, caller, service)
    names = (HEALTHY, MEMBERS)
    world.attach(f"endpoint health at {caller} → {service}", counts.document(names), "html")
    populated = {c: v for c, v in counts.clusters.items() if v.get(MEMBERS, 0) > 0}
    if not populated:
        raise fail(f"the {caller} sidecar to know endpoints of {service}",
                   f"its {len(counts.clusters)} clusters for {service} have none", counts.evidence(names))
    healthy = sum(v.get(HEALTHY, 0) for v in populated.values())
    if healthy:
        total = sum(v[MEMBERS] for v in populated.values())
        raise fail(f"no healthy {service} endpoint at the {caller} sidecar",
                   f"{healthy:g} of {total:g} are healthy", counts.evidence(names))
    _merged(world, caller)


def _pods_of(response: Response, app: str) -> list[str]:
    return [s.pod for s in response.served_by if s.peer.is_app(app)]


def _served(world: World, app: str) -> list[tuple[Response, str]]:
    responses = traced(world)
    out = [(r, pods[0]) for r in responses if (pods := _pods_of(r, app))]
    if not out:
        raise fail(f"requests that reached {app}", f"none of the {len(responses)} requests did")
    return out


def spread_evenly(world: World, app: str, pods: int) -> Counter[str]:
    """Every pod of `app` served ⌊n/k⌋ or ⌈n/k⌉ of the n requests that reached it: what round robin from one
    caller gives, and what least-request or random choice almost never does."""
    served = _served(world, app)
    counts = Counter(pod for _, pod in served)
    n = len(served)
    low, high = n // pods, -(-n // pods)
    rows = sorted(counts.items())
    world.attach(f"requests per {app} pod", html_table(
        ("pod", "requests"), rows, notes=[f"{n} requests, {pods} pods: each must serve {low}"
                                          + (f"–{high}" if high != low else "")],
        bad=[i for i, (_, c) in enumerate(rows) if not low <= c <= high]), "html")
    if len(counts) != pods or any(not low <= c <= high for c in counts.values()):
        raise fail(f"{n} requests to {app} spread evenly over {pods} pods ({low}" +
                   (f"–{high}" if high != low else "") + " each)",
                   f"{len(counts)} pods served " + ", ".join(f"{c}" for _, c in rows), table(("pod", "requests"), rows))
    return counts


def sticky(world: World, header: str, app: str) -> dict[str, set[str]]:
    """For each value of `header` the requests carried, every request that reached `app` went to one pod."""
    by_value: dict[str, Counter[str]] = defaultdict(Counter)
    for response, pod in _served(world, app):
        value = response.sent_headers.get(header)
        if value is None:
            raise fail(f"every request to carry the {header} header", f"request {response.request_id[:8]} did not")
        by_value[value][pod] += 1
    rows = [(value, ", ".join(f"{p} ×{c}" for p, c in counts.items())) for value, counts in sorted(by_value.items())]
    world.attach(f"{app} pods by {header}", html_table((header, "served by"), rows), "html")
    split = {v: set(c) for v, c in by_value.items() if len(c) > 1}
    if split:
        raise fail(f"each {header} to stay on one {app} pod", f"{len(split)} of {len(by_value)} moved",
                   table((header, "served by"), rows))
    if min(sum(c.values()) for c in by_value.values()) < 2:
        raise fail(f"several requests per {header} value, to tell sticky from lucky",
                   "a value had a single request", table((header, "served by"), rows))
    return {v: set(c) for v, c in by_value.items()}


def at_least_status(world: World, count: int, status: int) -> int:
    if count < 1:
        raise fail("a count of at least 1 (\"at least 0 responses\" holds for any batch)", f"the step says {count}")
    if not world.responses:
        raise fail(f"at least {count} responses with status {status}", "no requests have been sent yet")
    seen = Counter(r.status for r in world.responses)
    world.attach("statuses", html_table(("status", "responses"), sorted(seen.items())), "html")
    if seen[status] < count:
        raise fail(f"at least {count} of {len(world.responses)} responses to have status {status}",
                   f"{seen[status]} did; statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(seen.items())))
    return seen[status]
