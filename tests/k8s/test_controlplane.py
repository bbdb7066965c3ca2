"""The test control plane is a real Kubernetes: Deployments become ReplicaSets and Pods that kwok runs on a fake
node, RBAC forbids what it should, and no process or temp dir outlives the harness, even when it is SIGKILLed."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from controlplane import POD_CIDR, REPO, ControlPlane, not_built_reason
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from meshlib.local.tempdirs import sweep_stale_dirs

NOT_BUILT = not_built_reason()
pytestmark = [pytest.mark.k8s, pytest.mark.skipif(NOT_BUILT is not None, reason=NOT_BUILT or "")]

NS = "meshlib-k8s-test"


def api_client(cp: ControlPlane, context: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cp.kubeconfig), context=context, persist_config=False)


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def test_a_deployment_becomes_available_with_pods_that_kwok_runs(cp: ControlPlane) -> None:
    admin = api_client(cp, "admin")
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    assert client.VersionApi(admin).get_code().git_version == cp.build.versions["kubernetes"]
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    labels = {"app": "orders", "version": "v1"}
    apps.create_namespaced_deployment(NS, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="orders-v1", labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="orders", image="example/orders:v1",
                    ports=[client.V1ContainerPort(container_port=8080, name="http")])])))))

    def available() -> client.V1Deployment | None:
        dep = apps.read_namespaced_deployment_status("orders-v1", NS)
        conditions = {c.type: c.status for c in dep.status.conditions or []}
        return dep if dep.status.available_replicas == 2 and conditions.get("Available") == "True" else None

    dep = wait_for("Deployment orders-v1 to be Available with 2 replicas", available)
    assert dep.status.ready_replicas == 2 and dep.status.updated_replicas == 2

    replica_sets = apps.list_namespaced_replica_set(NS, label_selector="app=orders").items
    assert len(replica_sets) == 1
    assert replica_sets[0].metadata.owner_references[0].name == "orders-v1"
    pods = core.list_namespaced_pod(NS, label_selector="app=orders").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.metadata.owner_references[0].name == replica_sets[0].metadata.name
        assert pod.spec.node_name == cp.node_names[0]  # placed by the real kube-scheduler
        assert pod.status.phase == "Running"  # and run by kwok
        assert pod.status.container_statuses[0].ready
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)

    # the controllers act on changes too: scaling down removes a pod
    apps.patch_namespaced_deployment_scale("orders-v1", NS, {"spec": {"replicas": 1}})
    wait_for("one pod left after scaling to 1", lambda: len(
        [p for p in core.list_namespaced_pod(NS, label_selector="app=orders").items
         if p.metadata.deletion_timestamp is None]) == 1)


def test_a_user_without_grants_is_forbidden(cp: ControlPlane) -> None:
    viewer = api_client(cp, "viewer")
    core, apps = client.CoreV1Api(viewer), client.AppsV1Api(viewer)
    with pytest.raises(ApiException) as listing:
        core.list_namespaced_pod("default")
    assert listing.value.status == 403
    status = json.loads(listing.value.body)
    assert status["reason"] == "Forbidden"
    assert f'User "{ControlPlane.VIEWER_USER}" cannot list resource "pods"' in status["message"]
    with pytest.raises(ApiException) as creating:
        apps.create_namespaced_deployment("default", client.V1Deployment(
            metadata=client.V1ObjectMeta(name="nope"),
            spec=client.V1DeploymentSpec(
                selector=client.V1LabelSelector(match_labels={"app": "nope"}),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "nope"}),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nope")])))))
    assert creating.value.status == 403
    # authenticated (403, not 401): the API server knows who it is
    review = client.AuthenticationV1Api(viewer).create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.username == ControlPlane.VIEWER_USER


def test_the_crd_files_are_there(cp: ControlPlane) -> None:
    istio = cp.build.istio_crds.read_text(encoding="utf-8")
    flagger = cp.build.flagger_crds.read_text(encoding="utf-8")
    assert "name: virtualservices.networking.istio.io" in istio
    assert "name: canaries.flagger.app" in flagger


def child_pids(pid: int) -> set[int]:
    """Every descendant of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        found |= kids
        todo.extend(kids)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead; it only waits for its (new) parent to reap it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_sigkilled_harness_takes_its_control_plane_with_it() -> None:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "k8s" / "controlplane.py")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops it"):
                break
        else:
            pytest.fail("the harness did not come up:\n" + "".join(lines))
        logs = next(Path(line.split(":", 1)[1].strip()) for line in lines if line.strip().startswith("logs:"))
        children = child_pids(proc.pid)
        assert len(children) >= 5, (children, lines)
        proc.kill()  # SIGKILL: no Python cleanup runs; the kernel's PDEATHSIG does
        proc.wait()
        wait_for("every control-plane process to exit", lambda: not any(alive(p) for p in children), timeout=30)
        sweep_stale_dirs()  # what the next harness start does first
        assert not logs.parent.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
