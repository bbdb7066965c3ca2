"""Istio's standard metrics for one proxy, in Prometheus text format (istio-semantics.md §6.1)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.utils import floatToGoString

LABELS = ("reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
          "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
          "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
          "destination_version", "destination_service", "destination_canonical_service",
          "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
          "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
          "connection_security_policy")
DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                    1800000, 3600000)
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)
CLUSTER = "Kubernetes"


@dataclass(frozen=True)
class Peer:
    """What a proxy knows of one side of a request (from pod labels; `unknown` when it doesn't)."""

    workload: str = "unknown"
    namespace: str = "unknown"
    app: str = "unknown"
    version: str = "unknown"
    canonical_service: str = "unknown"
    canonical_revision: str = "latest"

    @classmethod
    def of(cls, workload: str, namespace: str, labels: dict[str, str]) -> Peer:
        app = labels.get("app", "unknown")
        return cls(workload, namespace, app, labels.get("version", "unknown"),
                   labels.get("service.istio.io/canonical-name", labels.get("app", workload)),
                   labels.get("service.istio.io/canonical-revision", labels.get("version", "latest")))


class ProxyMetrics:
    """istio_requests_total and the request duration/size histograms, labelled as Istio labels them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("istio_requests_total", "Requests seen by this proxy", LABELS,
                                registry=self.registry)
        self.duration = Histogram("istio_request_duration_milliseconds", "Request duration", LABELS,
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        self.request_bytes = Histogram("istio_request_bytes", "Request sizes", LABELS, buckets=BYTES_BUCKETS,
                                       registry=self.registry)
        self.response_bytes = Histogram("istio_response_bytes", "Response sizes", LABELS, buckets=BYTES_BUCKETS,
                                        registry=self.registry)

    def record(self, reporter: str, source: Peer, destination: Peer, service_host: str, service_name: str,
               service_namespace: str, code: int, flags: str, millis: float, req_bytes: int,
               resp_bytes: int) -> None:
        values = {
            "reporter": reporter, "source_workload": source.workload,
            "source_canonical_service": source.canonical_service,
            "source_canonical_revision": source.canonical_revision,
            "source_workload_namespace": source.namespace, "source_principal": "unknown", "source_app": source.app,
            "source_version": source.version, "source_cluster": CLUSTER,
            "destination_workload": destination.workload,
            "destination_workload_namespace": destination.namespace, "destination_principal": "unknown",
            "destination_app": destination.app, "destination_version": destination.version,
            "destination_service": service_host, "destination_canonical_service": destination.canonical_service,
            "destination_canonical_revision": destination.canonical_revision,
            "destination_service_name": service_name, "destination_service_namespace": service_namespace,
            "destination_cluster": CLUSTER, "request_protocol": "http", "response_code": str(code),
            "grpc_response_status": "", "response_flags": flags or "-",
            "connection_security_policy": "none" if reporter == "destination" else "unknown",
        }
        labels = [values[k] for k in LABELS]
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(millis)
        self.request_bytes.labels(*labels).observe(req_bytes)
        self.response_bytes.labels(*labels).observe(resp_bytes)

    def exposition(self) -> bytes:
        """Prometheus text format with the labels in Istio's emission order (`le` last), and no `_created`
        series (an Envoy proxy has none; prometheus_client would sort the labels and add them)."""
        out: list[str] = []
        for metric in self.registry.collect():
            name = f"{metric.name}_total" if metric.type == "counter" else metric.name
            out.append(f"# HELP {name} {metric.documentation}\n# TYPE {name} {metric.type}\n")
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items(), key=_label_rank))
                out.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n")
        return "".join(out).encode()


_ORDER = {name: i for i, name in enumerate(LABELS)}


def _label_rank(item: tuple[str, str]) -> int:
    return _ORDER.get(item[0], len(LABELS))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
