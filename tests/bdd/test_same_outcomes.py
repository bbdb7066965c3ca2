"""The same features, the same outcomes: a project as a user sets one up runs its features under behave and under
pytest-bdd (meshlib.bdd), each in a subprocess, on the real manifests. The same scenarios pass, fail and are
skipped, every step ends the same way, and the failing step's message (expected versus seen) is on both consoles.
The feature uses a doc string (Background) and a data table, so both adapters of behave's context are exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[2]

FEATURE = '''Feature: outcomes under behave and pytest-bdd

  Background:
    Given the manifest "services/catalog/kubernetes/catalog.yaml" is applied
    And these resources are applied:
      """
      apiVersion: networking.istio.io/v1beta1
      kind: Gateway
      metadata: {name: catalog-gateway}
      spec:
        selector: {istio: ingressgateway}
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts: ["catalog.istioinaction.io"]
      """
    And the manifest "ch5/catalog-vs.yaml" is applied

  Scenario: the catalog answers through the gateway
    When 20 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    Then every response has status 200
    And every response comes from catalog v1
    And responses split between catalog versions as:
      | version | share |
      | v1      | 100%  |

  Scenario: a release check that cannot hold
    When 20 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    Then every response has status 503

  @istio.version>=1.28
  Scenario: a check for newer profiles only
    When 5 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    Then every response has status 200
'''

CONFTEST = '''from meshlib.bdd import bind_steps, use_behave_settings

pytest_plugins = ["meshlib.bdd"]
bind_steps("steps")


def pytest_configure(config):
    use_behave_settings(config, "behave.ini")
'''

MESSAGE = ("expected every response to have status 503", "but saw 20 × 200")


def project(root: Path) -> Path:
    (root / "features").mkdir()
    (root / "features" / "outcomes.feature").write_text(FEATURE)
    (root / "steps").mkdir()
    (root / "steps" / "meshlib_steps.py").write_text("from meshlib.steps.all import *  # noqa: F403\n")
    (root / "environment.py").write_text("from meshlib.steps.environment import *  # noqa: F403\n")
    (root / "behave.ini").write_text("[behave]\npaths = features\n[behave.userdata]\nnamespace = istioinaction\n"
                                     f"manifests = {ROOT / 'manifests'}\nseed = 7\n")
    (root / "conftest.py").write_text(CONFTEST)
    (root / "test_features.py").write_text('from pytest_bdd import scenarios\n\nscenarios("features")\n')
    return root


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(root), "MESHLIB_STATE": str(root / "state" / "mesh.json")}
    return subprocess.run([sys.executable, "-m", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def outcome(case: ElementTree.Element) -> str:
    return next(({"failure": "failed", "error": "failed", "skipped": "skipped"}[child.tag] for child in case
                 if child.tag in ("failure", "error", "skipped")), "passed")


def steps_of(elements: list[dict]) -> dict[str, list[tuple[str, str | None]]]:
    return {e["name"]: [(s["name"], s.get("result", {}).get("status")) for s in e["steps"]]
            for e in elements if e.get("type") == "scenario"}


def test_behave_and_pytest_bdd_agree_on_every_scenario_and_step(tmp_path: Path) -> None:
    root = project(tmp_path)
    behave = run(root, "behave", "--no-capture", "--no-timings", "-f", "json", "-o", "behave.json", "-f", "plain")
    bdd = run(root, "pytest", "-p", "no:cacheprovider", "-rA", "--cucumberjson=bdd.json", "--junitxml=bdd.xml")
    assert behave.returncode == 1 and bdd.returncode == 1, behave.stdout[-2000:] + bdd.stdout[-3000:] + bdd.stderr

    behave_json = json.loads((root / "behave.json").read_text())[0]["elements"]
    behave_outcome = {e["name"]: e["status"] for e in behave_json if e.get("type") == "scenario"}
    bdd_outcome = {case.get("name").removeprefix("test_").replace("_", " "): outcome(case)
                   for case in ElementTree.parse(root / "bdd.xml").iter("testcase")}
    assert behave_outcome == {"the catalog answers through the gateway": "passed",
                              "a release check that cannot hold": "failed",
                              "a check for newer profiles only": "skipped"}, behave_outcome
    assert bdd_outcome == behave_outcome, bdd.stdout[-3000:]

    # every step of the scenarios that ran ended the same way (pytest-bdd's Cucumber JSON leaves out skipped ones)
    ran = steps_of(json.loads((root / "bdd.json").read_text())[0]["elements"])
    assert ran == {name: steps for name, steps in steps_of(behave_json).items() if behave_outcome[name] != "skipped"}
    assert ran["a release check that cannot hold"][-1] == ("every response has status 503", "failed")

    # the failing step and its message, on both consoles, without a traceback
    assert "features/outcomes.feature:28: failed at: Then every response has status 503" in bdd.stdout, bdd.stdout
    assert "failed at: Then every response has status 503  (features/outcomes.feature:28)" in behave.stderr
    for text in MESSAGE:
        assert text in behave.stdout and text in bdd.stdout, (text, behave.stdout[-2000:], bdd.stdout[-2000:])
    assert "needs Istio >= 1.28 (@istio.version>=1.28)" in bdd.stdout and "needs Istio >= 1.28" in behave.stderr
    assert "Traceback" not in behave.stdout + behave.stderr + bdd.stdout + bdd.stderr
