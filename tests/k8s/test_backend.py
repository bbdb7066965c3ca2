"""The Kubernetes backend against a real API server (tests/k8s/controlplane.py): the allowlist, server-side apply
into the run's namespace, rollouts, CRDs, RBAC, conflicts, and a cleanup that removes only what the run made."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from controlplane import ControlPlane, install_crds, not_built_reason
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from meshlib.errors import MeshlibError
from meshlib.kube.backend import RUN_LABEL, KubernetesBackend
from meshlib.kube.cluster import ClusterError

NOT_BUILT = not_built_reason()
pytestmark = [pytest.mark.k8s, pytest.mark.skipif(NOT_BUILT is not None, reason=NOT_BUILT or "")]

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "manifests" / "services" / "catalog" / "kubernetes" / "catalog.yaml"
CATALOG_VS = REPO / "manifests" / "ch5" / "catalog-vs-v1-mesh.yaml"
ALLOWED = ("admin", "viewer")


def admin(cp: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cp.kubeconfig), context="admin", persist_config=False)


def backend(cp: ControlPlane, namespace: str, context: str = "admin", **kw) -> KubernetesBackend:
    return KubernetesBackend(namespace, context=context, allowed=ALLOWED, kubeconfig=cp.kubeconfig, **kw)


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)
    return value


def gone(read) -> bool:
    try:
        read()
    except client.exceptions.ApiException as exc:
        return exc.status == 404
    return False


def test_a_context_outside_the_allowlist_is_refused_before_any_request(cp: ControlPlane) -> None:
    with pytest.raises(MeshlibError) as err:
        KubernetesBackend("ns", context="admin", allowed=("kind-staging",), kubeconfig=cp.kubeconfig)
    assert "context 'admin' is not in the allowlist (kind-staging)" in str(err.value)
    with pytest.raises(MeshlibError, match="needs an allowlist of contexts"):
        KubernetesBackend("ns", context="admin", allowed=(), kubeconfig=cp.kubeconfig)
    with pytest.raises(MeshlibError, match="has no context 'prod'; it has: admin, viewer"):
        KubernetesBackend("ns", context="prod", allowed=("prod",), kubeconfig=cp.kubeconfig)


def test_an_unreachable_api_server_is_one_line(cp: ControlPlane, tmp_path: Path) -> None:
    kubeconfig = yaml.safe_load(cp.kubeconfig.read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = "https://127.0.0.1:9"  # discard: nothing listens
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    with pytest.raises(ClusterError) as err:
        KubernetesBackend("ns", context="admin", allowed=ALLOWED, kubeconfig=path)
    message = str(err.value)
    assert "cannot reach the Kubernetes API at https://127.0.0.1:9" in message and "\n" not in message, message


def test_a_user_without_rights_is_told_what_was_forbidden(cp: ControlPlane) -> None:
    with pytest.raises(ClusterError) as err:
        backend(cp, "viewer-ns", context="viewer")
    message = str(err.value)
    assert "forbidden" in message and ControlPlane.VIEWER_USER in message and "\n" not in message, message


def test_apply_rolls_out_into_a_new_namespace_and_close_removes_it(cp: ControlPlane) -> None:
    core, apps = client.CoreV1Api(admin(cp)), client.AppsV1Api(admin(cp))
    b = backend(cp, "istioinaction")
    try:
        ns = core.read_namespace("istioinaction")
        assert ns.metadata.labels["istio-injection"] == "enabled" and ns.metadata.labels[RUN_LABEL] == b.run_id
        applied = b.apply([CATALOG], "istioinaction")
        assert applied == ["ServiceAccount/catalog.istioinaction", "Service/catalog.istioinaction",
                           "Deployment/catalog.istioinaction"]
        dep = apps.read_namespaced_deployment_status("catalog", "istioinaction")  # apply returned after rollout
        assert dep.status.available_replicas == dep.spec.replicas == 1
        assert dep.metadata.labels[RUN_LABEL] == b.run_id
        managers = {m.manager for m in dep.metadata.managed_fields}
        assert "meshlib" in managers
        assert b.store.find_service("catalog.istioinaction.svc.cluster.local") is not None
        assert b.proxy_config("catalog", "istioinaction").proxy_id == "deploy/catalog.istioinaction"
    finally:
        b.close()
    wait_for("namespace istioinaction to go", lambda: gone(lambda: core.read_namespace("istioinaction")), 90)


def test_in_an_existing_namespace_close_removes_only_what_the_run_applied(cp: ControlPlane, tmp_path: Path) -> None:
    core = client.CoreV1Api(admin(cp))
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="shared")))
    core.create_namespaced_config_map("shared", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="keep"),
                                                                   data={"owner": "someone else"}))
    keep = tmp_path / "keep.yaml"
    keep.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\n")
    b = backend(cp, "shared")
    try:
        b.apply([CATALOG], "shared")
        with pytest.raises(MeshlibError, match="ConfigMap keep in namespace shared was not created by this run"):
            b.delete([keep], "shared")
    finally:
        b.close()
    wait_for("the run's Deployment to go", lambda: gone(
        lambda: client.AppsV1Api(admin(cp)).read_namespaced_deployment("catalog", "shared")))
    assert gone(lambda: core.read_namespaced_service("catalog", "shared"))
    assert core.read_namespaced_config_map("keep", "shared").data == {"owner": "someone else"}
    assert core.read_namespace("shared").status.phase == "Active"


def test_objects_outside_the_runs_namespace_are_refused(cp: ControlPlane) -> None:
    b = backend(cp, "fenced")
    try:
        with pytest.raises(MeshlibError) as cluster_scoped:
            b.apply_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: elsewhere}\n", "fenced")
        assert "<inline>:1: Namespace elsewhere is cluster-scoped" in str(cluster_scoped.value)
        with pytest.raises(MeshlibError) as other:
            b.apply_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n", "fenced")
        assert "is in namespace kube-system: the kubernetes backend changes only the run's namespace fenced" in str(
            other.value)
        assert gone(lambda: client.CoreV1Api(admin(cp)).read_namespace("elsewhere"))
    finally:
        b.close()


def test_a_field_another_manager_owns_is_a_conflict_not_an_overwrite(cp: ControlPlane) -> None:
    b = backend(cp, "conflicts")
    try:
        other = DynamicClient(admin(cp)).resources.get(api_version="v1", kind="ConfigMap")
        DynamicClient(admin(cp)).server_side_apply(other, body={
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "conflicts"},
            "data": {"mode": "theirs"}}, namespace="conflicts", field_manager="helm")
        with pytest.raises(ClusterError) as err:
            b.apply_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: ours}\n",
                         "conflicts")
        message = str(err.value)
        assert "apply ConfigMap settings in namespace conflicts" in message and "conflict" in message.lower()
        assert "helm" in message and "\n" not in message, message
        data = client.CoreV1Api(admin(cp)).read_namespaced_config_map("settings", "conflicts").data
        assert data == {"mode": "theirs"}
    finally:
        b.close()


def test_istio_kinds_need_their_crds_and_a_canary_status_is_read(cp: ControlPlane) -> None:
    b = backend(cp, "crds")
    try:
        b.apply([CATALOG], "crds")
        with pytest.raises(ClusterError) as err:
            b.apply([CATALOG_VS], "crds")
        assert "does not know VirtualService (networking.istio.io/" in str(err.value)
        assert "install Istio" in str(err.value)
        assert b.store.get("VirtualService", "crds", "catalog") is None  # nothing half-applied in the store
        install_crds(cp, cp.build.istio_crds)
        assert b.apply([CATALOG_VS], "crds") == ["VirtualService/catalog.crds"]
        assert b.store.get("VirtualService", "crds", "catalog") is not None

        install_crds(cp, cp.build.flagger_crds)
        b.apply_text("""\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: catalog}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: catalog}
  service: {port: 80}
  analysis: {interval: 10s, threshold: 5, stepWeight: 10, maxWeight: 50}
""", "crds")
        with pytest.raises(MeshlibError, match="no Canary missing in namespace crds"):
            b.canary_status("missing", "crds")
        dynamic = DynamicClient(admin(cp))
        canaries = dynamic.resources.get(api_version="flagger.app/v1beta1", kind="Canary")
        dynamic.request("patch", canaries.path(name="catalog", namespace="crds") + "/status",
                        body={"status": {"phase": "Progressing", "canaryWeight": 10, "failedChecks": 0}},
                        content_type="application/merge-patch+json")  # as Flagger writes it
        status = b.canary_status("catalog", "crds")
        assert (status["phase"], status["canaryWeight"]) == ("Progressing", 10)
    finally:
        b.close()


def test_apply_waits_for_every_pod_with_a_sidecar_to_be_ready(cp: ControlPlane) -> None:
    """Istio's sidecar is Ready once Envoy has istiod's first configuration: an apply returns when every pod of the
    namespace with a sidecar is Ready, and says which are not when they do not become so."""
    pod = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  {placement}
  containers:
  - {{name: app, image: example/app:v1}}
{sidecar}"""
    sidecar = "  - {name: istio-proxy, image: docker.io/istio/proxyv2:1.28.1}\n"
    nowhere = "nodeSelector: {meshlib.io/nowhere: 'true'}"  # no node has it: the pod stays Pending
    core = client.CoreV1Api(admin(cp))
    b = backend(cp, "sidecars-ready", rollout_timeout=3)
    try:
        # a pod without a sidecar is not waited for
        started = time.monotonic()
        b.apply_text(pod.format(name="plain", placement=nowhere, sidecar=""), "sidecars-ready")
        assert time.monotonic() - started < 3
        assert core.read_namespaced_pod("plain", "sidecars-ready").status.phase == "Pending"
        # one with a sidecar is, until it is Ready
        b.apply_text(pod.format(name="meshed", placement="nodeName: kwok-node-0", sidecar=sidecar), "sidecars-ready")
        conditions = core.read_namespaced_pod("meshed", "sidecars-ready").status.conditions or []
        assert any(c.type == "Ready" and c.status == "True" for c in conditions)
        # one that never becomes Ready: the apply fails, naming it and why
        with pytest.raises(ClusterError) as err:
            b.apply_text(pod.format(name="stuck", placement=nowhere, sidecar=sidecar), "sidecars-ready")
        message = str(err.value)
        assert message.startswith("the pods with a sidecar in namespace sidecars-ready to be Ready: not done after "
                                  "3s: 1 not ready: stuck Pending (Unschedulable)"), message
        assert "\n" not in message
    finally:
        b.close()


def test_what_the_backend_serves_and_what_it_says_it_cannot(cp: ControlPlane) -> None:
    install_crds(cp, cp.build.flagger_crds)
    b = backend(cp, "unsupported", prometheus=("no-prometheus", "istio-system", 9090))
    try:
        with pytest.raises(MeshlibError, match="no Canary catalog in namespace unsupported"):
            b.canary_history("catalog", "unsupported")
        assert b.echoed_hosts() == {}  # a cluster's external hosts are the real ones
        assert not b.has_prometheus()
    finally:
        b.close()
