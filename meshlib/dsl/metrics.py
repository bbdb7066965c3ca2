"""Metric checks: PromQL on the mesh's Prometheus, and builtin checks on the proxies' own counters.

Every sidecar counts the requests it handles as Istio does (`istio_requests_total`,
`istio_request_duration_milliseconds`, with Istio's labels). Two kinds of check read them:

- PromQL checks run a query on the mesh's real Prometheus (which scrapes every proxy) after one fresh scrape,
  so the answer includes everything counted before the step. Without Prometheus they FAIL and say what to
  install; a scenario tagged `@needs.prometheus` is skipped instead (see `meshlib.steps.environment`).
- Builtin checks (success rate, latency quantile, requests received) need no Prometheus: they read the
  counters' growth since the last batch of traffic started, which `meshlib.dsl.sending` marks
  (`traffic_starts`). Their semantics are Flagger's builtin Istio checks: destination-reporter series,
  `destination_workload` matched as an anchored regex, success = not 5xx, and no requests = "no values found",
  a failed check.

`istio_requests_total … grew by at least N` compares the counters now — through PromQL when the mesh runs
Prometheus, else the proxies' own — with their values when the last batch started, counted where the requests
were served (`reporter="destination"`, so a request is not counted twice by both of its proxies).

On the kubernetes backend the same checks read the cluster: PromQL on its Prometheus, the builtin checks on each
sidecar's merged metrics over port-forward (`meshlib.kube.prometheus`, `meshlib.kube.counters`).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from meshlib.dsl.world import World
from meshlib.expect import ExpectationFailed, fail, table
from meshlib.local.metricsquery import (
    REQUESTS,
    BuiltinMetrics,
    Snapshot,
    count_query,
    flagger_target,
    labels_match,
)
from meshlib.local.prometheus import PrometheusUnavailable, PromQLError, Sample
from meshlib.report.tables import escape, html_document, html_table, table_fragment, tidy

if TYPE_CHECKING:
    from meshlib.local.mesh import LocalMesh

TAG = "needs.prometheus"
NEEDS = "needs Prometheus (apt-get install prometheus)"
SKIP_REASON = "needs Prometheus: install Debian's prometheus package"  # the embedded mesh starts it when installed
CLUSTER_SKIP_REASON = ("needs Prometheus: none answers at -D prometheus_url, nor behind Service prometheus in "
                       "istio-system (Istio's samples/addons/prometheus.yaml)")


def skip_reason(world: World) -> str:
    """Why a @needs.prometheus scenario is skipped in this world: what to install, or where none was found."""
    return SKIP_REASON if getattr(world.backend, "mesh", None) is not None else CLUSTER_SKIP_REASON
SETTLE_SECONDS = 5.0  # mirrored copies are fire-and-forget: give them a bounded time to be counted
SCRAPE_TIMEOUT = 20.0
LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- where the numbers come from ------------------------------------------------------------------
def _mesh(world: World) -> LocalMesh:
    mesh = getattr(world.backend, "mesh", None)
    if mesh is None:
        raise ExpectationFailed(f"metric checks are not available on the {world.backend.name} backend yet")
    return mesh


def has_prometheus(world: World) -> bool:
    """Whether PromQL steps can run in this world (the mesh runs a real Prometheus; a cluster's is reachable)."""
    mesh = getattr(world.backend, "mesh", None)
    if mesh is not None:
        return mesh.prometheus is not None
    available = getattr(world.backend, "has_prometheus", None)  # the kubernetes backend
    return bool(available is not None and available())


def _proxy_counters(world: World) -> BuiltinMetrics | None:
    """The proxies' own counters: the embedded mesh's, or those a backend reads from its sidecars."""
    mesh = getattr(world.backend, "mesh", None)
    if mesh is not None:
        return BuiltinMetrics(mesh)
    counters = getattr(world.backend, "proxy_counters", None)  # the kubernetes backend
    return counters() if counters is not None else None


def traffic_starts(world: World) -> None:
    """Mark the proxies' counters: builtin checks count from the latest mark (sending calls this per batch)."""
    if world.metrics is None:
        world.metrics = _proxy_counters(world)
        if world.metrics is None:
            return
    world.metrics.mark()


def _builtin(world: World) -> BuiltinMetrics:
    metrics = world.metrics
    if metrics is None or not metrics.marks:
        raise fail("traffic in this scenario before a metric check",
                   "none was sent yet (add e.g.: When 100 requests are sent)")
    return metrics


def _since_mark(world: World) -> Snapshot:
    return _builtin(world).delta(None)


def _requests(delta: Snapshot, filters: Mapping[str, str]) -> int:
    return int(round(sum(v for (_, name, labels), v in delta.items()
                         if name == REQUESTS and labels_match(dict(labels), filters))))


def _baseline(world: World, filters: Mapping[str, str]) -> int:
    mark = _builtin(world).marks[-1]
    return int(round(sum(v for (_, name, labels), v in mark.values.items()
                         if name == REQUESTS and labels_match(dict(labels), filters))))


def _settle(world: World, filters: Mapping[str, str], at_least: int) -> int:
    """Requests matching `filters` since the mark, waiting (bounded) while fewer than `at_least` are counted."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        n = _requests(_since_mark(world), filters)
        if n >= at_least or time.monotonic() >= deadline:
            return n
        time.sleep(0.05)


# --- PromQL ---------------------------------------------------------------------------------------
def needs_prometheus(reason: object, local: bool = True) -> ExpectationFailed:
    return ExpectationFailed(f"this step {NEEDS if local else 'needs Prometheus'}\n  {reason}\n"
                             f"  (tag the scenario @{TAG} to report it as skipped where Prometheus is missing)")


def _promql(world: World, query: str) -> list[Sample]:
    mesh = getattr(world.backend, "mesh", None)
    if mesh is not None:
        return mesh.promql(query)
    promql = getattr(world.backend, "promql", None)  # the kubernetes backend: the cluster's Prometheus
    if promql is None:
        raise ExpectationFailed(f"metric checks are not available on the {world.backend.name} backend yet")
    return promql(query)


def run_promql(world: World, query: str) -> list[Sample]:
    """The query's series on the mesh's Prometheus after a fresh scrape; attaches the query and its result."""
    query = " ".join(query.split())
    if not query:
        raise ValueError("the PromQL query is empty: write it in backticks or in the step's doc string")
    try:
        samples = _promql(world, query)
    except PrometheusUnavailable as exc:
        raise needs_prometheus(exc, local=getattr(world.backend, "mesh", None) is not None) from None
    except PromQLError as exc:
        world.attach("PromQL (rejected)", html_document(
            f"<pre>{escape(query)}</pre><p class='note'>Prometheus said: {escape(exc.message)}</p>"), "html")
        raise ExpectationFailed(f"Prometheus could not run the PromQL\n  {query}\n  {exc.message}") from None
    world.attach(f"PromQL {query}", _promql_document(query, samples), "html")
    return samples


def promql_value(world: World, query: str) -> float | None:
    """The one value of a PromQL query; None when it has no series or is NaN (Flagger's "no values found")."""
    samples = run_promql(world, query)
    if not samples:
        return None
    if len(samples) > 1:
        shown = "\n".join(f"    {_series(labels)} {value:g}" for labels, value in samples[:5])
        raise fail("the PromQL to give one value", f"it gives {len(samples)} series",
                   f"{shown}\n  aggregate them, e.g. sum(...)\n  query: {' '.join(query.split())}")
    value = samples[0][1]
    return None if math.isnan(value) else value


def promql_at_least(world: World, query: str, bound: float) -> float:
    return _promql_compare(world, query, bound, "at least", lambda v: v >= bound)


def promql_at_most(world: World, query: str, bound: float) -> float:
    return _promql_compare(world, query, bound, "at most", lambda v: v <= bound)


def _promql_compare(world: World, query: str, bound: float, relation: str, holds) -> float:
    value = promql_value(world, query)
    shown = " ".join(query.split())
    if value is None:
        raise fail(f"the PromQL to be {relation} {bound:g}",
                   "it has no value (no series, or NaN: Flagger's \"no values found\", a failed check)",
                   f"  query: {shown}")
    if not holds(value):
        raise fail(f"the PromQL to be {relation} {bound:g}", f"it is {value:g}", f"  query: {shown}")
    return value


def prometheus_scrapes_every_proxy(world: World, timeout: float = SCRAPE_TIMEOUT) -> None:
    """Wait (bounded) until Prometheus scrapes every current proxy, so rate() sees the traffic that follows."""
    wait = getattr(world.backend, "wait_for_scrapes", None)  # the kubernetes backend: the cluster's Prometheus
    if getattr(world.backend, "mesh", None) is None and wait is not None:
        try:
            world.attach("Prometheus targets", wait(timeout))
        except PrometheusUnavailable as exc:
            raise needs_prometheus(exc, local=False) from None
        return
    mesh = _mesh(world)
    server = mesh.prometheus
    if server is None:
        try:
            mesh.promql("up")  # raises with the reason: no binary, or prometheus=False
        except PrometheusUnavailable as exc:
            raise needs_prometheus(exc) from None
        return
    started = time.monotonic()
    server.wait_for_targets(timeout)
    world.attach("Prometheus targets", f"{len(server.targets)} proxies scraped, up after "
                                       f"{time.monotonic() - started:.1f}s")


# --- counters -------------------------------------------------------------------------------------
def requests_grew(world: World, label: str, value: str, at_least: int) -> int:
    """`istio_requests_total{reporter="destination", LABEL="VALUE"}` grew by at least N since the batch started."""
    if not LABEL.fullmatch(label):
        raise ValueError(f"{label!r} is not a metric label name (e.g. destination_version, destination_workload)")
    filters = {"reporter": "destination", label: value}
    counted = _settle(world, filters, at_least)  # the proxies' own view first: waits for in-flight copies
    before = _baseline(world, filters)
    if has_prometheus(world):
        query = count_query({label: value})
        now = promql_value(world, query)
        grew, source = int(round(now or 0)) - before, f"Prometheus: {query}"
    else:
        grew, source = counted, "the proxies' own counters (no Prometheus)"
    world.attach(f"istio_requests_total {label}={value}",
                 html_table(("when", "requests"), [("when the traffic started", before), ("now", before + grew),
                                                   ("grew by", grew)], notes=[f"source: {source}"],
                            bad=[2] if grew < at_least else []), "html")
    if grew < at_least:
        raise fail(f"istio_requests_total for {label} {value} to grow by at least {at_least}",
                   f"it grew by {grew} since the traffic started ({before} → {before + grew})",
                   f"  source: {source}")
    return grew


def received(world: World, workload: str, count: int) -> int:
    """The workload's sidecars counted exactly N inbound requests since the last batch started."""
    filters = {"reporter": "destination", "destination_workload": workload,
               "destination_workload_namespace": world.namespace}
    n = _settle(world, filters, count)
    world.attach(f"{workload}: requests received", _codes_document(world, workload, f"{n} requests received"),
                 "html")
    if n != count:
        raise fail(f"{workload} to receive {count} requests since the traffic started",
                   f"its sidecars counted {n}", _codes_table(world, workload))
    return n


def success_rate_at_least(world: World, workload: str, share: float) -> float:
    """Flagger's request-success-rate (non-5xx / all, destination side) since the last batch, at least `share`."""
    rate = _success_rate(world, workload)
    if rate < share * 100:
        raise fail(f"the success rate of {workload} to be at least {share * 100:g}%", f"it is {rate:.2f}%",
                   _codes_table(world, workload))
    return rate


def success_rate_below(world: World, workload: str, share: float) -> float:
    rate = _success_rate(world, workload)
    if rate >= share * 100:
        raise fail(f"the success rate of {workload} to be below {share * 100:g}%", f"it is {rate:.2f}%",
                   _codes_table(world, workload))
    return rate


def _success_rate(world: World, workload: str) -> float:
    rate = _builtin(world).success_rate(workload, world.namespace, window_seconds=None)
    world.attach(f"success rate of {workload}",
                 _codes_document(world, workload, f"success rate {'-' if rate is None else f'{rate:.2f}%'}"),
                 "html")
    if rate is None:
        raise fail(f"requests to {workload} since the traffic started, to compute its success rate",
                   "its sidecars counted none (Flagger: \"no values found\", a failed check)",
                   f"  is {workload} the Deployment's name, in namespace {world.namespace}?")
    return rate


def latency_at_most(world: World, workload: str, quantile: float, limit_ms: float) -> float:
    """The quantile of the workload's request durations (ms, destination side) since the last batch."""
    if not 0 < quantile <= 1:
        raise ValueError(f"a latency quantile is between p1 and p100, not p{quantile * 100:g}")
    value = _builtin(world).latency_quantile(workload, world.namespace, quantile, window_seconds=None)
    name = f"p{quantile * 100:g} latency of {workload}"
    world.attach(name,
                 "no requests" if value is None else f"{value:.1f} ms (from the duration histogram)")
    if value is None:
        raise fail(f"requests to {workload} since the traffic started, to compute its {name.split()[0]} latency",
                   "its sidecars counted none (Flagger: \"no values found\", a failed check)")
    if value > limit_ms:
        raise fail(f"the {name} to be at most {limit_ms:g} ms", f"it is {value:.1f} ms")
    return value


def _codes(world: World, workload: str) -> Counter[str]:
    """Requests to the workload since the mark, by response code (destination side, Flagger's target match)."""
    codes: Counter[str] = Counter()
    for (_, name, labels), v in _since_mark(world).items():
        lab = dict(labels)
        if name == REQUESTS and flagger_target(lab, workload, world.namespace) and v:
            codes[lab.get("response_code", "-")] += int(round(v))
    return codes


def _codes_table(world: World, workload: str) -> str:
    codes = _codes(world, workload)
    if not codes:
        return "  (no requests counted)"
    return table(("response code", "requests"), sorted(codes.items())) + f"\n  total: {sum(codes.values())}"


def _codes_document(world: World, workload: str, title: str) -> str:
    codes = _codes(world, workload)
    rows = sorted(codes.items())
    return html_table(("response code", "requests"), rows, title=f"{workload}: {title} since the traffic started",
                      notes=[f"total: {sum(codes.values())}" if codes else "no requests counted"],
                      bad=[i for i, (code, _) in enumerate(rows) if code.startswith("5") or code == "0"])


def _promql_document(query: str, samples: list[Sample]) -> str:
    """The query, then its series as a table: one column per label that differs between them, values rounded."""
    labels = [dict(lab) for lab, _ in samples]
    keys = sorted({k for lab in labels for k in lab})
    varying = [k for k in keys if len({lab.get(k) for lab in labels}) > 1] or keys[:4]
    rows = [(*(lab.get(k, "") for k in varying), _json_number(tidy(value)))
            for lab, (_, value) in zip(labels, samples, strict=True)]
    common = ", ".join(f'{k}="{labels[0][k]}"' for k in keys if k not in varying and labels) if len(labels) > 1 \
        else ""
    body = f"<pre>{escape(query)}</pre>" + (table_fragment((*varying, "value"), rows) if samples
                                            else "<p class='note'>no series (empty result)</p>")
    if common:
        body += f"<p class='note'>every series has {escape(common)}</p>"
    return html_document(body, query)


def _series(labels: Mapping[str, str]) -> str:
    name = labels.get("__name__", "")
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__") + "}"


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
