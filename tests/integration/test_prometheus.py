"""A real Prometheus scraping the embedded mesh (DESIGN.md "Metrics"), and the builtin checks without one.

The tests that run the `prometheus` binary are skipped when it is not installed (`.ci/run` installs Debian's
package); what a user sees without it — a clear error for PromQL, builtin checks that still work — is tested
everywhere, with PATH emptied.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from meshclient import CATALOG_V1, CH5, NS, ROOT, SERVICES, WEBAPP_HOST, send_many, wait_until
from testkit.servers import json_server

from meshlib.backend import LocalBackend
from meshlib.dsl import metrics as dsl_metrics
from meshlib.dsl.world import World
from meshlib.errors import MeshlibError
from meshlib.expect import ExpectationFailed
from meshlib.local.mesh import LocalMesh
from meshlib.local.metricsquery import BuiltinMetrics, PromQLMetrics, mesh_metrics
from meshlib.local.prometheus import (
    INSTALL_HINT,
    PrometheusExited,
    PrometheusServer,
    PrometheusUnavailable,
    PromQLError,
    ScrapeTarget,
)

WORLD = [SERVICES, CH5 / "webapp-catalog-gw-vs.yaml"]  # webapp calls catalog (v1) and catalog-v2, ~half each
CATALOG_DEST = {"destination_app": "catalog", "destination_workload_namespace": NS}
CATALOGS = "catalog|catalog-v2"  # Flagger's `destination_workload=~` is a regex
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="no prometheus binary (apt-get install prometheus)")


class MeshBackend(LocalBackend):
    """LocalBackend over a mesh started here."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def fake_binary(tmp_path: Path, script: str) -> str:
    path = tmp_path / "prometheus"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# --- without Prometheus ---------------------------------------------------------------------------
def test_without_the_binary_promql_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty dir: no prometheus anywhere
    with pytest.raises(PrometheusUnavailable) as err:
        PrometheusServer().start()
    assert INSTALL_HINT in str(err.value)
    assert "install Debian's prometheus package (apt-get install prometheus) to run PromQL steps" in str(err.value)

    with pytest.raises(PrometheusUnavailable, match="apt-get install prometheus"):
        LocalMesh(WORLD, namespace=NS, port=0, prometheus=True).start()

    with LocalMesh(WORLD, namespace=NS, port=0, seed=3) as mesh:  # default: runs without it
        assert mesh.prometheus is None
        with pytest.raises(PrometheusUnavailable) as err:
            mesh.promql('sum(istio_requests_total{reporter="destination"})')
        assert "istio_requests_total" in str(err.value) and INSTALL_HINT in str(err.value)
        metrics = mesh_metrics(mesh)
        assert isinstance(metrics, BuiltinMetrics)
        assert metrics.success_rate(CATALOGS, NS, 60) is None  # no requests: "no values found"
        replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 10)
        assert [r.status for r in replies] == [200] * 10
        assert metrics.request_count(CATALOG_DEST) == 10
        assert metrics.request_count({"destination_workload": "webapp"}) == 10
        assert metrics.request_count({"source_workload": "istio-ingressgateway"}, reporter="source") == 10
        assert metrics.request_count({"destination_workload": "catalog"}) + metrics.request_count(
            {"destination_workload": "catalog-v2"}) == 10
        assert metrics.success_rate(CATALOGS, NS, 60) == 100.0
        assert metrics.success_rate("catalog-primary", NS, 60) is None
        assert metrics.success_rate("catalog-v", NS, 60) is None  # an anchored regex, as in Prometheus
        assert 0 < metrics.latency_quantile(CATALOGS, NS, 0.99, 60) <= 1000
        metrics.mark()
        assert metrics.success_rate(CATALOGS, NS, window_seconds=None) is None  # nothing since the mark
        send_many(mesh, "/api/catalog", WEBAPP_HOST, 3)
        assert metrics.request_count(CATALOG_DEST) == 13
        assert metrics.success_rate(CATALOGS, NS, window_seconds=None) == 100.0


def test_never_with_prometheus_false():
    with LocalMesh(namespace=NS, port=0, prometheus=False) as mesh:
        assert mesh.prometheus is None
        with pytest.raises(PrometheusUnavailable, match="prometheus=False"):
            mesh.promql("up")


def test_a_prometheus_that_exits_at_once_is_reported_with_its_log_and_cleaned_up(tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where its temp dir goes
    server = PrometheusServer(binary=fake_binary(tmp_path, 'echo "bad flag: --nope" >&2; exit 3'))
    with pytest.raises(MeshlibError, match="exited with code 3.*bad flag: --nope"):
        server.start()
    assert server.dir is None and server.process is None
    assert list(temp.iterdir()) == []
    assert "bad flag: --nope" in server.log.read()  # still readable after close


DIES_ON_QUERY = """\
import http.server, os, sys
port = int(next(a for a in sys.argv if a.startswith("--web.listen-address=")).rsplit(":", 1)[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/api/v1/query"):
            print("fatal: out of memory", flush=True)
            os._exit(7)  # mid-request: the client sees the connection close, not an answer
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
print("Server is ready to receive web requests.", flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_a_prometheus_that_dies_during_a_query_is_reported_not_as_a_connection_error(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(DIES_ON_QUERY)
    with PrometheusServer(binary=fake_binary(tmp_path, f'exec "{sys.executable}" "{script}" "$@"')) as server:
        server.start(wait_for_targets=False)
        pid = server.pid
        with pytest.raises(PrometheusExited) as err:
            server.query("up")
    message = str(err.value)
    assert message.startswith(f"cannot run PromQL 'up': the mesh's Prometheus (pid {pid}) exited with status 7; "
                              "its log: "), message
    assert message.endswith("Server is ready to receive web requests. | fatal: out of memory"), message


def test_interrupted_start_stops_the_process_and_removes_the_dir(tmp_path, monkeypatch):
    server = PrometheusServer(binary=fake_binary(tmp_path, "exec sleep 30"))
    seen: dict[str, object] = {}

    def interrupt(self, deadline):
        seen["pid"], seen["dir"] = self.pid, self.dir
        raise KeyboardInterrupt

    monkeypatch.setattr(PrometheusServer, "_wait_ready", interrupt)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert isinstance(seen["pid"], int) and gone(seen["pid"])
    assert isinstance(seen["dir"], Path) and not seen["dir"].exists()


class ScriptedPrometheus:
    """Prometheus's targets page and query API as they answer between a scrape and its commit: the target is `up`
    and scraped just now, while `timestamp(up)` has no sample until `stored_after` queries were asked."""

    def __init__(self, address: str, stored_after: int) -> None:
        self.address, self.stored_after, self.queries = address, stored_after, []

    def answer(self, request: http.server.BaseHTTPRequestHandler) -> dict[str, object]:
        url = urllib.parse.urlsplit(request.path)
        now = datetime.now(UTC)
        labels = {"job": "kubernetes-pods", "instance": self.address}
        if url.path == "/api/v1/targets":
            data: dict[str, object] = {"activeTargets": [{
                "discoveredLabels": {"__address__": self.address}, "labels": labels, "health": "up",
                "lastError": "", "lastScrape": now.isoformat().replace("+00:00", "Z")}]}
        else:
            self.queries.append(urllib.parse.parse_qs(url.query)["query"][0])
            stored = len(self.queries) > self.stored_after
            data = {"resultType": "vector",
                    "result": [{"metric": labels, "value": [now.timestamp(), str(now.timestamp())]}] if stored else []}
        return {"status": "success", "data": data}


@contextlib.contextmanager
def scripted_server(scripted: ScriptedPrometheus) -> Iterator[PrometheusServer]:
    """A PrometheusServer whose `process` is a placeholder sleeper and whose port is the scripted API's."""
    with json_server(scripted.answer) as api:
        server = PrometheusServer()
        server.port = api.server_address[1]
        server._targets = [ScrapeTarget(scripted.address, {"pod": "catalog-1"})]
        server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            yield server
        finally:
            server.process.kill()
            server.process.wait()


def test_a_scrape_counts_once_its_samples_are_stored_not_when_the_targets_page_shows_it():
    scripted = ScriptedPrometheus("127.0.0.1:15090", stored_after=2)
    with scripted_server(scripted) as server:
        server.wait_for_targets(timeout=10)
    assert len(scripted.queries) == 3 and all(q.startswith("timestamp(up{") for q in scripted.queries)


def test_a_scrape_that_is_never_stored_is_named_when_the_wait_ends():
    scripted = ScriptedPrometheus("127.0.0.1:15090", stored_after=10**6)
    with scripted_server(scripted) as server:
        with pytest.raises(MeshlibError) as err:
            server.wait_for_targets(timeout=0.5)
    assert str(err.value).endswith("did not scrape every mesh proxy within 0.5s: "
                                   "no stored scrape since the wait began: 127.0.0.1:15090"), str(err.value)


# --- with the real binary -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prom_mesh() -> Iterator[LocalMesh]:
    mesh = LocalMesh(WORLD, namespace=NS, port=0, seed=11, prometheus=True, scrape_interval=1.0)
    mesh.start()
    try:
        yield mesh
    finally:
        mesh.close()


@needs_prometheus
def test_prometheus_scrapes_the_mesh_and_agrees_with_the_builtin_counters(prom_mesh):
    mesh = prom_mesh
    assert mesh.prometheus is not None and mesh.prometheus.running
    started = time.monotonic()
    mesh.prometheus.wait_for_targets()  # Prometheus applies new targets within ~5-10 s
    first_scrape = time.monotonic() - started
    up = mesh.promql("up", fresh=False)
    pods = {labels["pod"]: labels for labels, value in up if value == 1}
    assert {p.name for p in mesh.pods()} == set(pods)
    catalog = next(labels for pod, labels in pods.items() if pod.startswith("catalog-") and
                   not pod.startswith("catalog-v2-"))
    assert catalog["namespace"] == NS and catalog["version"] == "v1" and catalog["job"] == "kubernetes-pods"

    # Two halves with a scrape between: a series appears at its first request (as Envoy's do), so rate() sees
    # only increases after Prometheus first scraped it; Flagger's load tester sends steadily for the same reason.
    replies = send_many(mesh, "/api/catalog", WEBAPP_HOST, 25)
    mesh.prometheus.sync()
    replies += send_many(mesh, "/api/catalog", WEBAPP_HOST, 25)
    assert [r.status for r in replies] == [200] * 50
    query = 'sum(istio_requests_total{reporter="destination",destination_workload=~"catalog|catalog-v2"})'
    value = wait_until(lambda: mesh.promql_scalar(query, fresh=False), lambda v: v is not None and v >= 50,
                       timeout=15, interval=0.2)
    assert value == 50, f"{value} after {first_scrape:.1f}s for the first scrape"

    promql, builtin = PromQLMetrics(mesh), BuiltinMetrics(mesh)
    assert promql.success_rate(CATALOGS, NS, 30) == 100.0  # Flagger's query, word for word, after a fresh scrape
    promql.fresh = False  # no traffic from here on: one scrape is enough for all what follows
    assert builtin.success_rate(CATALOGS, NS, 30) == 100.0
    assert promql.success_rate("catalog", NS, 30) == 100.0
    for filters, reporter in [(CATALOG_DEST, "destination"), ({"destination_workload": "webapp"}, "destination"),
                              ({"source_workload": "istio-ingressgateway"}, "source"),
                              ({"source_workload": "webapp", "destination_workload": "catalog"}, "source"),
                              ({"destination_workload": "catalog-v2"}, "destination"),
                              ({"response_code": "200"}, None)]:
        assert promql.request_count(filters, reporter) == builtin.request_count(filters, reporter), filters
    assert builtin.request_count(CATALOG_DEST) == 50
    p99_promql = promql.latency_quantile(CATALOGS, NS, 0.99, 30)
    p99_builtin = builtin.latency_quantile(CATALOGS, NS, 0.99, 30)
    assert p99_promql is not None and p99_builtin is not None
    assert 0 < p99_promql <= 1000 and 0 < p99_builtin <= 1000
    assert promql.success_rate("catalog-primary", NS, 30) is None  # no series: "no values found"
    assert isinstance(mesh_metrics(mesh), PromQLMetrics)


@needs_prometheus
def test_promql_errors_show_the_query_and_prometheus_message(prom_mesh):
    with pytest.raises(PromQLError) as err:
        prom_mesh.promql("sum(rate(istio_requests_total[1m])", fresh=False)
    assert "sum(rate(istio_requests_total[1m])" in str(err.value) and "parse error" in str(err.value)
    with pytest.raises(PromQLError, match="range selector"):
        prom_mesh.promql("istio_requests_total[1m]", fresh=False)
    with pytest.raises(PromQLError, match="aggregate it"):
        prom_mesh.promql_scalar("up", fresh=False)


@needs_prometheus
def test_targets_follow_a_scale_up(prom_mesh):
    docs = list(yaml.safe_load_all(CATALOG_V1.read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = 2
    prom_mesh.apply(text=yaml.safe_dump(deployment))
    assert len(prom_mesh.find_pods("catalog", NS)) == 2
    assert prom_mesh.prometheus is not None
    prom_mesh.prometheus.wait_for_targets(timeout=20)
    up = prom_mesh.promql('up{app="catalog",version="v1"}')
    assert sorted(labels["pod"] for labels, value in up if value == 1) == sorted(
        p.name for p in prom_mesh.find_pods("catalog", NS))


@needs_prometheus
def test_close_stops_prometheus_and_removes_its_dir():
    mesh = LocalMesh(namespace=NS, port=0, prometheus=True).start()
    server = mesh.prometheus
    assert server is not None and server.pid is not None and server.dir is not None
    pid, data = server.pid, server.dir
    assert not gone(pid) and data.is_dir()
    assert any("Server is ready to receive web requests" in line for line in
               wait_until(server.log.read, lambda lines: any("ready to receive" in x for x in lines), timeout=5))
    mesh.close()
    assert mesh.prometheus is None
    assert gone(pid), "prometheus still runs after close()"
    assert not data.exists()
    mesh.close()  # idempotent


@needs_prometheus
def test_lifecycle_and_admin_endpoints_are_off():
    """Nobody on this machine can stop, reload or wipe the mesh's Prometheus over HTTP."""
    with PrometheusServer() as server:
        server.start()
        assert server.pid is not None
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert not [a for a in cmdline if a.startswith((b"--web.enable-lifecycle", b"--web.enable-admin-api"))]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for path, answer in [("/-/quit", b"Lifecycle API is not enabled"),
                             ("/-/reload", b"Lifecycle API is not enabled"),
                             ("/api/v1/admin/tsdb/snapshot", b"admin APIs disabled"),
                             ("/api/v1/admin/tsdb/delete_series?match[]=up", b"admin APIs disabled")]:
            with pytest.raises(urllib.error.HTTPError) as refused:
                opener.open(urllib.request.Request(f"{server.url}{path}", data=b"", method="POST"), timeout=5)
            with refused.value as response:
                assert answer in response.read(), path
        assert server.running
        assert server.query_scalar("vector(1)") == 1  # still serving


@needs_prometheus
def test_a_query_after_prometheus_died_says_so_with_its_pid_status_and_log():
    mesh = LocalMesh(namespace=NS, port=0, seed=12, prometheus=True).start()  # the ingress gateway alone
    try:
        server = mesh.prometheus
        assert server is not None and server.pid is not None
        pid = server.pid
        wait_until(server.log.read, lambda lines: any("ready to receive" in x for x in lines), timeout=10)
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        lead = f"the mesh's Prometheus (pid {pid}) exited with status -9 (killed by SIGKILL); its log: "

        # at once, maybe before the process is reaped: a query noticing the refused connection says the same
        with pytest.raises(PrometheusExited) as direct:
            server.query("up")
        assert lead in str(direct.value)

        for fresh in (False, True):
            with pytest.raises(PrometheusExited) as err:
                mesh.promql('sum(istio_requests_total{reporter="destination"})', fresh=fresh)
            message = str(err.value)
            assert message.startswith("cannot run PromQL 'sum(istio_requests_total{reporter=\"destination\"})': "
                                      + lead), message
            assert "\n" not in message and "refused" not in message.lower()
            assert message.split("its log: ", 1)[1].strip() not in ("", "no output")

        # a PromQL step says it the same way, with the query
        world = World(MeshBackend(mesh), NS, ROOT / "manifests")
        with pytest.raises(ExpectationFailed) as failed:
            dsl_metrics.promql_at_least(world, "sum(up)", 1)
        assert "Prometheus could not run the PromQL" in str(failed.value) and lead in str(failed.value)
    finally:
        mesh.close()
    assert gone(pid)
