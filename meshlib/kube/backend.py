"""The step library's `Backend` on a real Kubernetes cluster with Istio: manifests go in by server-side apply into
the run's namespace, each object labelled with the run, and `close()` removes exactly what the run created.

What the run may change: namespaced objects in its namespace (created, and removed at the end, if it did not exist;
labelled for injection). Cluster-scoped objects and other namespaces are refused at the step, with the reason.
Steps this backend cannot serve yet say "not supported on the kubernetes backend: …" instead of failing oddly.
"""

from __future__ import annotations

import copy
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlib.config.kinds import Resource
from meshlib.config.loader import Document, load_documents, parse_documents
from meshlib.config.store import ConfigStore
from meshlib.errors import MeshlibError
from meshlib.kube.cluster import Cluster, ClusterError, Ref
from meshlib.kube.contexts import connect
from meshlib.local.envoy.records import Served
from meshlib.profile import profile_for
from meshlib.traffic import Target
from meshlib.xds import ProxyConfig, build_proxy_config

RUN_LABEL = "meshlib.io/run"
INJECTION = {"istio-injection": "enabled"}
CANARY_API = "flagger.app/v1beta1"
ISTIOD = Ref("apps/v1", "Deployment", "istiod", "istio-system")
ROLLOUT_TIMEOUT = 180.0
NAMESPACE_TIMEOUT = 120.0
PROXY_CONTAINER = "istio-proxy"


class NotSupported(MeshlibError):
    def __init__(self, what: str) -> None:
        super().__init__(f"not supported on the kubernetes backend yet: {what}")


def istio_version_of(image: str) -> str | None:
    """`docker.io/istio/pilot:1.28.1` → `1.28`; None for a tag that is not a release."""
    match = re.search(r":(\d+)\.(\d+)(?:\.\d+)?(?:[-@]|$)", image)
    return f"{match.group(1)}.{match.group(2)}" if match else None


class KubernetesBackend:
    """A run's view of one cluster: its namespace, what it applied, and the API calls that read the rest."""

    name = "kubernetes"

    def __init__(self, namespace: str, *, context: str | None, allowed: tuple[str, ...],
                 kubeconfig: str | Path | None = None, istio_version: str | None = None,
                 rollout_timeout: float = ROLLOUT_TIMEOUT) -> None:
        target = connect(context, allowed, kubeconfig)
        self.context = target.context
        self.cluster = Cluster(target.api, target.server)
        self.namespace = namespace
        self.run_id = secrets.token_hex(6)
        self.rollout_timeout = rollout_timeout
        self.istio_version = istio_version or self._istiod_version()
        self._store = ConfigStore(profile_for(self.istio_version))
        self._created: list[Ref] = []
        self._owned_namespace = False
        self._ensure_namespace()

    # --- what the run may touch ----------------------------------------------------------------------
    def _istiod_version(self) -> str | None:
        istiod = self.cluster.get(ISTIOD)
        containers = ((istiod or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers") or []
        return next((v for c in containers if (v := istio_version_of(c.get("image") or ""))), None)

    def _ensure_namespace(self) -> None:
        """Create the run's namespace unless it exists; one still being deleted (an earlier run's, or the scenario
        before this one's) is waited for first, since nothing can be created in it."""
        ref = Ref("v1", "Namespace", self.namespace, None)

        def terminating() -> str | None:
            live = self.cluster.get(ref)
            phase = ((live or {}).get("status") or {}).get("phase")
            return f"namespace {self.namespace} is still being deleted" if phase == "Terminating" else None
        self.cluster.wait(f"namespace {self.namespace} to be usable", terminating, NAMESPACE_TIMEOUT)
        if self.cluster.get(ref) is None:
            self.cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": self.namespace, "labels": {**INJECTION, RUN_LABEL: self.run_id}}}, None)
            self._owned_namespace = True

    def _body(self, res: Resource) -> tuple[dict[str, Any], str | None]:
        if not self.cluster.namespaced(res.api_version, res.kind):
            raise MeshlibError(f"{res.source}: {res.kind} {res.name} is cluster-scoped: the kubernetes backend "
                               f"changes only objects in the run's namespace {self.namespace}")
        if res.namespace != self.namespace:
            raise MeshlibError(f"{res.source}: {res.kind} {res.name} is in namespace {res.namespace}: the "
                               f"kubernetes backend changes only the run's namespace {self.namespace}")
        body = copy.deepcopy(res.doc.data)
        meta = body.setdefault("metadata", {})
        meta["namespace"] = res.namespace
        meta["labels"] = {**(meta.get("labels") or {}), RUN_LABEL: self.run_id}
        return body, res.namespace

    def _ref(self, res: Resource) -> Ref:
        return Ref(res.api_version, res.kind, res.name, res.namespace)

    # --- Backend: manifests --------------------------------------------------------------------------
    @property
    def store(self) -> ConfigStore:
        return self._store

    @property
    def time_scale(self) -> float:
        return 1.0

    def apply(self, paths: list[Path], namespace: str) -> list[str]:
        return self._apply(load_documents(paths), namespace)

    def apply_text(self, text: str, namespace: str) -> list[str]:
        return self._apply(parse_documents(text, "<inline>"), namespace)

    def _apply(self, docs: list[Document], namespace: str) -> list[str]:
        resources = self._store.parse(docs, namespace)  # the same checks as the embedded mesh, before any request
        bodies = [self._body(res) for res in resources]
        for res, (body, ns) in zip(resources, bodies, strict=True):
            self.cluster.apply(body, ns)
            if self._ref(res) not in self._created:
                self._created.append(self._ref(res))
        self._store.apply_documents(docs, namespace)
        for res in resources:
            if res.kind == "Deployment":
                self._wait_available(self._ref(res))
        return [r.ref() for r in resources]

    def _wait_available(self, ref: Ref) -> None:
        def pending() -> str | None:
            dep = self.cluster.get(ref) or {}
            meta, spec, status = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
            want = spec.get("replicas", 1)
            if status.get("observedGeneration", 0) < meta.get("generation", 1):
                return "the controller has not seen the new spec"
            updated = status.get("updatedReplicas", 0)
            available = status.get("availableReplicas", 0)
            if updated >= want and available >= want:
                return None
            conditions = "; ".join(f"{c.get('type')}={c.get('status')} {c.get('message') or ''}".strip()
                                   for c in status.get("conditions") or [])
            return f"{available}/{want} available, {updated} updated ({conditions or 'no conditions yet'})"
        self.cluster.wait(f"{ref} to roll out", pending, self.rollout_timeout)

    def delete(self, paths: list[Path], namespace: str) -> list[str]:
        docs = load_documents(paths)
        resources = self._store.parse(docs, namespace)
        for res in resources:
            self._delete_ours(self._ref(res))
        self._store.delete_documents(docs, namespace)
        return [r.ref() for r in resources]

    def _delete_ours(self, ref: Ref) -> None:
        live = self.cluster.get(ref)
        if live is None:
            return
        labels = (live.get("metadata") or {}).get("labels") or {}
        if labels.get(RUN_LABEL) != self.run_id:
            raise MeshlibError(f"{ref} was not created by this run (label {RUN_LABEL}): the kubernetes backend "
                               "deletes only what it applied")
        self.cluster.delete(ref)
        if ref in self._created:
            self._created.remove(ref)

    def delete_kind(self, kind: str, namespace: str) -> int:
        mine = [r for r in self._created if r.kind == kind and r.namespace == namespace]
        for ref in mine:
            self._delete_ours(ref)
            self._store.delete(kind, namespace, ref.name)
        return len(mine)

    def close(self) -> None:
        """Remove what the run created (newest first), then its namespace if the run made it."""
        errors: list[str] = []
        for ref in reversed(self._created):
            try:
                self.cluster.delete(ref)
            except ClusterError as exc:
                errors.append(str(exc))
        self._created.clear()
        if self._owned_namespace:
            try:
                self.cluster.delete(Ref("v1", "Namespace", self.namespace, None))
            except ClusterError as exc:
                errors.append(str(exc))
            self._owned_namespace = False
        if errors:
            raise ClusterError(f"cleaning up the run's objects: {errors[0]}"
                               + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))

    # --- Backend: reading ----------------------------------------------------------------------------
    def canary_status(self, name: str, namespace: str) -> dict[str, Any]:
        live = self.cluster.get(Ref(CANARY_API, "Canary", name, namespace))
        if live is None:
            raise MeshlibError(f"no Canary {name} in namespace {namespace}")
        return dict(live.get("status") or {})

    def logs(self, workload: str, namespace: str, container: str | None = None,
             since: datetime | None = None) -> list[str]:
        dep = self.cluster.get(Ref("apps/v1", "Deployment", workload, namespace))
        if dep is None:
            raise MeshlibError(f"no Deployment {workload} in namespace {namespace}")
        match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        seconds = None if since is None else max(1, int((datetime.now(UTC) - since).total_seconds()) + 1)
        lines: list[str] = []
        for pod in self.cluster.list("v1", "Pod", namespace, selector):
            names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
            name = container or next((n for n in names if n != PROXY_CONTAINER), PROXY_CONTAINER)
            text = self.cluster.pod_log(pod["metadata"]["name"], namespace, name, seconds)
            lines += text.splitlines()
        return lines

    def proxy_config(self, workload: str, namespace: str) -> ProxyConfig:
        """meshlib's own translation of what the run applied: a prediction of what istiod sends, not a reading."""
        found = self._store.workload(workload, namespace)
        if found is None:
            raise MeshlibError(f"no Deployment {workload} in namespace {namespace} among the manifests this run "
                               "applied")
        return build_proxy_config(self._store, found)

    def echoed_hosts(self) -> dict[str, int]:
        return {}  # a cluster's external hosts are the real ones

    def settle(self) -> None:
        return None

    # --- not yet ------------------------------------------------------------------------------------
    def gateway(self, host: str, path: str) -> Target:
        raise NotSupported("sending requests through the ingress gateway")

    def from_workload(self, workload: str, namespace: str, url: str) -> Target:
        raise NotSupported(f"sending requests from {workload} (exec in a client pod)")

    def served(self, request_id: str) -> list[Served]:
        raise NotSupported("telling which pod served a request (from the sidecars' access logs)")

    def config_dump(self, workload: str, namespace: str) -> dict[str, Any]:
        raise NotSupported(f"reading the Envoy config of {workload}'s proxy (its admin /config_dump)")

    def metrics_text(self, workload: str, namespace: str) -> str:
        raise NotSupported(f"reading the metrics of {workload}'s proxies")

    def canary_history(self, name: str, namespace: str) -> list[dict[str, Any]]:
        raise NotSupported(f"the analysis history of Canary {name} (watching its status over time)")
