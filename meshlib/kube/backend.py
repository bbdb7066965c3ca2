"""The step library's `Backend` on a real Kubernetes cluster with Istio: manifests go in by server-side apply into
the run's namespace, each object labelled with the run, and `close()` removes exactly what the run created.

What the run may change: namespaced objects in its namespace (created, and removed at the end, if it did not exist;
labelled for injection), and a Telemetry resource there that turns the sidecars' access logs on (when Istio's CRDs
are installed). Cluster-scoped objects and other namespaces are refused at the step, with the reason.

After an apply, Deployments are waited for until Available, then every pod of the namespace with a sidecar until
Ready (Istio's sidecar is Ready once Envoy has its first configuration from istiod), then, when istiod answers
/debug/syncz, until every running proxy whose configuration the apply changes (meshlib's own translation, before
and after, says which) has had a push from istiod since the apply and acknowledged it (`meshlib.kube.xdssync`); a
push Envoy rejected is an error naming the proxy and Envoy's reason.

Traffic: through the ingress gateway at `gateway_url` when the user has one (NodePort, LoadBalancer, a port-forward
of their own), else through a local port whose every connection is a port-forward to a ready pod of the gateway's
Deployment (`cluster.LocalForward`); from inside the mesh as one `curl` exec per batch in a pod of the client
workload (`meshlib.kube.curl`). Which pod served a request comes from the destination sidecars' access logs, read
at `settle()` (`meshlib.kube.accesslogs`); Envoy's config dump and metrics from each pod's admin and merged-metrics
ports over port-forward; the builtin metric checks from those merged metrics (`meshlib.kube.counters`); PromQL from
the cluster's Prometheus (`meshlib.kube.prometheus`); a Canary's history by watching it (`meshlib.kube.canary`).
What this backend cannot do is refused at the step in one line (a cluster-scoped object, another namespace, a
duration-based batch from a pod), never a crash.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlib.config.kinds import Resource
from meshlib.config.loader import Document, load_documents, parse_documents
from meshlib.config.store import ConfigStore
from meshlib.errors import MeshlibError
from meshlib.kube import curl
from meshlib.kube import pods as podinfo
from meshlib.kube.accesslogs import ServedIndex
from meshlib.kube.canary import CanaryHistory, Routes, flagger_routes, service_name
from meshlib.kube.cluster import Cluster, ClusterError, Following, LocalForward, NotFound, Ref
from meshlib.kube.contexts import connect
from meshlib.kube.counters import Reading, SidecarCounters, parse_counters
from meshlib.kube.pods import PROXY_CONTAINER
from meshlib.kube.prometheus import SERVICE as PROMETHEUS
from meshlib.kube.prometheus import ClusterPrometheus
from meshlib.kube.xdssync import ProxySync, parse_syncz, rejected, unsynced
from meshlib.local.envoy.records import Served
from meshlib.local.prometheus import Sample
from meshlib.profile import profile_for
from meshlib.traffic import Plan, Response, Target
from meshlib.xds import ProxyConfig, build_proxy_config

RUN_LABEL = "meshlib.io/run"
INJECTION = {"istio-injection": "enabled"}
CANARY_API = "flagger.app/v1beta1"
ISTIOD = Ref("apps/v1", "Deployment", "istiod", "istio-system")
ISTIOD_PODS = "app=istiod"
ISTIOD_MONITORING_PORT = 15014  # istiod's debug endpoints; a port-forward arrives from the pod's localhost
ROLLOUT_TIMEOUT = 180.0
NAMESPACE_TIMEOUT = 120.0
SCRAPE_TIMEOUT = 90.0  # seconds for Prometheus to discover and scrape new pods (it scrapes every 15 s by default)
INGRESS = ("istio-ingressgateway", "istio-system", 8080)  # the gateway's Deployment, its namespace, its HTTP port
ENVOY_ADMIN_PORT = 15000  # the sidecar's Envoy admin (on the pod's localhost: a port-forward reaches it)
MERGED_METRICS_PORT = 15020  # pilot-agent's merged Istio + Envoy + app metrics, /stats/prometheus
TELEMETRY_NAME = "meshlib-access-logs"
TELEMETRY_APIS = ("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")  # v1 since Istio 1.22
# Istio starts Envoy with --file-flush-interval-msec 1000: a request's access-log line can reach the container's log
# up to a second after the answer
LOG_FLUSH_WAIT = 1.5
LOG_OVERLAP = 10  # seconds each read of a sidecar's log reaches back before the previous read (lines count once)
LOG_LIMIT = 32 << 20  # bytes of one sidecar's log per read


def istio_version_of(image: str) -> str | None:
    """`docker.io/istio/pilot:1.28.1` → `1.28`; None for a tag that is not a release."""
    match = re.search(r":(\d+)\.(\d+)(?:\.\d+)?(?:[-@]|$)", image)
    return f"{match.group(1)}.{match.group(2)}" if match else None


class KubernetesBackend:
    """A run's view of one cluster: its namespace, what it applied, and the API calls that read the rest."""

    name = "kubernetes"

    def __init__(self, namespace: str, *, context: str | None, allowed: tuple[str, ...],
                 kubeconfig: str | Path | None = None, istio_version: str | None = None,
                 rollout_timeout: float = ROLLOUT_TIMEOUT, gateway_url: str | None = None,
                 ingress: tuple[str, str, int] = INGRESS, log_flush_wait: float = LOG_FLUSH_WAIT,
                 prometheus_url: str | None = None, prometheus: tuple[str, str, int] = PROMETHEUS,
                 scrape_timeout: float = SCRAPE_TIMEOUT) -> None:
        """`gateway_url`: where the ingress gateway answers (http://NODE:NODEPORT, a LoadBalancer, a port-forward of
        the user's own); without it, a port-forward to a ready pod of `ingress` (Deployment, namespace, port).
        `prometheus_url`: where Prometheus answers; without it, a port-forward to a ready pod behind `prometheus`
        (Service, namespace, port)."""
        if gateway_url is not None and not re.match(r"https?://[^/\s]+/?$", gateway_url):
            raise MeshlibError(f"gateway_url {gateway_url!r}: give the gateway's scheme, host and port, such as "
                               "http://192.168.49.2:30080")
        if prometheus_url is not None and not re.match(r"https?://[^/\s]+(/\S*)?$", prometheus_url):
            raise MeshlibError(f"prometheus_url {prometheus_url!r}: give Prometheus's scheme, host and port (and "
                               "path prefix, if any), such as http://127.0.0.1:9090")
        target = connect(context, allowed, kubeconfig)
        self.context = target.context
        self.cluster = Cluster(target.api, target.server)
        self.namespace = namespace
        self.run_id = secrets.token_hex(6)
        self.rollout_timeout = rollout_timeout
        self.gateway_url = gateway_url.rstrip("/") if gateway_url else None
        self.ingress = ingress
        self.log_flush_wait = log_flush_wait
        self.istio_version = istio_version or self._istiod_version()
        self._store = ConfigStore(profile_for(self.istio_version))
        self._created: list[Ref] = []
        self._owned_namespace = False
        self._forwards: dict[tuple[str, int], LocalForward] = {}
        self._served = ServedIndex()
        self._started = time.monotonic()
        self._last_log_read: float | None = None
        self._sent_since_settle = False
        self._telemetry: Ref | None = None
        self.prometheus = ClusterPrometheus(self.cluster, prometheus_url, prometheus)
        self.scrape_timeout = scrape_timeout
        self._canaries: dict[tuple[str, str], tuple[CanaryHistory, Following]] = {}
        self._ensure_namespace()
        try:
            self.access_logs = self._enable_access_logs()
        except MeshlibError:
            self.close()  # the namespace it may just have made
            raise

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

    def _enable_access_logs(self) -> str | None:
        """Turn the sidecars' access logs on for the run's namespace (Telemetry, provider `envoy`: Istio's TEXT lines
        on the istio-proxy container's stdout) when Istio's CRDs are installed; the resource's apiVersion, or None.
        A Telemetry of that name the run did not make is left alone."""
        api = next((a for n, a in enumerate(TELEMETRY_APIS) if self.cluster.serves(a, "Telemetry", refresh=n == 0)),
                   None)
        if api is None:
            return None
        ref = Ref(api, "Telemetry", TELEMETRY_NAME, self.namespace)
        live = self.cluster.get(ref)
        if live is not None and ((live.get("metadata") or {}).get("labels") or {}).get(RUN_LABEL) != self.run_id:
            return api
        self.cluster.apply({"apiVersion": api, "kind": "Telemetry", "metadata": {
            "name": TELEMETRY_NAME, "namespace": self.namespace, "labels": {RUN_LABEL: self.run_id}},
            "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}]}}, self.namespace)
        self._telemetry = ref  # the run's own: not among what its steps applied (delete_kind leaves it alone)
        return api

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
        synced = self._syncz()  # what istiod had sent each proxy before this apply
        predicted = self._predicted() if synced is not None else {}
        for res, (body, ns) in zip(resources, bodies, strict=True):
            self.cluster.apply(body, ns)
            if self._ref(res) not in self._created:
                self._created.append(self._ref(res))
        self._store.apply_documents(docs, namespace)
        for res in resources:
            if res.kind == "Deployment":
                self._wait_available(self._ref(res))
        self._wait_proxies_ready()
        if synced is not None:
            self._wait_proxies_synced(predicted, synced)
        for res in resources:
            if res.kind == "Canary" and res.api_version == CANARY_API:
                self._follow_canary(res.name, res.namespace)
        return [r.ref() for r in resources]

    def _wait_proxies_ready(self) -> None:
        """Every pod of the run's namespace with a sidecar (not being deleted, not finished) Ready: a sidecar is
        Ready once its Envoy has the configuration istiod first sends (pilot-agent's readiness probe)."""
        def pending() -> str | None:
            waiting = [p for p in podinfo.sidecar_pods(self.cluster.list("v1", "Pod", self.namespace))
                       if not podinfo.ready(p)]
            if not waiting:
                return None
            shown = ", ".join(f"{podinfo.name_of(p)} {podinfo.state(p)}" for p in waiting[:5])
            return f"{len(waiting)} not ready: {shown}"
        self.cluster.wait(f"the pods with a sidecar in namespace {self.namespace} to be Ready", pending,
                          self.rollout_timeout)

    def _predicted(self) -> dict[tuple[str, str], ProxyConfig]:
        """meshlib's translation for each workload of the run's namespace and for the ingress gateway."""
        return {(w.namespace, w.name): build_proxy_config(self._store, w) for w in self._store.workloads()
                if w.namespace == self.namespace or w.is_gateway}

    def _syncz(self) -> dict[str, ProxySync] | None:
        """istiod's /debug/syncz from a ready istiod pod; None when there is none to ask (no Istio control plane
        in istio-system: nothing is waited for)."""
        pods = [p for p in self.cluster.list("v1", "Pod", ISTIOD.namespace, ISTIOD_PODS) if podinfo.ready(p)]
        if not pods:
            return None
        pod = podinfo.name_of(pods[0])
        return parse_syncz(self._admin_get(pod, ISTIOD.namespace, ISTIOD_MONITORING_PORT, "/debug/syncz", "istiod"))

    def _proxies_of(self, workloads: list[tuple[str, str]]) -> set[str]:
        """istiod's ids (pod.namespace) of the running pods with a sidecar of these workloads."""
        ids = set()
        for namespace in sorted({ns for ns, _ in workloads}):
            wanted = [w for w in self._store.workloads() if (w.namespace, w.name) in workloads and
                      w.namespace == namespace]
            for pod in podinfo.sidecar_pods(self.cluster.list("v1", "Pod", namespace)):
                labels = (pod.get("metadata") or {}).get("labels") or {}
                if podinfo.running(pod) and any(all(labels.get(k) == v for k, v in w.labels.items()) for w in wanted):
                    ids.add(f"{podinfo.name_of(pod)}.{namespace}")
        return ids

    def _wait_proxies_synced(self, predicted: dict[tuple[str, str], ProxyConfig],
                             before: dict[str, ProxySync]) -> None:
        """Until every running proxy whose predicted configuration the apply changed has had a push since, and every
        proxy of those and of the namespace has acknowledged what it was sent; a rejected push fails at once."""
        now_predicted = self._predicted()
        changed = [key for key, config in now_predicted.items() if predicted.get(key) != config]
        if not changed:
            return
        must = self._proxies_of(changed)
        others = self._proxies_of([(w.namespace, w.name) for w in self._store.workloads()
                                   if w.namespace == self.namespace])

        def pending() -> str | None:
            try:
                now = self._syncz()
            except MeshlibError as exc:  # a port-forward that failed once: ask again until the timeout
                return f"istiod could not be asked: {exc}"
            if now is None:
                return "no ready istiod pod to ask"
            refused = rejected(now, must | others)
            if refused:
                raise MeshlibError("Envoy refused the configuration istiod sent after the apply: " +
                                   "; ".join(refused))
            lines = unsynced(before, now, must, others)
            return f"{len(lines)} not in step: " + "; ".join(lines[:5]) if lines else None
        self.cluster.wait(f"the proxies the apply changes ({len(must)}) to have istiod's push", pending,
                          self.rollout_timeout)

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
        """Stop following Canaries, close the run's port-forwards, then remove what it created (newest first), then
        its namespace if the run made it."""
        for _, following in self._canaries.values():
            following.close()
        self._canaries.clear()
        for forward in self._forwards.values():
            forward.close()
        self._forwards.clear()
        self.prometheus.close()
        errors: list[str] = []
        for ref in [*reversed(self._created), *([self._telemetry] if self._telemetry else [])]:
            try:
                self.cluster.delete(ref)
            except ClusterError as exc:
                errors.append(str(exc))
        self._created.clear()
        self._telemetry = None
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

    def canary_history(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """Each status Flagger wrote since the run applied the Canary (or since this first call, for one it did not
        apply), seen through the API's watch: see `meshlib.kube.canary` for what a point holds and lacks."""
        history = self._follow_canary(name, namespace)
        if not history.exists:
            raise MeshlibError(f"no Canary {name} in namespace {namespace}")
        return history.points()

    def _follow_canary(self, name: str, namespace: str) -> CanaryHistory:
        key = (namespace, name)
        if key not in self._canaries:
            history = CanaryHistory(self._canary_routes)
            following = self.cluster.follow(Ref(CANARY_API, "Canary", name, namespace), history.observe)
            self._canaries[key] = (history, following)
        return self._canaries[key][0]

    def _canary_routes(self, canary: dict[str, Any]) -> Routes | None:
        """The weights of the VirtualService Flagger manages for the Canary, as they are now (Flagger sets the routes
        before it writes the weight into the status)."""
        service = service_name(canary)
        namespace = (canary.get("metadata") or {}).get("namespace") or self.namespace
        if not service or not self.cluster.serves("networking.istio.io/v1beta1", "VirtualService", refresh=False):
            return None
        try:
            vs = self.cluster.get(Ref("networking.istio.io/v1beta1", "VirtualService", service, namespace))
        except ClusterError:
            return None
        return flagger_routes(vs, service)

    # --- Backend: metrics -----------------------------------------------------------------------------
    def has_prometheus(self) -> bool:
        """Whether PromQL steps can run: `prometheus_url` was given, or the Prometheus Service has a ready pod."""
        return self.prometheus.available()

    def _sidecar_pods(self) -> list[str]:
        return [podinfo.name_of(p) for p in podinfo.sidecar_pods(self.cluster.list("v1", "Pod", self.namespace))
                if podinfo.running(p)]

    def promql(self, query: str) -> list[Sample]:
        """The query on the cluster's Prometheus, after it has scraped every sidecar of the run's namespace since
        this call (as the embedded mesh's fresh queries)."""
        return self.prometheus.query(query, fresh_for=(self.namespace, self._sidecar_pods()))

    def wait_for_scrapes(self, timeout: float) -> str:
        """Wait until Prometheus scrapes every running sidecar of the run's namespace; what it saw."""
        return self.prometheus.wait_for_proxies(self.namespace, self._sidecar_pods(),
                                                max(timeout, self.scrape_timeout))

    def proxy_counters(self) -> SidecarCounters:
        """The builtin checks' counters: every sidecar's own, read over port-forward (`meshlib.kube.counters`)."""
        return SidecarCounters(self._read_counters)

    def _read_counters(self) -> Reading:
        snapshot: dict[Any, float] = {}
        unreadable: dict[str, str] = {}
        for pod in self._sidecar_pods():
            try:
                text = self._admin_get(pod, self.namespace, MERGED_METRICS_PORT, "/stats/prometheus",
                                       "merged metrics endpoint").decode("utf-8", "replace")
                snapshot.update(parse_counters(pod, text))
            except (MeshlibError, ValueError) as exc:
                unreadable[pod] = str(exc)
        return snapshot, unreadable

    def _pods(self, workload: str, namespace: str) -> list[dict[str, Any]]:
        """The pods of the workload's Deployment (by its selector), by name."""
        dep = self.cluster.get(Ref("apps/v1", "Deployment", workload, namespace))
        if dep is None:
            raise MeshlibError(f"no Deployment {workload} in namespace {namespace}")
        match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        return sorted(self.cluster.list("v1", "Pod", namespace, selector), key=lambda p: p["metadata"]["name"])

    def _ready_pods(self, workload: str, namespace: str, hint: str = "") -> list[dict[str, Any]]:
        """The workload's pods that are Ready and not being deleted; MeshlibError saying what the pods are else."""
        pods = self._pods(workload, namespace)
        ready = [p for p in pods if podinfo.ready(p)]
        if not ready:
            states = ", ".join(f"{p['metadata']['name']} {podinfo.state(p)}" for p in pods[:5]) or "no pods"
            raise MeshlibError(f"no ready pod of Deployment {workload} in namespace {namespace} ({states}){hint}")
        return ready

    def logs(self, workload: str, namespace: str, container: str | None = None,
             since: datetime | None = None) -> list[str]:
        seconds = None if since is None else max(1, int((datetime.now(UTC) - since).total_seconds()) + 1)
        lines: list[str] = []
        for pod in self._pods(workload, namespace):
            name = container or podinfo.app_container(pod)
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

    # --- Backend: traffic ---------------------------------------------------------------------------
    def gateway(self, host: str, path: str) -> Target:
        """Requests to the ingress gateway with `Host: host`: at gateway_url, or through a local port-forward to a
        ready pod of the gateway (the pod is chosen again for each batch)."""
        self._sent_since_settle = True
        base = self.gateway_url or self._ingress_forward().url
        return Target(base + path, host=host, label="through the ingress gateway")

    def _ingress_forward(self) -> LocalForward:
        workload, namespace, port = self.ingress
        try:
            pod = self._ready_pods(workload, namespace, ": the ingress gateway has no pod to forward to")[0]
        except MeshlibError as exc:
            raise MeshlibError(f"{exc}; sending through the ingress gateway needs Istio's ingress gateway there, or "
                               "-D gateway_url=URL where it answers (a NodePort, a LoadBalancer, your own "
                               "port-forward)") from None
        name = pod["metadata"]["name"]
        forward = self._forwards.get((namespace, port))
        if forward is None:
            forward = self._forwards[(namespace, port)] = LocalForward(self.cluster, name, namespace, port)
        forward.pod = name
        return forward

    def from_workload(self, workload: str, namespace: str, url: str) -> Target:
        """Requests to `url` from inside a pod of `workload`: the whole batch as one curl exec in its app container
        (curl must be there: the walkthrough's sleep client, curlimages/curl, has it)."""
        pod = self._ready_pods(workload, namespace)[0]
        name, container = pod["metadata"]["name"], podinfo.app_container(pod)
        self._sent_since_settle = True

        def run(plan: Plan) -> list[Response]:
            return self._exec_batch(workload, name, namespace, container, url, plan)
        return Target(url, label=f"from {workload}", runner=run)

    def _exec_batch(self, workload: str, pod: str, namespace: str, container: str, url: str,
                    plan: Plan) -> list[Response]:
        count = curl.check(plan)
        ids = curl.request_ids(count)
        boundary = curl.new_boundary()
        what = f"sending {count} requests from {workload} (pod {pod}) to {url}"
        ran = self.cluster.exec(pod, namespace, container, curl.batch_command(url, None, plan, ids, boundary),
                                timeout=curl.exec_timeout(plan))
        if ran.exit_code != 0:
            raise ClusterError(f"{what}: the batch exited with {ran.exit_code}: "
                               f"{' '.join(ran.stderr.split())[:300] or 'no message'}")
        return curl.parse_batch(ran.stdout, plan, ids, boundary, what)

    # --- Backend: what the proxies saw --------------------------------------------------------------
    def settle(self) -> list[str]:
        """Read the sidecars' access logs of the run's namespace once (after Envoy's flush interval when traffic was
        sent since the last read): each pod with an istio-proxy container, from a little before the last read.
        Returns the pods whose log filled a read's byte limit (later lines were not read)."""
        pods = [p for p in self.cluster.list("v1", "Pod", self.namespace)
                if podinfo.has_proxy(p) and (p.get("status") or {}).get("phase") != "Pending"]
        sent, self._sent_since_settle = self._sent_since_settle, False
        if not pods:
            return []
        if sent and self.log_flush_wait > 0:
            time.sleep(self.log_flush_wait)
        now = time.monotonic()
        since = int(now - (self._last_log_read if self._last_log_read is not None else self._started)) + LOG_OVERLAP
        cut: list[str] = []
        for pod in pods:
            name = pod["metadata"]["name"]
            try:
                text = self.cluster.pod_log(name, self.namespace, PROXY_CONTAINER, since, limit_bytes=LOG_LIMIT,
                                            timeout=30)
            except NotFound:
                continue  # gone since the list
            except ClusterError:
                if (pod.get("status") or {}).get("phase") == "Running":
                    raise
                continue  # a pod that has ended may have no log left to read
            self._served.add(name, pod, text)
            if len(text.encode()) >= LOG_LIMIT:
                cut.append(f"pod {name}: its access log since the last read filled the {LOG_LIMIT / 2**20:g} MiB "
                           "a read takes; the lines after that were not read")
        self._last_log_read = now
        return cut

    def served(self, request_id: str) -> list[Served]:
        """The pods whose sidecars logged the request as inbound (by x-request-id), as read at the last settle()."""
        return self._served.served(request_id)

    def config_dump(self, workload: str, namespace: str) -> dict[str, Any]:
        """The running Envoy's own /config_dump (with endpoints) of a ready pod of the workload, from its admin port
        over a port-forward."""
        pod = self._ready_pods(workload, namespace)[0]["metadata"]["name"]
        body = self._admin_get(pod, namespace, ENVOY_ADMIN_PORT, "/config_dump?include_eds", "Envoy admin")
        try:
            dump = json.loads(body)
        except ValueError:
            raise MeshlibError(f"the Envoy admin of pod {pod} in namespace {namespace} answered /config_dump with "
                               f"something that is not JSON ({body[:80]!r})") from None
        if not isinstance(dump, dict):
            raise MeshlibError(f"the Envoy admin of pod {pod} in namespace {namespace} answered /config_dump with "
                               "JSON that is not an object")
        return dump

    def metrics_text(self, workload: str, namespace: str) -> str:
        """Each running pod's merged metrics (pilot-agent's :15020/stats/prometheus), one after the other."""
        texts = []
        for pod in self._pods(workload, namespace):
            if (pod.get("status") or {}).get("phase") != "Running" or (pod.get("metadata") or {}).get(
                    "deletionTimestamp"):
                continue
            text = self._admin_get(pod["metadata"]["name"], namespace, MERGED_METRICS_PORT, "/stats/prometheus",
                                   "merged metrics endpoint").decode("utf-8", "replace")
            texts.append(text if text.endswith("\n") or not text else text + "\n")
        return "".join(texts)

    def _admin_get(self, pod: str, namespace: str, port: int, path: str, what: str) -> bytes:
        status, body = self.cluster.http_get(pod, namespace, port, path, timeout=30)
        if status != 200:
            raise MeshlibError(f"the {what} of pod {pod} in namespace {namespace} answered {path} with HTTP {status}: "
                               f"{' '.join(body[:200].decode('utf-8', 'replace').split())}")
        return body
