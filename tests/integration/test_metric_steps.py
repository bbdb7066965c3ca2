"""The metric step functions (meshlib.dsl.metrics) against the real embedded mesh, with and without Prometheus.

Builtin checks read the sidecars' own counters since the last batch started; PromQL checks run on the mesh's
real Prometheus and, without it, fail saying what to install. A behave run on a machine without Prometheus
(PATH emptied) reports `@needs.prometheus` scenarios as skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshlib.backend import LocalBackend
from meshlib.dsl import deploy, metrics, responses, sending
from meshlib.dsl.world import World
from meshlib.expect import ExpectationFailed
from meshlib.local.mesh import LocalMesh

ROOT = Path(__file__).resolve().parents[2]
NS = "istioinaction"
BASE = ["services/catalog/kubernetes/catalog.yaml", "services/webapp/kubernetes/webapp.yaml",
        "ch5/webapp-catalog-gw-vs.yaml"]
WEBAPP = "webapp.istioinaction.io"
CATALOG_REQUESTS = 'sum(istio_requests_total{reporter="destination", destination_workload="catalog"})'
FLAGGER_SUCCESS = ('sum(rate(istio_requests_total{reporter="destination", destination_workload="catalog", '
                   'response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination", '
                   'destination_workload="catalog"}[1m])) * 100')
BLOWUP_V2 = """apiVersion: apps/v1
kind: Deployment
metadata: {name: catalog-v2, labels: {app: catalog, version: v2}}
spec:
  selector: {matchLabels: {app: catalog, version: v2}}
  template:
    metadata: {labels: {app: catalog, version: v2}}
    spec:
      containers:
      - name: catalog
        image: istioinaction/catalog:latest
        env: [{name: BLOWUP_MODE, value: "500"}, {name: BLOWUP_PERCENTAGE, value: "100"}]
        ports: [{containerPort: 3000}]
"""
needs_prometheus_binary = pytest.mark.skipif(shutil.which("prometheus") is None,
                                             reason="no prometheus binary (apt-get install prometheus)")


class MeshBackend(LocalBackend):
    """LocalBackend over a mesh started here (to choose prometheus=False)."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh


def make_world(prometheus: bool | None) -> World:
    mesh = LocalMesh(namespace=NS, port=0, seed=5, prometheus=prometheus).start()
    evidence: list[tuple[str, str, str]] = []
    w = World(MeshBackend(mesh), NS, ROOT / "manifests", evidence=lambda *e: evidence.append(e))
    w.recorded = evidence  # type: ignore[attr-defined]
    deploy.apply_manifests(w, BASE)
    return w


@pytest.fixture
def builtin_world():
    w = make_world(prometheus=False)
    try:
        yield w
    finally:
        w.stop_background()
        w.backend.close()


@pytest.fixture
def prom_world():
    w = make_world(prometheus=True)
    try:
        yield w
    finally:
        w.stop_background()
        w.backend.close()


def evidence_names(world: World) -> list[str]:
    return [name for name, _, _ in world.recorded]  # type: ignore[attr-defined]


def test_builtin_checks_count_from_the_last_batch_without_prometheus(builtin_world, monkeypatch):
    world = builtin_world
    monkeypatch.setattr(metrics, "SETTLE_SECONDS", 0.3)
    assert not metrics.has_prometheus(world)
    with pytest.raises(ExpectationFailed, match="traffic in this scenario before a metric check"):
        metrics.received(world, "catalog", 0)

    sending.through_gateway(world, 30, "/api/catalog", WEBAPP)
    responses.every_status(world, 200)
    assert metrics.received(world, "catalog", 30) == 30
    assert metrics.received(world, "webapp", 30) == 30
    with pytest.raises(ExpectationFailed, match=r"catalog to receive 29 requests .*\n\s+but its sidecars counted 30"):
        metrics.received(world, "catalog", 29)
    assert metrics.success_rate_at_least(world, "catalog", 1.0) == 100.0
    with pytest.raises(ExpectationFailed, match=r"success rate of catalog to be below 99%\n\s+but it is 100.00%"):
        metrics.success_rate_below(world, "catalog", 0.99)
    with pytest.raises(ExpectationFailed, match="no values found"):
        metrics.success_rate_at_least(world, "catalog-primary", 0.99)  # anchored, as Flagger's regex
    p99 = metrics.latency_at_most(world, "catalog", 0.99, 1000)
    assert 0 < p99 <= 1000
    with pytest.raises(ExpectationFailed, match=r"p99 latency of catalog to be at most 0 ms\n\s+but it is"):
        metrics.latency_at_most(world, "catalog", 0.99, 0)
    assert metrics.requests_grew(world, "destination_version", "v1", 30) == 30
    with pytest.raises(ExpectationFailed, match=r"grow by at least 31\n\s+but it grew by 30 .*\(0 → 30\)"):
        metrics.requests_grew(world, "destination_version", "v1", 31)
    with pytest.raises(ValueError, match="not a metric label name"):
        metrics.requests_grew(world, "destination-version", "v1", 1)

    sending.through_gateway(world, 5, "/api/catalog", WEBAPP)  # a new batch: a new window
    assert metrics.received(world, "catalog", 5) == 5
    assert metrics.requests_grew(world, "destination_workload", "catalog", 5) == 5
    text = dict((name, body) for name, body, _ in world.recorded)["istio_requests_total destination_workload=catalog"]
    assert "<td>when the traffic started</td><td class=\"n\">30</td>" in text and "the proxies' own counters" in text
    assert "success rate of catalog" in evidence_names(world)


def test_a_failing_version_lowers_its_success_rate(builtin_world):
    world = builtin_world
    deploy.apply_yaml(world, BLOWUP_V2)
    sending.through_gateway(world, 40, "/api/catalog", WEBAPP)
    assert metrics.success_rate_below(world, "catalog-v2", 0.99) == 0.0
    assert metrics.success_rate_at_least(world, "catalog", 0.99) == 100.0
    with pytest.raises(ExpectationFailed) as err:
        metrics.success_rate_at_least(world, "catalog-v2", 0.99)
    text = str(err.value)
    assert "success rate of catalog-v2 to be at least 99%" in text and "but it is 0.00%" in text
    assert "500" in text and "response code" in text  # the table of what it answered
    assert metrics.success_rate_below(world, "catalog|catalog-v2", 0.99) < 99  # a regex, as in Flagger


def test_promql_steps_fail_without_prometheus_and_say_what_to_install(builtin_world):
    world = builtin_world
    for check in (lambda: metrics.promql_at_least(world, CATALOG_REQUESTS, 1),
                  lambda: metrics.promql_at_most(world, CATALOG_REQUESTS, 1),
                  lambda: metrics.prometheus_scrapes_every_proxy(world)):
        with pytest.raises(ExpectationFailed) as err:
            check()
        text = str(err.value)
        assert "this step needs Prometheus (apt-get install prometheus)" in text
        assert "prometheus=False" in text and "@needs.prometheus" in text


@needs_prometheus_binary
def test_promql_checks_on_the_real_prometheus(prom_world):
    world = prom_world
    assert metrics.has_prometheus(world)
    metrics.prometheus_scrapes_every_proxy(world)
    sending.for_duration(world, 2.0, "/api/catalog", WEBAPP, rate=20)
    sent = len(world.responses)
    responses.every_status(world, 200)

    assert metrics.requests_grew(world, "destination_version", "v1", sent) == sent
    grew = dict((name, body) for name, body, _ in world.recorded)["istio_requests_total destination_version=v1"]
    assert 'Prometheus: sum(istio_requests_total{reporter="destination",destination_version="v1"})' in grew
    assert metrics.promql_at_least(world, CATALOG_REQUESTS, sent) == sent
    assert metrics.promql_at_least(world, FLAGGER_SUCCESS, 99) == 100
    with pytest.raises(ExpectationFailed, match=rf"PromQL to be at most {sent - 1}\n\s+but it is {sent}"):
        metrics.promql_at_most(world, CATALOG_REQUESTS, sent - 1)
    with pytest.raises(ExpectationFailed, match="it has no value"):
        metrics.promql_at_least(world, 'sum(istio_requests_total{destination_workload="catalog-primary"})', 1)
    with pytest.raises(ExpectationFailed, match=r"(?s)it gives \d+ series.*aggregate them"):
        metrics.promql_at_least(world, "istio_requests_total", 1)
    with pytest.raises(ExpectationFailed, match="(?s)Prometheus could not run the PromQL.*parse error"):
        metrics.promql_at_least(world, "sum(rate(istio_requests_total[1m])", 1)
    kinds = {name: (kind, body) for name, body, kind in world.recorded}  # type: ignore[attr-defined]
    kind, body = kinds[f"PromQL {CATALOG_REQUESTS}"]
    assert kind == "html" and CATALOG_REQUESTS in body and f'<td class="n">{sent}</td>' in body


def _behave(cwd: Path, *args: str, path: str, fmt: str = "progress") -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "behave", "-f", fmt, "--no-timings",
                           "-D", f"manifests={ROOT / 'manifests'}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_prometheus_tagged_scenarios_are_skipped_with_the_reason_and_untagged_ones_fail(tmp_path):
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    shutil.copy(ROOT / "environment.py", tmp_path)
    (tmp_path / "features").mkdir()
    promql = f"Then the PromQL `{CATALOG_REQUESTS}` is at least 1"
    (tmp_path / "features/m.feature").write_text(
        "Feature: metrics without Prometheus\n"
        "  Background:\n"
        "    Given the catalog service runs v1\n"
        "  @needs.prometheus\n"
        f"  Scenario: tagged\n    {promql}\n"
        "  Scenario: untagged\n"
        f"    {promql}\n")
    no_prometheus = str(Path(sys.executable).parent)  # only the venv's tools: no prometheus binary
    tagged = _behave(tmp_path, "-n", "^tagged$", path=no_prometheus)
    assert tagged.returncode == 0, tagged.stdout + tagged.stderr
    assert "0 scenarios passed, 0 failed, 2 skipped" in tagged.stdout  # untagged one is not selected by -n
    assert ("1 scenario(s) skipped:\n  features/m.feature:5  tagged: needs Prometheus: install Debian's prometheus "
            "package") in tagged.stderr
    assert "features/m.feature:5  tagged" in tagged.stderr

    untagged = _behave(tmp_path, "-n", "^untagged$", path=no_prometheus, fmt="plain")
    assert untagged.returncode == 1
    assert "this step needs Prometheus (apt-get install prometheus)" in untagged.stdout
    assert "@needs.prometheus" in untagged.stdout
