"""Istio's standard metrics for one proxy, in Prometheus text format (istio-semantics.md §6.1).

`ProxyMetrics` keeps one series per label set in plain Python (a counter and three histograms), because it is
fed in bulk from Envoy's request records (`meshlib.local.envoy.records`): a `prometheus_client` metric costs
several times more per observation. Its `registry` still yields `prometheus_client` metric families, so code
that walks `registry.collect()` keeps working.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from meshlib.config.canonical import revision_of, service_of

LABELS = ("reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
          "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
          "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
          "destination_version", "destination_service", "destination_canonical_service",
          "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
          "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
          "connection_security_policy")
# Envoy's default histogram buckets: Istio's histograms, sizes included, use them unless a pod's
# `sidecar.istio.io/statsHistogramBuckets` annotation says otherwise.
ENVOY_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                 1800000, 3600000)
DURATION_BUCKETS = ENVOY_BUCKETS
BYTES_BUCKETS = ENVOY_BUCKETS
CLUSTER = "Kubernetes"
UNKNOWN = "unknown"

Labels = tuple[str, ...]  # values in `LABELS` order


@dataclass(frozen=True)
class Peer:
    """What a proxy knows of one side of a request (from pod labels; `unknown` when it doesn't)."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = "latest"

    @classmethod
    def of(cls, workload: str, namespace: str, labels: dict[str, str]) -> Peer:
        return cls(workload, namespace, labels.get("app", UNKNOWN), labels.get("version", UNKNOWN),
                   service_of(labels, workload), revision_of(labels))

    def is_app(self, app: str) -> bool:
        """Whether a step's `app` names this peer (canonical service, `app` label or workload name)."""
        return app in (self.canonical_service, self.app, self.workload)

    @property
    def known(self) -> bool:
        """Whether this is a workload of the mesh (Istio learnt its metadata), not an unknown peer."""
        return self.workload != UNKNOWN

    @property
    def cluster(self) -> str:
        return CLUSTER if self.known else UNKNOWN


def label_values(reporter: str, source: Peer, destination: Peer, service_host: str, service_name: str,
                 service_namespace: str, code: int, flags: str) -> Labels:
    """The label values of one request in Istio's emission order (no mTLS here: principals are `unknown`)."""
    return (reporter, source.workload, source.canonical_service, source.canonical_revision, source.namespace,
            UNKNOWN, source.app, source.version, source.cluster,
            destination.workload, destination.namespace, UNKNOWN, destination.app, destination.version,
            service_host, destination.canonical_service, destination.canonical_revision, service_name,
            service_namespace, destination.cluster, "http", str(code), "", flags or "-",
            "none" if reporter == "destination" else UNKNOWN)


class _Histogram:
    """Per-bucket counts (not cumulative) and the sum, as one Envoy histogram series keeps them."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # `le`: value <= bound
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((floatToGoString(bound), float(running)))
        return out


class _Series:
    __slots__ = ("requests", "duration", "request_bytes", "response_bytes")

    def __init__(self, duration_buckets: tuple[float, ...], bytes_buckets: tuple[float, ...]) -> None:
        self.requests = 0
        self.duration = _Histogram(duration_buckets)
        self.request_bytes = _Histogram(bytes_buckets)
        self.response_bytes = _Histogram(bytes_buckets)


_FAMILIES = (("istio_requests_total", "counter", "Requests seen by this proxy"),
             ("istio_request_duration_milliseconds", "duration", "Request duration"),
             ("istio_request_bytes", "request_bytes", "Request sizes"),
             ("istio_response_bytes", "response_bytes", "Response sizes"))


class ProxyMetrics:
    """istio_requests_total and the request duration/size histograms, labelled as Istio labels them."""

    def __init__(self, duration_buckets: tuple[float, ...] = DURATION_BUCKETS,
                 bytes_buckets: tuple[float, ...] = BYTES_BUCKETS) -> None:
        self.duration_buckets = tuple(sorted(float(b) for b in duration_buckets))
        self.bytes_buckets = tuple(sorted(float(b) for b in bytes_buckets))
        self._series: dict[Labels, _Series] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def record(self, reporter: str, source: Peer, destination: Peer, service_host: str, service_name: str,
               service_namespace: str, code: int, flags: str, millis: float | None, req_bytes: int,
               resp_bytes: int) -> None:
        """Count one request (`millis` None: no duration observed, as Envoy when the request never completed)."""
        self.observe(label_values(reporter, source, destination, service_host, service_name, service_namespace,
                                  code, flags), millis, req_bytes, resp_bytes)

    def observe(self, labels: Labels, millis: float | None, req_bytes: int, resp_bytes: int) -> None:
        """Count one request whose label values (`label_values`) are already known."""
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = _Series(self.duration_buckets, self.bytes_buckets)
            series.requests += 1
            if millis is not None:
                series.duration.observe(millis)
            series.request_bytes.observe(req_bytes)
            series.response_bytes.observe(resp_bytes)

    def families(self) -> list[Metric]:
        """The four metric families as `prometheus_client` objects (what `registry.collect()` yields)."""
        with self._lock:
            rows = [(labels, s.requests, s.duration.cumulative(), s.duration.total, s.request_bytes.cumulative(),
                     s.request_bytes.total, s.response_bytes.cumulative(), s.response_bytes.total)
                    for labels, s in self._series.items()]
        counter = CounterMetricFamily(_FAMILIES[0][0], _FAMILIES[0][2], labels=LABELS)
        histograms = [HistogramMetricFamily(name, doc, labels=LABELS) for name, _, doc in _FAMILIES[1:]]
        for labels, requests, *hists in rows:
            counter.add_metric(list(labels), float(requests))
            for i, family in enumerate(histograms):
                family.add_metric(list(labels), hists[2 * i], hists[2 * i + 1])
        return [counter, *histograms]

    def exposition(self) -> bytes:
        """Prometheus text format with the labels in Istio's emission order (`le` last), and no `_created`
        series (an Envoy proxy has none)."""
        out: list[str] = []
        for metric in self.families():
            name = f"{metric.name}_total" if metric.type == "counter" else metric.name
            out.append(f"# HELP {name} {metric.documentation}\n# TYPE {name} {metric.type}\n")
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items(), key=_label_rank))
                out.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n")
        return "".join(out).encode()


class _Collector:
    """Lets `ProxyMetrics.registry.collect()` yield the families, as a `prometheus_client` registry does."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics.families()


_ORDER = {name: i for i, name in enumerate(LABELS)}


def _label_rank(item: tuple[str, str]) -> int:
    return _ORDER.get(item[0], len(LABELS))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
