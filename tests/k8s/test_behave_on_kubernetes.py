"""The same feature files on the kubernetes backend: behave with -D backend=kubernetes against the test control
plane applies the walkthrough's manifests, predicts routes from them, and a step that needs what the cluster does not
have (here: an ingress gateway) fails with one line saying so (no traceback). Traffic through a gateway that is there:
tests/k8s/test_traffic.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from controlplane import ControlPlane, install_crds, not_built_reason

NOT_BUILT = not_built_reason()
pytestmark = [pytest.mark.k8s, pytest.mark.skipif(NOT_BUILT is not None, reason=NOT_BUILT or "")]

ROOT = Path(__file__).resolve().parents[2]
FEATURE = """\
Feature: the catalog on a cluster
  Scenario: the routes of what the run applied
    Given the manifest "services/catalog/kubernetes/catalog.yaml" is applied
    And the manifest "services/webapp/kubernetes/webapp.yaml" is applied
    And the manifest "ch5/catalog-dest-rule.yaml" is applied
    And the manifest "ch5/catalog-vs-v1-mesh.yaml" is applied
    Then the webapp sidecar's route for catalog goes to subset version-v1

  Scenario: a cluster without an ingress gateway
    Given the manifest "services/catalog/kubernetes/catalog.yaml" is applied
    And clients call catalog.istioinaction.io through the ingress gateway
    When 10 requests are sent to /items
    Then every response has status 200
"""


def behave(project: Path, cp: ControlPlane, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "behave", "-f", "plain", "--no-timings", "--no-capture",
         "-D", f"manifests={ROOT / 'manifests'}", "-D", "backend=kubernetes", "-D", f"kubeconfig={cp.kubeconfig}",
         "-D", "namespace=istioinaction", *extra],
        cwd=project, env={**os.environ, "HOME": str(project)}, capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    shutil.copy(ROOT / "environment.py", tmp_path)
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "cluster.feature").write_text(FEATURE)
    return tmp_path


def test_a_feature_runs_on_the_kubernetes_backend(cp: ControlPlane, project: Path) -> None:
    install_crds(cp, cp.build.istio_crds)
    run = behave(project, cp, "-D", "context=admin", "-D", "allowed_contexts=admin")
    out = run.stdout + run.stderr
    assert "1 scenario passed, 1 failed" in run.stdout, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert "could not run the step: no " in out and "Deployment istio-ingressgateway in namespace istio-system" in out
    assert ("; sending through the ingress gateway needs Istio's ingress gateway there, or -D gateway_url=URL where "
            "it answers") in out, out[-4000:]
    namespaces = cp.api("GET", "/api/v1/namespaces")["items"]
    assert "istioinaction" not in [n["metadata"]["name"] for n in namespaces if not n["metadata"].get(
        "deletionTimestamp")], "the run left its namespace behind"


def test_a_context_outside_the_allowlist_stops_the_run_in_one_line(cp: ControlPlane, project: Path) -> None:
    run = behave(project, cp, "-D", "context=admin", "-D", "allowed_contexts=kind-staging")
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert "context 'admin' is not in the allowlist (kind-staging)" in out, out[-3000:]
    assert "0 scenarios passed" in run.stdout or "passed" not in run.stdout, out[-3000:]
