"""Builtin metric checks on the embedded mesh, with or without Prometheus, behind one small interface.

    metrics = mesh_metrics(mesh)          # PromQL when the mesh runs Prometheus, else the proxies' counters
    metrics.mark()                        # optional: a window start (see below)
    metrics.request_count({"destination_workload": "catalog"})          # -> int
    metrics.success_rate("catalog", "istioinaction", window_seconds=60)  # -> 100.0, or None: no requests
    metrics.latency_quantile("catalog", "istioinaction", 0.99, 60)      # -> ms, or None: no requests

Semantics are Flagger's builtin Istio checks (istio-semantics.md §7.4): destination-reporter series only,
`destination_workload` matched as an anchored regex (so `catalog` never matches `catalog-primary`),
success rate = non-5xx / all × 100, latency = histogram_quantile over the duration buckets summed by `le`,
and no requests ⇒ None ("no values found", a failed check).

`PromQLMetrics` runs Flagger's exact queries with `[Ns]` windows on the mesh's Prometheus, after waiting for a
scrape newer than the call (so the answer includes everything the proxies counted before it). As with a real
Envoy, a series appears at its first request, so `rate()` sees only what was counted after Prometheus first
scraped it: a burst sent before that scrape gives "no values found" (Flagger expects steady load).

`BuiltinMetrics` reads the proxies' own cumulative counters. Windows come from snapshots: `mark()` records
every proxy's counters with the time; a query over `window_seconds=W` subtracts the newest mark at least W
seconds old, or — when no mark is that old — nothing, i.e. it counts since each pod started (exact when the
pods started less than W seconds ago, as in a test or a fresh canary). `window_seconds=None` means "since the
latest mark" (since the pods started without one). Pods are keyed by name, so a new pod starts from zero and a
pod gone since the mark no longer counts (Prometheus would still see its samples inside the window).
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshlib.errors import MeshlibError
from meshlib.local.prometheus import duration

if TYPE_CHECKING:
    from meshlib.local.mesh import LocalMesh

REQUESTS = "istio_requests_total"
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
MAX_MARKS = 256

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # pod, sample name, sorted labels
Snapshot = dict[SeriesKey, float]


# --- Flagger's queries (pure) ---------------------------------------------------------------------
def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def success_rate_query(workload: str, namespace: str, window: str) -> str:
    """Flagger's `request-success-rate` (istio-semantics.md §7.4) with `{{ interval }}` = `window`, e.g. `60s`."""
    sel = (f'reporter="destination",destination_workload_namespace={_quote(namespace)},'
           f'destination_workload=~{_quote(workload)}')
    return (f'sum(rate(istio_requests_total{{{sel},response_code!~"5.*"}}[{window}])) '
            f'/ sum(rate(istio_requests_total{{{sel}}}[{window}])) * 100')


def latency_query(workload: str, namespace: str, window: str, q: float = 0.99) -> str:
    """Flagger's `request-duration` (istio-semantics.md §7.4), the quantile `q` in place of its 0.99."""
    sel = (f'reporter="destination",destination_workload_namespace={_quote(namespace)},'
           f'destination_workload=~{_quote(workload)}')
    return f"histogram_quantile({q:g}, sum(rate({DURATION_BUCKET}{{{sel}}}[{window}])) by (le))"


def count_query(filters: Mapping[str, str], reporter: str | None = "destination") -> str:
    labels = ({"reporter": reporter} if reporter else {}) | dict(filters)
    matchers = ",".join(f"{k}={_quote(v)}" for k, v in labels.items())
    return f"sum({REQUESTS}{{{matchers}}})" if matchers else f"sum({REQUESTS})"


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """Prometheus's `histogram_quantile` over cumulative `(le, count)` buckets (NaN without observations)."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    counts = [c for _, c in ordered]
    for i in range(1, len(counts)):  # Prometheus's ensureMonotonic
        counts[i] = max(counts[i], counts[i - 1])
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(counts) - 1) if counts[i] >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return ordered[-2][0]
    if b == 0 and ordered[0][0] <= 0:
        return ordered[0][0]
    start, end, count = 0.0, ordered[b][0], counts[b]
    if b > 0:
        start = ordered[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


# --- the interface --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    at: float  # time.time()
    values: Snapshot


class MeshMetrics:
    """What steps ask of the mesh's metrics; `kind` says which way the answers were computed."""

    kind = "abstract"

    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh
        self.marks: deque[Mark] = deque(maxlen=MAX_MARKS)

    def mark(self) -> None:
        """Start a window here (see the module doc)."""
        self.marks.append(Mark(time.time(), self._snapshot()))

    def _snapshot(self) -> Snapshot:
        return {}

    def request_count(self, filters: Mapping[str, str] | None = None, reporter: str | None = "destination") -> int:
        """All `istio_requests_total` so far with these exact label values (and `reporter`, unless None)."""
        raise NotImplementedError

    def success_rate(self, workload: str, namespace: str, window_seconds: float | None = 60) -> float | None:
        """Percent of non-5xx destination-side requests to `workload` over the window; None without requests."""
        raise NotImplementedError

    def latency_quantile(self, workload: str, namespace: str, q: float = 0.99,
                         window_seconds: float | None = 60) -> float | None:
        """The `q` quantile of destination-side request durations (ms) over the window; None without requests."""
        raise NotImplementedError


class BuiltinMetrics(MeshMetrics):
    """From the proxies' own counters: no Prometheus needed."""

    kind = "builtin"

    def __init__(self, mesh: LocalMesh) -> None:
        super().__init__(mesh)
        self.behind_at_mark: list[str] = []  # proxies whose records had not all arrived when the last mark was made

    def mark(self) -> None:
        """Start a window here, once the records of the requests sent so far are counted. A proxy still behind then
        does not stop the traffic; a check counting from this mark fails naming it (see `_delta`)."""
        self.behind_at_mark = self._settle()
        self.marks.append(Mark(time.time(), self._counters()))

    def _settle(self) -> list[str]:
        return self.mesh.settle_records()

    def _counters(self) -> Snapshot:
        async def take() -> Snapshot:  # on the mesh's loop: pods change only there
            return snapshot(self.mesh)

        return self.mesh.call(take())

    def _snapshot(self) -> Snapshot:
        """The counters now, once the records of the requests sent so far are in; refused when they are not, since
        the requests whose records are missing would be left out of every count and rate."""
        behind = self._settle()
        if behind:
            raise MeshlibError("the proxies' counters would leave out requests whose records had not arrived: "
                               + "; ".join(behind))
        return self._counters()

    def delta(self, window_seconds: float | None = None) -> Snapshot:
        """How much each counter grew over the window (`None`: since the latest mark), keyed as `snapshot()`."""
        return self._delta(window_seconds)

    def _delta(self, window_seconds: float | None) -> Snapshot:
        if window_seconds is None and self.behind_at_mark:
            raise MeshlibError("the proxies' records had not all arrived when the traffic started, so what they "
                               "count since then would include earlier requests: " + "; ".join(self.behind_at_mark))
        now = self._snapshot()
        base = self._baseline(window_seconds)
        return {k: max(v - base.get(k, 0.0), 0.0) for k, v in now.items()}

    def _baseline(self, window_seconds: float | None) -> Snapshot:
        if window_seconds is None:
            return self.marks[-1].values if self.marks else {}
        cutoff = time.time() - window_seconds
        old = [m for m in self.marks if m.at <= cutoff]
        return old[-1].values if old else {}

    def request_count(self, filters: Mapping[str, str] | None = None, reporter: str | None = "destination") -> int:
        wanted = ({"reporter": reporter} if reporter else {}) | dict(filters or {})
        total = sum(v for (_, name, labels), v in self._snapshot().items()
                    if name == REQUESTS and labels_match(dict(labels), wanted))
        return int(round(total))

    def success_rate(self, workload: str, namespace: str, window_seconds: float | None = 60) -> float | None:
        good = total = 0.0
        for (_, name, labels), v in self._delta(window_seconds).items():
            lab = dict(labels)
            if name == REQUESTS and flagger_target(lab, workload, namespace):
                total += v
                if not lab.get("response_code", "").startswith("5"):
                    good += v
        return None if total == 0 else good / total * 100

    def latency_quantile(self, workload: str, namespace: str, q: float = 0.99,
                         window_seconds: float | None = 60) -> float | None:
        buckets = []
        for (_, name, labels), v in self._delta(window_seconds).items():
            lab = dict(labels)
            if name == DURATION_BUCKET and flagger_target(lab, workload, namespace):
                buckets.append((float(lab["le"]), v))
        value = histogram_quantile(q, buckets)
        return None if math.isnan(value) else value


class PromQLMetrics(MeshMetrics):
    """Flagger's queries on the mesh's real Prometheus (each after a fresh scrape of every proxy)."""

    kind = "promql"

    def __init__(self, mesh: LocalMesh, fresh: bool = True) -> None:
        super().__init__(mesh)
        self.fresh = fresh

    def _window(self, window_seconds: float | None) -> str:
        server = self.mesh.prometheus
        if window_seconds is None:  # since the latest mark, else since Prometheus started
            since = self.marks[-1].at if self.marks else (server.started_at if server else time.time())
            window_seconds = max(math.ceil(time.time() - since), 2 * self.mesh.scrape_interval)
        return duration(window_seconds)

    def request_count(self, filters: Mapping[str, str] | None = None, reporter: str | None = "destination") -> int:
        value = self.mesh.promql_scalar(count_query(filters or {}, reporter), fresh=self.fresh)
        return 0 if value is None else int(round(value))

    def success_rate(self, workload: str, namespace: str, window_seconds: float | None = 60) -> float | None:
        query = success_rate_query(workload, namespace, self._window(window_seconds))
        return self.mesh.promql_scalar(query, fresh=self.fresh)

    def latency_quantile(self, workload: str, namespace: str, q: float = 0.99,
                         window_seconds: float | None = 60) -> float | None:
        query = latency_query(workload, namespace, self._window(window_seconds), q)
        return self.mesh.promql_scalar(query, fresh=self.fresh)


def mesh_metrics(mesh: LocalMesh, source: str = "auto") -> MeshMetrics:
    """`auto`: PromQL when the mesh runs Prometheus, else builtin; or force `builtin` / `promql`."""
    if source == "builtin" or (source == "auto" and mesh.prometheus is None):
        return BuiltinMetrics(mesh)
    if source in ("auto", "promql"):
        return PromQLMetrics(mesh)
    raise ValueError(f"metrics source must be auto, builtin or promql, not {source!r}")


# --- helpers --------------------------------------------------------------------------------------
def snapshot(mesh: LocalMesh) -> Snapshot:
    """Every proxy's request counters and duration buckets, keyed by pod (call it on the mesh's loop)."""
    out: Snapshot = {}
    for pod in mesh.pods():
        if pod.sidecar is None:
            continue
        pod.sidecar.refresh()
        for family in pod.sidecar.records.metrics.registry.collect():
            for sample in family.samples:
                if sample.name in (REQUESTS, DURATION_BUCKET):
                    out[(pod.name, sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def labels_match(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Exact label values (a missing label counts as empty, as in PromQL)."""
    return all(labels.get(k, "") == v for k, v in wanted.items())


def flagger_target(labels: Mapping[str, str], workload: str, namespace: str) -> bool:
    """Whether a series is Flagger's: destination reporter, the namespace, `workload` as an anchored regex."""
    return (labels.get("reporter") == "destination" and labels.get("destination_workload_namespace") == namespace
            and re.fullmatch(workload, labels.get("destination_workload", "")) is not None)
