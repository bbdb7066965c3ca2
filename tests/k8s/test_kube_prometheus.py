"""Metrics on the kubernetes backend: PromQL on a real Prometheus reached by URL and through a port-forward made by
the client through the real API server, and the builtin checks on the sidecars' counters read over port-forward.

What answers here: Debian's `prometheus` binary on 127.0.0.1 (meshlib.local.prometheus.PrometheusServer), standing
for the cluster's Prometheus; it scrapes exporters this test serves with prometheus_client, one per simulated
sidecar, whose series are Istio-shaped (`istio_requests_total`, `istio_request_duration_milliseconds`, destination
reporter, Istio's labels) and count what the test says the sidecar served. No Envoy or pilot-agent runs: kwok's
PortForward objects point each pod's merged-metrics port (15020) at its exporter, and the ClusterPortForward of
istio-system's port 9090 at the local Prometheus, so the client's port-forward protocol runs end to end, but the
numbers are the test's, not a proxy's."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import HOST, ControlPlane, not_built_reason
from kwoktools import kwok, once_kwok_knows, wait_for
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from meshlib.errors import MeshlibError
from meshlib.kube.backend import KubernetesBackend
from meshlib.local.prometheus import PrometheusServer, PrometheusUnavailable, PromQLError, ScrapeTarget

NOT_BUILT = not_built_reason()
NO_PROMETHEUS = shutil.which("prometheus") is None
pytestmark = [pytest.mark.k8s, pytest.mark.skipif(NOT_BUILT is not None, reason=NOT_BUILT or ""),
              pytest.mark.skipif(NO_PROMETHEUS, reason="no prometheus binary (apt-get install prometheus)")]

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "istio-system"
ISTIO_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                 1800000, 3600000)  # Istio's default duration buckets (ms)
LABELS = ("reporter", "source_workload", "source_workload_namespace", "destination_workload",
          "destination_workload_namespace", "destination_app", "destination_version", "destination_service",
          "request_protocol", "response_code", "connection_security_policy")
PROMETHEUS_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: prometheus, namespace: istio-system, labels: {app: prometheus}}
spec:
  selector: {matchLabels: {app: prometheus}}
  template:
    metadata: {labels: {app: prometheus}}
    spec:
      containers:
      - {name: prometheus-server, image: prom/prometheus:v2.54.1, ports: [{containerPort: 9090, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: prometheus, namespace: istio-system}
spec:
  selector: {app: prometheus}
  ports: [{name: http, port: 9090, targetPort: http}]
"""


def catalog(replicas: int, name: str = "catalog") -> str:
    """A workload as injection leaves it: the app's container and the sidecar."""
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}, version: v1}}}}
  template:
    metadata: {{labels: {{app: {name}, version: v1}}}}
    spec:
      containers:
      - {{name: {name}, image: istioinaction/catalog:latest, ports: [{{containerPort: 3000}}]}}
      - {{name: istio-proxy, image: docker.io/istio/proxyv2:1.28.1}}
"""


class Sidecar:
    """Istio-shaped series of one simulated sidecar, served by prometheus_client on 127.0.0.1 (any path, so also
    pilot-agent's /stats/prometheus); `served()` counts a request as a destination sidecar would."""

    def __init__(self, namespace: str, workload: str = "catalog", version: str = "v1") -> None:
        self.namespace, self.workload, self.version = namespace, workload, version
        self.registry = CollectorRegistry()
        self.requests = Counter("istio_requests", "requests", LABELS, registry=self.registry)
        self.duration = Histogram("istio_request_duration_milliseconds", "duration", LABELS, buckets=ISTIO_BUCKETS,
                                  registry=self.registry)
        self._server, self._thread = start_http_server(0, addr=HOST, registry=self.registry)
        self.address = f"{HOST}:{self._server.server_port}"

    def served(self, count: int, status: int = 200, ms: float = 12.0) -> None:
        labels = {"reporter": "destination", "source_workload": "istio-ingressgateway",
                  "source_workload_namespace": SYSTEM, "destination_workload": self.workload,
                  "destination_workload_namespace": self.namespace, "destination_app": self.workload,
                  "destination_version": self.version,
                  "destination_service": f"{self.workload}.{self.namespace}.svc.cluster.local",
                  "request_protocol": "http", "response_code": str(status), "connection_security_policy": "mutual_tls"}
        for _ in range(count):
            self.requests.labels(**labels).inc()
            self.duration.labels(**labels).observe(ms)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """The real Prometheus (Debian's binary) on loopback, scraping every second; each test names its targets."""
    with PrometheusServer(scrape_interval=1.0) as server:
        server.start([])
        yield server


@pytest.fixture(scope="module")
def prometheus_service(cp: ControlPlane, prometheus: PrometheusServer) -> Iterator[str]:
    """Prometheus where the walkthrough installs it: Service `prometheus` in istio-system (a kwok pod behind it, its
    port 9090 forwarded by kwok to the local Prometheus). Removed after the module."""
    with contextlib.suppress(urllib.error.HTTPError):
        cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM}})
    deployment, service = yaml.safe_load_all(PROMETHEUS_DEPLOYMENT)
    cp.api("POST", f"/apis/apps/v1/namespaces/{SYSTEM}/deployments", deployment)
    cp.api("POST", f"/api/v1/namespaces/{SYSTEM}/services", service)
    delete = kwok(cp, "ClusterPortForward", "prometheus-9090", {
        "selector": {"matchNamespaces": [SYSTEM]},
        "forwards": [{"ports": [9090], "target": {"address": HOST, "port": prometheus.port}}]})
    try:
        yield wait_for("Prometheus's pod", lambda: [p["metadata"]["name"] for p in cp.api(
            "GET", f"/api/v1/namespaces/{SYSTEM}/pods?labelSelector=app%3Dprometheus")["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])])[0]
    finally:
        delete()
        cp.api("DELETE", f"/api/v1/namespaces/{SYSTEM}/services/prometheus")
        cp.api("DELETE", f"/apis/apps/v1/namespaces/{SYSTEM}/deployments/prometheus",
               {"propagationPolicy": "Foreground"})


def backend(cp: ControlPlane, namespace: str, **kw: Any) -> KubernetesBackend:
    return KubernetesBackend(namespace, context="admin", allowed=("admin",), kubeconfig=cp.kubeconfig,
                             log_flush_wait=0, **kw)


def pods_of(b: KubernetesBackend, namespace: str, app: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in b.cluster.list("v1", "Pod", namespace, f"app={app}"))


@contextlib.contextmanager
def sidecars(cp: ControlPlane, b: KubernetesBackend, namespace: str, pods: list[str],
             prometheus: PrometheusServer | None) -> Iterator[dict[str, Sidecar]]:
    """An exporter per pod at the pod's port 15020 (kwok PortForward named like the pod), and, with `prometheus`,
    one scrape target per pod labelled with the pod's namespace and name, as a Kubernetes pod scrape labels it."""
    exporters = {pod: Sidecar(namespace) for pod in pods}
    deletes = []
    try:
        for pod, exporter in exporters.items():
            port = int(exporter.address.rsplit(":", 1)[1])
            deletes.append(kwok(cp, "PortForward", pod, {"forwards": [
                {"ports": [15020], "target": {"address": HOST, "port": port}}]}, namespace))
        for pod in pods:
            once_kwok_knows(lambda pod=pod: b.cluster.http_get(pod, namespace, 15020, "/stats/prometheus"))
        if prometheus is not None:
            prometheus.update_targets([ScrapeTarget(e.address, {"namespace": namespace, "pod": pod, "app": "catalog",
                                                                "version": "v1"}) for pod, e in exporters.items()])
        yield exporters
    finally:
        if prometheus is not None:
            prometheus.update_targets([])
        for delete in deletes:
            delete()
        for exporter in exporters.values():
            exporter.close()


# --- PromQL ---------------------------------------------------------------------------------------------------------
def test_promql_by_url_and_through_a_port_forward_to_the_prometheus_service(
        cp: ControlPlane, prometheus: PrometheusServer, prometheus_service: str) -> None:
    namespace = "prom-promql"
    by_url = backend(cp, namespace, prometheus_url=prometheus.url)
    forwarded = None
    try:
        by_url.apply_text(catalog(2), namespace)
        pods = pods_of(by_url, namespace, "catalog")
        with sidecars(cp, by_url, namespace, pods, prometheus) as exporters:
            assert by_url.has_prometheus()
            seen = by_url.wait_for_scrapes(30)
            assert seen.startswith(f"2 proxies of namespace {namespace} scraped by Prometheus at {prometheus.url}")
            assert all(pod in seen for pod in pods)

            exporters[pods[0]].served(7)
            exporters[pods[1]].served(3, status=503)
            query = f'sum(istio_requests_total{{reporter="destination",destination_workload_namespace="{namespace}"}})'
            started = time.monotonic()
            assert by_url.promql(query) == [({}, 10.0)]  # fresh: includes what was counted before the query
            took = time.monotonic() - started
            five = by_url.promql(f'sum by (pod) (istio_requests_total{{namespace="{namespace}",response_code="503"}})')
            assert five == [({"pod": pods[1]}, 3.0)]

            # the same Prometheus as the walkthrough installs it, reached through the API server's port-forward
            forwarded = backend(cp, namespace)
            assert forwarded.has_prometheus()
            exporters[pods[1]].served(5)
            assert forwarded.promql(query) == [({}, 15.0)]
            forward = forwarded.prometheus._forward
            assert forward is not None and forward.pod == prometheus_service and forward.port == 9090
            assert forward.accepted >= 2 and forward.errors == []
            assert forwarded.wait_for_scrapes(30).startswith(
                f"2 proxies of namespace {namespace} scraped by Prometheus (Service prometheus in namespace "
                "istio-system, port 9090, over a port-forward)")
            print(f"a fresh PromQL query by URL took {took:.2f}s (scrape interval 1s)")
    finally:
        if forwarded is not None:
            forwarded.close()
        by_url.close()
    if forwarded is not None:
        assert forwarded.prometheus._forward is None


def test_promql_problems_are_one_line(cp: ControlPlane, prometheus: PrometheusServer) -> None:
    with pytest.raises(MeshlibError, match="prometheus_url 'localhost:9090': give Prometheus's scheme, host and port"):
        backend(cp, "prom-problems", prometheus_url="localhost:9090")
    b = backend(cp, "prom-problems", prometheus=("no-prometheus", SYSTEM, 9090))
    nowhere = backend(cp, "prom-problems", prometheus_url="http://127.0.0.1:9")
    local = backend(cp, "prom-problems", prometheus_url=prometheus.url)
    try:
        assert not b.has_prometheus()
        for attempt in (lambda: b.promql("up"), lambda: b.wait_for_scrapes(1)):
            with pytest.raises(PrometheusUnavailable) as err:
                attempt()
            assert str(err.value).startswith("no Service no-prometheus in namespace istio-system: install Prometheus "
                                             "in istio-system as the walkthrough does")
            assert "-D prometheus_url=" in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(PrometheusUnavailable) as unreachable:
            nowhere.promql("up")
        assert str(unreachable.value).startswith("cannot reach Prometheus at http://127.0.0.1:9 (")
        with pytest.raises(PromQLError) as rejected:
            local.promql("sum(")
        assert "bad_data" in rejected.value.message and "parse error" in rejected.value.message
        with pytest.raises(MeshlibError, match="no pod with a sidecar runs in namespace prom-problems"):
            local.wait_for_scrapes(1)  # a wait over no proxy proves nothing
    finally:
        local.close()
        nowhere.close()
        b.close()


# --- the builtin checks on the sidecars' own counters ----------------------------------------------------------------
def test_builtin_checks_count_the_sidecars_own_counters_since_the_mark(cp: ControlPlane) -> None:
    namespace = "prom-builtin"
    b = backend(cp, namespace)
    try:
        b.apply_text(catalog(2), namespace)
        pods = pods_of(b, namespace, "catalog")
        with sidecars(cp, b, namespace, pods, None) as exporters:
            exporters[pods[0]].served(40)  # before the mark: not counted
            counters = b.proxy_counters()
            counters.mark()
            exporters[pods[0]].served(18, ms=20)
            exporters[pods[1]].served(2, status=503, ms=700)
            assert counters.request_count({"destination_workload": "catalog"}) == 60
            assert counters.success_rate("catalog", namespace, window_seconds=None) == pytest.approx(90.0)
            p50 = counters.latency_quantile("catalog", namespace, 0.5, window_seconds=None)
            p99 = counters.latency_quantile("catalog", namespace, 0.99, window_seconds=None)
            assert 10 < p50 <= 25 and 500 < p99 <= 1000, (p50, p99)
            assert counters.success_rate("webapp", namespace, window_seconds=None) is None  # no requests: no value

            # a sidecar whose counters cannot be read at the mark: the traffic goes on, a check from it fails
            b.apply_text(catalog(1, "broken"), namespace)
            broken = pods_of(b, namespace, "broken")[0]
            counters.mark()
            assert set(counters.unreadable_at_mark) == {broken}
            with pytest.raises(MeshlibError) as err:
                counters.success_rate("catalog", namespace, window_seconds=None)
            message = str(err.value)
            assert message.startswith(f"the sidecar counters of pod {broken} could not be read when the traffic "
                                      "started, so nothing can be counted from then: ")
            assert "15020" in message and "\n" not in message
    finally:
        b.close()


# --- the metric steps in a behave run ---------------------------------------------------------------------------------
FEATURE = """\
Feature: release metrics on a cluster
  Scenario: the sidecars' counters and Prometheus see the same requests
    Given these resources are applied:
      \"\"\"
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: catalog}
      spec:
        selector: {matchLabels: {app: catalog, version: v1}}
        template:
          metadata: {labels: {app: catalog, version: v1}}
          spec:
            containers:
            - {name: catalog, image: istioinaction/catalog:latest}
            - {name: istio-proxy, image: docker.io/istio/proxyv2:1.28.1}
      \"\"\"
    And Prometheus is scraping every proxy
    And clients call catalog.istioinaction.io through the ingress gateway
    When 30 requests are sent to /items
    Then every response has status 200
    And catalog received 30 requests
    And the success rate of catalog is at least 99%
    And the p99 latency of catalog is at most 500 ms
    And istio_requests_total for destination_version v1 grew by at least 30
    And the PromQL `sum(istio_requests_total{reporter="destination", destination_workload="catalog"})` is at least 30
    When 10 requests are sent to /status/503
    Then catalog received 10 requests
    And the success rate of catalog is below 50%
"""


@contextlib.contextmanager
def gateway_app(sidecar: Sidecar) -> Iterator[str]:
    """The ingress gateway's URL for the run: a local HTTP server that answers /items with 200 and /status/CODE with
    that code, and counts each request on the catalog sidecar's exporter as that sidecar would."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200
            sidecar.served(1, status=status, ms=15)
            body = b'{"ok": true}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_metric_steps_run_in_a_behave_run(cp: ControlPlane, prometheus: PrometheusServer,
                                              prometheus_service: str, tmp_path: Path) -> None:
    namespace = "metrics-behave"
    project = tmp_path / "project"
    (project / "features").mkdir(parents=True)
    shutil.copytree(ROOT / "steps", project / "steps")
    shutil.copy(ROOT / "environment.py", project)
    (project / "features" / "metrics.feature").write_text(FEATURE)
    empty_log = tmp_path / "istio-proxy.log"
    empty_log.write_text("")
    sidecar = Sidecar(namespace)
    port = int(sidecar.address.rsplit(":", 1)[1])
    deletes = [kwok(cp, "ClusterPortForward", "metrics-behave-15020", {
                   "selector": {"matchNamespaces": [namespace]},
                   "forwards": [{"ports": [15020], "target": {"address": HOST, "port": port}}]}),
               kwok(cp, "ClusterLogs", "metrics-behave-logs", {
                   "selector": {"matchNamespaces": [namespace]},
                   "logs": [{"containers": ["istio-proxy"], "logsFile": str(empty_log)}]})]
    failures: list[BaseException] = []

    def scrape_the_new_pod() -> None:
        """What Prometheus's pod discovery does on a cluster: the run's new pod becomes a target, labelled with its
        namespace and name."""
        try:
            pod = wait_for("the run's catalog pod", lambda: [p["metadata"]["name"] for p in cp.api(
                "GET", f"/api/v1/namespaces/{namespace}/pods")["items"]], timeout=120)[0]
            prometheus.update_targets([ScrapeTarget(sidecar.address, {"namespace": namespace, "pod": pod,
                                                                      "app": "catalog", "version": "v1"})])
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            failures.append(exc)

    discovery = threading.Thread(target=scrape_the_new_pod, daemon=True)
    discovery.start()
    started = time.monotonic()
    try:
        with gateway_app(sidecar) as url:
            run = subprocess.run(
                [sys.executable, "-m", "behave", "-f", "plain", "--no-timings", "--no-capture",
                 "-D", f"manifests={ROOT / 'manifests'}", "-D", "backend=kubernetes",
                 "-D", f"kubeconfig={cp.kubeconfig}", "-D", "context=admin", "-D", "allowed_contexts=admin",
                 "-D", f"namespace={namespace}", "-D", f"gateway_url={url}"],
                cwd=project, env={**os.environ, "HOME": str(project)}, capture_output=True, text=True, timeout=300)
        discovery.join(10)
    finally:
        prometheus.update_targets([])
        for delete in deletes:
            delete()
        sidecar.close()
    out = run.stdout + run.stderr
    assert not failures, failures
    assert run.returncode == 0 and "1 scenario passed, 0 failed" in run.stdout, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    print(f"behave with the metric steps on the kubernetes backend: {time.monotonic() - started:.1f}s")
