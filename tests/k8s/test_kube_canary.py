"""A Flagger Canary's history on the kubernetes backend, by watching the resource through the API server
(tests/k8s/controlplane.py, Flagger's CRD from its Go module).

No Flagger runs here: the tests write the Canary's status through the status subresource as Flagger does (the
fields and condition messages of pkg/canary/status.go in github.com/fluxcd/flagger v1.36), set the weights of the
VirtualService Flagger would manage, and, for the behave run, serve a `flagger` pod's log (kwok's Logs) with lines in
Flagger's JSON format. What is tested is the backend's side: the watch, the history it builds, the steps over it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, install_crds, not_built_reason
from kwoktools import dynamic, kwok, once_kwok_knows, ready_pods, wait_for

from meshlib.errors import MeshlibError
from meshlib.kube.backend import KubernetesBackend
from meshlib.kube.cluster import Ref

NOT_BUILT = not_built_reason()
pytestmark = [pytest.mark.k8s, pytest.mark.skipif(NOT_BUILT is not None, reason=NOT_BUILT or "")]

ROOT = Path(__file__).resolve().parents[2]
CANARY_API = "flagger.app/v1beta1"
RELEASE = ROOT / "manifests" / "ch5" / "flagger" / "catalog-release.yaml"
CATALOG = ROOT / "manifests" / "services" / "catalog" / "kubernetes" / "catalog.yaml"
CONDITION = {  # Flagger's MakeStatusConditions: phase -> (status, message)
    "Initializing": ("Unknown", "New Deployment detected, starting initialization."),
    "Initialized": ("True", "Deployment initialization completed."),
    "Progressing": ("Unknown", "New revision detected, progressing canary analysis."),
    "Promoting": ("Unknown", "Canary analysis completed, starting primary rolling update."),
    "Finalising": ("Unknown", "Canary analysis completed, routing all traffic to primary."),
    "Succeeded": ("True", "Canary analysis completed successfully, promotion finished."),
    "Failed": ("False", "Canary analysis failed, Deployment scaled to zero."),
}
# a promotion as Flagger writes it: (phase, canaryWeight, iterations) per status write
PROMOTION = [("Initializing", 0, 0), ("Initialized", 0, 0), ("Progressing", 0, 0), ("Progressing", 10, 0),
             ("Progressing", 20, 0), ("Progressing", 30, 0), ("Progressing", 40, 0), ("Progressing", 50, 0),
             ("Promoting", 0, 0), ("Finalising", 0, 0), ("Succeeded", 0, 0)]


def backend(cp: ControlPlane, namespace: str, **kw: Any) -> KubernetesBackend:
    return KubernetesBackend(namespace, context="admin", allowed=("admin",), kubeconfig=cp.kubeconfig,
                             log_flush_wait=0, **kw)


def write_status(cp: ControlPlane, name: str, namespace: str, phase: str, weight: int, iterations: int = 0,
                 failed: int = 0) -> None:
    """What Flagger's syncCanaryStatus / setStatusPhase write: the status subresource, a fresh lastTransitionTime,
    and the Promoted condition for the phase."""
    d = dynamic(cp)
    canaries = d.resources.get(api_version=CANARY_API, kind="Canary")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, message = CONDITION[phase]
    d.request("patch", canaries.path(name=name, namespace=namespace) + "/status", body={"status": {
        "phase": phase, "canaryWeight": weight, "failedChecks": failed, "iterations": iterations,
        "lastTransitionTime": now,
        "conditions": [{"type": "Promoted", "status": status, "reason": phase, "message": message,
                        "lastUpdateTime": now, "lastTransitionTime": now}]}},
        content_type="application/merge-patch+json")


def set_routes(cp: ControlPlane, service: str, namespace: str, canary_weight: int) -> None:
    """The VirtualService Flagger manages for the Canary's service: primary and canary routes with their weights."""
    d = dynamic(cp)
    resource = d.resources.get(api_version="networking.istio.io/v1beta1", kind="VirtualService")
    d.server_side_apply(resource, body={
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {"hosts": [service], "http": [{"route": [
            {"destination": {"host": f"{service}-primary"}, "weight": 100 - canary_weight},
            {"destination": {"host": f"{service}-canary"}, "weight": canary_weight}]}]}},
        namespace=namespace, field_manager="flagger")


def canary_exists(cp: ControlPlane, name: str, namespace: str) -> bool:
    try:
        cp.api("GET", f"/apis/flagger.app/v1beta1/namespaces/{namespace}/canaries/{name}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


@pytest.fixture(scope="module")
def crds(cp: ControlPlane) -> None:
    install_crds(cp, cp.build.istio_crds)
    install_crds(cp, cp.build.flagger_crds)


def test_the_history_is_every_status_flagger_wrote_since_the_apply(cp: ControlPlane, crds: None) -> None:
    namespace = "canary-history"
    b = backend(cp, namespace)
    try:
        b.apply([CATALOG, RELEASE], namespace)
        assert b.canary_history("catalog-release", namespace) == []  # no status yet: Flagger has not seen it
        started = time.time()
        for phase, weight, iterations in PROMOTION:
            set_routes(cp, "catalog", namespace, weight)  # Flagger sets the routes, then writes the status
            write_status(cp, "catalog-release", namespace, phase, weight, iterations)
            time.sleep(0.05)
        points = wait_for("the last status in the history", lambda: (
            p if (p := b.canary_history("catalog-release", namespace)) and p[-1]["phase"] == "Succeeded" else None),
            timeout=30)
        assert [(p["phase"], p["canaryWeight"]) for p in points] == [(ph, w) for ph, w, _ in PROMOTION]
        assert [(p["primaryWeight"], p["routeCanaryWeight"]) for p in points] == [(100 - w, w) for _, w, _ in
                                                                                  PROMOTION]
        assert all(started <= p["started"] == p["time"] <= time.time() for p in points)
        assert [p["started"] for p in points] == sorted(p["started"] for p in points)
        assert points[-1]["conditions"][0]["message"] == CONDITION["Succeeded"][1]
        assert all(p["metrics"] == {} and p["failedChecks"] == 0 for p in points)

        # a write that changes nothing Flagger reports (here: metadata only) adds no point
        d = dynamic(cp)
        canaries = d.resources.get(api_version=CANARY_API, kind="Canary")
        d.patch(canaries, name="catalog-release", namespace=namespace, body={"metadata": {"annotations": {
            "touched": "yes"}}}, content_type="application/merge-patch+json")
        write_status(cp, "catalog-release", namespace, "Progressing", 10)  # a new revision: analysis again
        wait_for("the next status", lambda: len(b.canary_history("catalog-release", namespace)) == len(PROMOTION) + 1)
        time.sleep(0.5)
        assert len(b.canary_history("catalog-release", namespace)) == len(PROMOTION) + 1
        assert b.canary_status("catalog-release", namespace)["canaryWeight"] == 10

        with pytest.raises(MeshlibError, match="no Canary missing in namespace canary-history"):
            b.canary_history("missing", namespace)
    finally:
        b.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("meshlib-follow")], \
        "close() left a watch running"


def test_a_canary_the_run_did_not_apply_is_followed_from_the_first_read(cp: ControlPlane, crds: None) -> None:
    namespace = "canary-existing"
    cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    release = yaml.safe_load(RELEASE.read_text())
    cp.api("POST", f"/apis/flagger.app/v1beta1/namespaces/{namespace}/canaries", release)
    write_status(cp, "catalog-release", namespace, "Progressing", 20)
    b = backend(cp, namespace)
    try:
        first = b.canary_history("catalog-release", namespace)
        assert [(p["phase"], p["canaryWeight"]) for p in first] == [("Progressing", 20)]
        assert "primaryWeight" not in first[0]  # no VirtualService of Flagger's to read weights from
        write_status(cp, "catalog-release", namespace, "Failed", 0, failed=5)
        points = wait_for("the Failed status", lambda: (
            p if len(p := b.canary_history("catalog-release", namespace)) == 2 else None))
        assert [(p["phase"], p["failedChecks"]) for p in points] == [("Progressing", 0), ("Failed", 5)]
    finally:
        b.close()
    assert canary_exists(cp, "catalog-release", namespace), "the run deleted a Canary it did not apply"
    cp.api("DELETE", f"/api/v1/namespaces/{namespace}")


def test_closing_a_watch_ends_it_at_once_whenever_it_is_closed(cp: ControlPlane, crds: None) -> None:
    """A scenario's backend closes its watches when it ends: at any moment of a watch request (being made, or
    waiting for the next event), close() returns within a moment and leaves no thread behind."""
    b = backend(cp, "canary-close")
    try:
        for delay in (0.0, 0.0, 0.01, 0.05, 0.2, 0.5):
            seen: list[dict[str, Any] | None] = []
            following = b.cluster.follow(Ref(CANARY_API, "Canary", "nothing-here", "canary-close"), seen.append)
            time.sleep(delay)
            started = time.monotonic()
            following.close()
            assert following._thread is not None and not following._thread.is_alive(), delay
            assert time.monotonic() - started < 1.5, delay
            assert seen == [None] and following.errors == []  # it read the Canary was not there, and nothing failed
    finally:
        b.close()


# --- the canary steps in a behave run ------------------------------------------------------------------------------
FEATURE = """\
Feature: a Flagger canary on a cluster
  Scenario: Flagger promotes the new version step by step
    Given the manifest "services/catalog/kubernetes/catalog.yaml" is applied
    And the manifest "ch5/flagger/catalog-release.yaml" is applied
    When the canary catalog-release reaches Succeeded
    Then the canary catalog-release went through the phases Initialized, Progressing, Promoting, Finalising, Succeeded
    And the canary weight of catalog-release climbed 10, 20, 30, 40, 50
    And the canary catalog-release has weight 0
    And the canary catalog-release is Succeeded
    And the Flagger log of catalog-release shows "Promotion completed! Scaling down catalog.flagger-behave"
"""
FLAGGER = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: flagger, namespace: istio-system}
spec:
  selector: {matchLabels: {app: flagger}}
  template:
    metadata: {labels: {app: flagger}}
    spec:
      containers:
      - {name: flagger, image: ghcr.io/fluxcd/flagger:1.36.1}
"""


def flagger_line(message: str, canary: str) -> str:
    """One line of Flagger's log (zap's JSON encoder, as `kubectl logs deploy/flagger` shows it)."""
    return json.dumps({"level": "info", "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                       "caller": "controller/events.go:33", "msg": message, "canary": canary},
                      separators=(",", ":"))


@pytest.fixture
def flagger_pod(cp: ControlPlane, tmp_path: Path) -> Iterator[Path]:
    """A `flagger` Deployment in istio-system whose pod's log (kwok's Logs) is a file the test writes."""
    try:
        cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": "istio-system"}})
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise
    cp.api("POST", "/apis/apps/v1/namespaces/istio-system/deployments", yaml.safe_load(FLAGGER))
    log = tmp_path / "flagger.log"
    log.write_text("")
    delete = None
    try:
        pod = wait_for("flagger's pod", lambda: ready_pods(cp, "istio-system", "app%3Dflagger"))[0]
        delete = kwok(cp, "Logs", pod, {"logs": [{"containers": ["flagger"], "logsFile": str(log)}]}, "istio-system")
        probe = backend(cp, "flagger-probe")
        try:
            once_kwok_knows(lambda: probe.logs("flagger", "istio-system"))
        finally:
            probe.close()
        yield log
    finally:
        if delete is not None:
            delete()
        cp.api("DELETE", "/apis/apps/v1/namespaces/istio-system/deployments/flagger",
               {"propagationPolicy": "Foreground"})


def test_the_canary_steps_read_the_history_in_a_behave_run(cp: ControlPlane, crds: None, flagger_pod: Path,
                                                           tmp_path: Path) -> None:
    namespace = "flagger-behave"
    ref = f"catalog-release.{namespace}"
    project = tmp_path / "project"
    (project / "features").mkdir(parents=True)
    shutil.copytree(ROOT / "steps", project / "steps")
    shutil.copy(ROOT / "environment.py", project)
    (project / "features" / "canary.feature").write_text(FEATURE)
    cri = []

    def log(message: str) -> None:
        cri.append(f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')} stderr F {flagger_line(message, ref)}\n")
        flagger_pod.write_text("".join(cri))

    failures: list[BaseException] = []

    def flagger() -> None:
        """Flagger's side, once the run has applied the Canary: statuses and log lines of a promotion."""
        try:
            wait_for("the run's Canary", lambda: canary_exists(cp, "catalog-release", namespace), timeout=120)
            time.sleep(2.0)  # the run follows the Canary from its apply on; the wait step starts just after
            for phase, weight, iterations in PROMOTION:
                set_routes(cp, "catalog", namespace, weight)
                write_status(cp, "catalog-release", namespace, phase, weight, iterations)
                if phase == "Initialized":
                    log(f"Initialization done! catalog-release.{namespace}")
                elif phase == "Progressing" and weight:
                    log(f"Advance catalog-release.{namespace} canary weight {weight}")
                elif phase == "Succeeded":
                    log(f"Promotion completed! Scaling down catalog.{namespace}")
                time.sleep(0.3)
        except BaseException as exc:  # noqa: BLE001 (reported by the test below)
            failures.append(exc)

    writer = threading.Thread(target=flagger, daemon=True)
    writer.start()
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "behave", "-f", "plain", "--no-timings", "--no-capture",
         "-D", f"manifests={ROOT / 'manifests'}", "-D", "backend=kubernetes", "-D", f"kubeconfig={cp.kubeconfig}",
         "-D", "context=admin", "-D", "allowed_contexts=admin", "-D", f"namespace={namespace}"],
        cwd=project, env={**os.environ, "HOME": str(project)}, capture_output=True, text=True, timeout=300)
    writer.join(30)
    out = run.stdout + run.stderr
    assert not failures, failures
    assert run.returncode == 0 and "1 scenario passed, 0 failed" in run.stdout, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    print(f"behave with a canary on the kubernetes backend: {time.monotonic() - started:.1f}s")
