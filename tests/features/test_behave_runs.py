"""The features as a user runs them: behave in a subprocess, on the real manifests and on broken copies.

A broken manifest must make the matching scenario fail with a message that says what was expected,
what was seen and how sure the check is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.alpha import RANDOM_ALPHA

ROOT = Path(__file__).resolve().parents[2]
BEHAVE = [sys.executable, "-m", "behave", "--no-capture", "-f", "plain", "--no-timings"]


def behave(*args: str, manifests: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["-D", f"manifests={manifests}"] if manifests else []
    return subprocess.run([*BEHAVE, *extra, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture
def broken(tmp_path: Path):
    """A copy of manifests/ whose files the test may edit."""
    copy = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", copy)
    return copy


def test_canary_feature_alone_passes() -> None:
    run = behave("-D", f"alpha={RANDOM_ALPHA}", "features/canary.feature")  # Envoy's choices are not seeded
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 scenarios passed, 0 failed" in run.stdout


def test_mirror_that_routes_to_v2_fails_with_what_was_seen(broken: Path) -> None:
    vs = broken / "ch5/catalog-vs-v2-mirror.yaml"
    vs.write_text(vs.read_text().replace("subset: version-v1", "subset: version-v2"))
    run = behave("features/mirroring.feature", "-n", "mirrored traffic never reaches clients", manifests=broken)
    assert run.returncode == 1
    out = run.stdout
    assert "expected no response to contain $..imageUrl" in out
    assert "but 100 of 100 did" in out


def test_a_misrouted_canary_fails_with_the_test_and_its_confidence(broken: Path) -> None:
    vs = broken / "ch5/catalog-vs-v2-10-90-mesh.yaml"
    vs.write_text(vs.read_text().replace("weight: 90", "weight: 70").replace("weight: 10", "weight: 30"))
    run = behave("features/canary.feature", "-n", "10% of traffic goes to the canary", manifests=broken)
    assert run.returncode == 1
    out = run.stdout
    assert "binomial" in out and "p-value" in out and "0.01" in out, out[-3000:]


def test_dry_run_fails_on_an_undefined_step(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    shutil.copy(ROOT / "environment.py", tmp_path)
    (tmp_path / "features").mkdir()
    (tmp_path / "features/undefined.feature").write_text(
        "Feature: x\n  Scenario: y\n    Given the moon is made of cheese\n")
    run = subprocess.run([sys.executable, "-m", "behave", "--dry-run", "-f", "plain", "features"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "undefined" in (run.stdout + run.stderr).lower()


HIDDEN_503 = '''Feature: a pod that always answers 503
  Scenario: retries on the other pods hide the 503s from the clients
    Given the manifest "ch6/simple-backend.yaml" is applied
    And the manifest "ch6/simple-web.yaml" is applied
    And the manifest "ch6/simple-web-gateway.yaml" is applied
    And these resources are applied:
      """
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: simple-backend-2, labels: {app: simple-backend}}
      spec:
        replicas: 1
        selector: {matchLabels: {app: simple-backend, instance: simple-backend-2}}
        template:
          metadata: {labels: {app: simple-backend, instance: simple-backend-2}}
          spec:
            containers:
            - name: simple-backend
              image: nicholasjackson/fake-service:v0.14.1
              ports: [{containerPort: 8080, name: http}]
              env:
              - {name: LISTEN_ADDR, value: "0.0.0.0:8080"}
              - {name: NAME, value: simple-backend}
              - {name: ERROR_TYPE, value: http_error}
              - {name: ERROR_RATE, value: "1"}
              - {name: ERROR_CODE, value: "503"}
      """
    And clients call http://simple-web.istioinaction.io/ through the ingress gateway
    When 60 requests are sent
    Then at least 55 responses have status 200
    And no request was retried
'''


def test_hidden_retries_reach_the_console_and_the_summary_with_the_failing_step(tmp_path: Path) -> None:
    """Istio's default retry (on 503, to another host where Envoy finds one) hides a failing pod: clients see
    200, but the console says what was retried and hidden, `no request was retried` fails, and both the
    console and the run summary show that step with expected versus seen."""
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    shutil.copy(ROOT / "environment.py", tmp_path)
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "hidden.feature").write_text(HIDDEN_503)
    results = tmp_path / "allure-results"
    run = subprocess.run([sys.executable, "-m", "behave", "-f", "allure_behave.formatter:AllureFormatter", "-o",
                          str(results), "-f", "progress", "-D", f"manifests={ROOT / 'manifests'}", "features"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    console = run.stderr
    assert "failed at: And no request was retried  (features/hidden.feature:31)" in console, console[-3000:]
    assert "expected no request to be retried" in console and "requests were retried" in console
    assert "failures a retry hid from the clients: simple-backend-2 answered 503" in console
    assert "Traceback" not in console + run.stdout
    summary = subprocess.run([sys.executable, "-m", "meshlib.report.summary", str(results)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert summary.returncode == 1
    assert "failed at: And no request was retried" in summary.stdout, summary.stdout
    assert "expected no request to be retried" in summary.stdout
    assert "note: 60 requests through the ingress gateway:" in summary.stdout


BAD_INPUT = '''Feature: bad input in steps
  Scenario: a manifest outside the manifests folder
    Given the manifest "../../etc/hostname" is applied

  Scenario: nothing in flight
    Given requests are sent 0 at a time

  Scenario: a JSONPath that does not parse
    Given the catalog service runs v1
    And the webapp is exposed through the ingress gateway
    When 5 requests are sent from webapp to http://catalog.istioinaction/items
    Then no response contains "$[*"
'''


def test_bad_input_in_a_step_fails_it_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    shutil.copy(ROOT / "environment.py", tmp_path)
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "bad.feature").write_text(BAD_INPUT)
    run = subprocess.run([*BEHAVE, "-D", f"manifests={ROOT / 'manifests'}", "features"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 1 and "0 scenarios passed, 3 failed" in run.stdout, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "could not run the step: manifest path '../../etc/hostname' leads outside the manifests folder" in out
    assert "could not run the step: 0 requests at a time: use 1 to 1000 in flight" in out
    assert "could not run the step: invalid JSONPath '$[*'" in out
