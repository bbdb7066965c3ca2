"""The embedded mesh: pods, sidecars and the ingress gateway on loopback, driven by the resource store.

`LocalMesh` runs its asyncio loop in a background thread so that synchronous callers (behave steps, the
CLI) can use it:

    with LocalMesh(["manifests/services"], namespace="istioinaction") as mesh:
        mesh.apply(["manifests/ch5/catalog-dest-rule.yaml"])
        print(mesh.gateway_url)

Every listener binds 127.0.0.1 only. `close()` stops every server, client session and task, also after
errors; it is idempotent.

With a `prometheus` binary on PATH (or `prometheus=True`), the mesh also runs a real Prometheus on loopback
that scrapes every proxy's `/stats/prometheus` like a Kubernetes pod scrape; `mesh.promql(...)` queries it.

A Canary (flagger.app/v1beta1) in the store is run by Flagger's analysis on the mesh's loop
(`meshlib.local.canary`), on a clock `time_scale` times the wall clock's pace (0.05: a 45 s interval takes
2.25 s); `canary_status()`, `canary_history()` and `logs("flagger", "istio-system")` show what it did.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import random
import shutil
import threading
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from meshlib.config.kinds import Resource
from meshlib.config.loader import Document, load_documents, parse_documents
from meshlib.config.store import ISTIO_SYSTEM, ConfigStore, Workload
from meshlib.errors import ConfigError, MeshlibError
from meshlib.local import canary as flagger
from meshlib.local.apps import (
    AppContext,
    RunningApp,
    UnknownImageError,
    default_port,
    image_name,
    lookup_image,
    start_app,
)
from meshlib.local.external import create_app as create_external_app
from meshlib.local.logs import LogBuffer
from meshlib.local.metrics import Peer
from meshlib.local.process import ImageCommand, ProcessContainer
from meshlib.local.prometheus import PrometheusServer, PrometheusUnavailable, Sample, ScrapeTarget, find_binary
from meshlib.local.proxy import Endpoint, GatewayProxy, Served, SidecarProxy
from meshlib.profile import profile_for
from meshlib.xds import ProxyConfig, build_proxy_config
from meshlib.xds.naming import PASSTHROUGH

T = TypeVar("T")
DEFAULT_GATEWAY_PORT = 30000
GATEWAY_LISTENER = 8080
KNOWN_EXTERNAL = {"jsonplaceholder.typicode.com"}
PROXY_CONTAINER = "istio-proxy"
MAX_LEDGER = 200_000
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _documents(paths: Iterable[str | Path], text: str | None) -> list[Document]:
    """The documents of `paths` and of an inline YAML `text` (reported as `<inline>`)."""
    docs = load_documents(paths) if paths else []
    if text is not None:
        docs += parse_documents(text, "<inline>")
    return docs


def template_hash(workload: Workload) -> str:
    spec = workload.origin.spec.get("template") if workload.origin else {}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return "".join(_ALPHABET[int(digest[i:i + 2], 16) % len(_ALPHABET)] for i in range(0, 20, 2))


@dataclass
class Pod:
    """One replica of a workload: its containers' apps, its sidecar and its logs."""

    name: str
    workload: Workload
    template: str
    peer: Peer
    logs: dict[str, LogBuffer] = field(default_factory=dict)
    apps: list[RunningApp | ProcessContainer] = field(default_factory=list)
    ports: dict[int, int] = field(default_factory=dict)  # container port -> real loopback port
    sidecar: SidecarProxy | GatewayProxy | None = None
    ready: bool = False

    @property
    def namespace(self) -> str:
        return self.workload.namespace

    @property
    def labels(self) -> dict[str, str]:
        return self.workload.labels


class LocalMesh:
    """An Istio-like mesh on loopback: apply manifests, send traffic, read logs, config and metrics."""

    def __init__(self, paths: Iterable[str | Path] = (), namespace: str = "default",
                 port: int = DEFAULT_GATEWAY_PORT, istio_version: str | None = None, seed: int | None = None,
                 images: dict[str, ImageCommand] | None = None, prometheus: bool | None = None,
                 scrape_interval: float | None = None, time_scale: float = 1.0) -> None:
        """`prometheus`: None runs Prometheus when the binary is on PATH, True requires it, False never runs it.

        `time_scale`: real seconds per second of the canary analysis clock (0.05 runs Flagger 20 times as fast).
        `scrape_interval`: Prometheus's; by default 1 s, shorter on a scaled clock (`default_scrape_interval`)."""
        self.store = ConfigStore(profile_for(istio_version))
        self.images = images or {}  # user images run as local commands (meshlib.yaml)
        self.namespace = namespace
        self.requested_port = port
        self.rng = random.Random(seed)
        self._initial = [str(p) for p in paths]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pods: dict[tuple[str, str], list[Pod]] = {}
        self._configs: dict[tuple[str, str], ProxyConfig] = {}
        self._healthy: dict[int, dict[str, int]] = {}
        self.gateway: GatewayProxy | None = None
        self.gateway_pod: Pod | None = None
        self._external: RunningApp | None = None
        self._lock = threading.RLock()
        self.want_prometheus = prometheus
        self.time_scale = time_scale
        self.scrape_interval = scrape_interval or flagger.default_scrape_interval(time_scale)
        self.canaries = flagger.CanaryRuntime(self, time_scale)
        self._reconcile_lock = asyncio.Lock()
        self.prometheus: PrometheusServer | None = None  # None when not running
        self._served: dict[str, list[Served]] = {}  # x-request-id -> where it was served (bounded)

    # --- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> LocalMesh:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> LocalMesh:
        if self._loop is not None:
            return self
        docs = load_documents(self._initial) if self._initial else []
        resources = self.store.parse(docs, self.namespace)
        self._check_images(resources)
        if self.want_prometheus:
            find_binary()  # required: fail before starting anything
        self.store.apply_documents(docs, self.namespace)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="meshlib-local-mesh", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self.call(self._start())
            self._start_prometheus()
        except BaseException:
            self.close()
            raise
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120) -> T:
        """Run `coro` on the mesh's loop and wait for its result."""
        if self._loop is None:
            coro.close()
            raise MeshlibError("the local mesh is not running: call start() or use `with LocalMesh(...)`")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        self.canaries.stopping.set()  # no new tick starts; a query in flight fails once Prometheus is gone
        try:
            try:
                self._stop_prometheus()
            finally:
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(10)
            loop.close()
            self._loop = None
            self._thread = None
            self.canaries.join()

    async def _start(self) -> None:
        self._external = await start_app(create_external_app(), "127.0.0.1", 0)
        gw_workload = next(w for w in self.store.workloads() if w.is_gateway)
        pod = self._new_pod(gw_workload)
        pod.logs[PROXY_CONTAINER] = LogBuffer()
        self.gateway = GatewayProxy(self, pod.name, gw_workload.namespace, pod.peer, pod.logs[PROXY_CONTAINER],
                                    random.Random(self.rng.random()))
        pod.sidecar = self.gateway
        self.gateway_pod = pod
        self._configure(self.gateway, gw_workload)
        try:
            await self.gateway.start(self.requested_port, GATEWAY_LISTENER)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise MeshlibError(
                    f"cannot listen on 127.0.0.1:{self.requested_port} for the ingress gateway: "
                    f"{exc.strerror}; stop what uses it (another `meshlib up`? run `meshlib down`), "
                    "or choose another port with --port (0 picks a free one)") from None
            raise
        pod.ready = True
        await self._reconcile()

    def _start_prometheus(self) -> None:
        """After the pods: a Prometheus that scrapes them. It does not wait here for the first scrapes (Prometheus
        applies target changes only every 5 s): `promql()` waits for them when it is asked."""
        if self.want_prometheus is False or (self.want_prometheus is None and shutil.which("prometheus") is None):
            return
        server = PrometheusServer(self.scrape_interval)
        self.prometheus = server  # before start(): close() stops it even when start() is interrupted
        server.start(self.call(self._scrape_targets()), wait_for_targets=False)

    def _stop_prometheus(self) -> None:
        server, self.prometheus = self.prometheus, None
        if server is not None:
            server.close()

    async def _stop(self) -> None:
        await self.canaries.stop()
        pods = [p for ps in self._pods.values() for p in ps]
        self._pods.clear()
        await asyncio.gather(*(self._stop_pod(p) for p in pods), return_exceptions=True)
        if self.gateway is not None:
            await self.gateway.close()
            self.gateway = None
        if self._external is not None:
            await self._external.close()
            self._external = None
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    # --- applying configuration --------------------------------------------------------------------
    def apply(self, paths: Iterable[str | Path] = (), namespace: str | None = None,
              text: str | None = None) -> list[Resource]:
        """Like `kubectl apply -f`: validate everything, then update the store and push to every proxy."""
        ns = namespace or self.namespace
        docs = _documents(paths, text)
        with self._lock:
            resources = self.store.parse(docs, ns)
            self._check_images(resources)
            applied = self.store.apply_documents(docs, ns)
            self.call(self._reconcile())
        return applied

    def delete(self, paths: Iterable[str | Path] = (), namespace: str | None = None,
               text: str | None = None) -> list[Resource]:
        ns = namespace or self.namespace
        docs = _documents(paths, text)
        with self._lock:
            removed = self.store.delete_documents(docs, ns)
            self.call(self._reconcile())
        return removed

    def delete_kind(self, kind: str, namespace: str | None = None) -> int:
        """Like `kubectl delete KIND --all -n NS`."""
        ns = namespace or self.namespace
        with self._lock:
            names = [r.name for r in self.store.of_kind(kind, ns)]
            for name in names:
                self.store.delete(kind, ns, name)
            self.call(self._reconcile())
        return len(names)

    def _check_images(self, resources: list[Resource]) -> None:
        for res in resources:
            if res.kind != "Deployment":
                continue
            for i, c in enumerate(res.spec["template"]["spec"]["containers"]):
                if image_name(c["image"]) in self.images:
                    continue
                try:
                    lookup_image(c["image"])
                except UnknownImageError as exc:
                    raise ConfigError(res.where("template", "spec", "containers", i, "image"), str(exc)) from None

    async def _reconcile(self) -> None:
        """Pods and proxy config to match the store; then the canary controllers (and again if a deleted Canary's
        objects were garbage-collected). One at a time: the canary controllers reconcile from the loop too."""
        async with self._reconcile_lock:
            try:
                await self._reconcile_once()
            finally:
                collected = self.canaries.sync()
            if collected:
                await self._reconcile_once()

    async def _reconcile_once(self) -> None:
        workloads = {(w.namespace, w.name): w for w in self.store.workloads() if not w.is_gateway}
        self._configs = {(w.namespace, w.name): build_proxy_config(self.store, w)
                         for w in self.store.workloads()}
        stopping: list[Pod] = []
        # a new template is a rolling update: the old pods keep serving until the new ones run (Kubernetes's
        # default maxUnavailable 25% rounds down to 0 for few replicas, maxSurge rounds up to 1)
        outgoing: list[tuple[tuple[str, str], Pod]] = []
        for key, pods in list(self._pods.items()):
            w = workloads.get(key)
            if w is None:
                stopping += pods
                del self._pods[key]
                continue
            wanted = template_hash(w)
            keep = [p for p in pods if p.template == wanted][: w.replicas]
            old = [p for p in pods if p.template != wanted]
            stopping += [p for p in pods if p not in keep and p not in old]
            if w.replicas > 0:
                outgoing += [(key, p) for p in old]
                self._pods[key] = keep + old
            else:
                stopping += old
                self._pods[key] = keep
        starting = []
        for key, w in workloads.items():
            pods = self._pods.setdefault(key, [])
            wanted = template_hash(w)
            for _ in range(w.replicas - sum(p.template == wanted for p in pods)):
                pod = self._new_pod(w)
                pods.append(pod)
                starting.append(pod)
        self._healthy.clear()
        for pod in [p for ps in self._pods.values() for p in ps]:
            if pod.sidecar is not None:
                self._configure(pod.sidecar, pod.workload)
        if self.gateway is not None and self.gateway_pod is not None:
            self._configure(self.gateway, self.gateway_pod.workload)
        results = await asyncio.gather(*(self._start_pod(p) for p in starting), return_exceptions=True)
        failed = {(p.namespace, p.workload.name) for p, r in zip(starting, results, strict=True)
                  if isinstance(r, BaseException)}
        for key, pod in outgoing:
            if key not in failed and pod in self._pods.get(key, []):  # replaced: the new pods run
                self._pods[key].remove(pod)
                stopping.append(pod)
        self._healthy.clear()
        await asyncio.gather(*(self._stop_pod(p) for p in stopping), return_exceptions=True)
        self._healthy.clear()
        if self.prometheus is not None:
            self.prometheus.update_targets(await self._scrape_targets())
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def _configure(self, proxy: SidecarProxy | GatewayProxy, workload: Workload) -> None:
        proxy.config = self._configs.get((workload.namespace, workload.name)) or build_proxy_config(self.store,
                                                                                                       workload)
        proxy.access_log = self._access_log_enabled(workload)

    def _access_log_enabled(self, workload: Workload) -> bool:
        enabled = bool(self.store.mesh_settings().access_log_file)
        candidates = [t for t in self.store.of_kind("Telemetry") if t.namespace in (workload.namespace, ISTIO_SYSTEM)]
        # root namespace first, then namespace-wide, then workload-selected: the most specific wins
        def rank(t: Resource) -> int:
            return (2 if (t.spec.get("selector") or {}).get("matchLabels") else 1) if t.namespace != ISTIO_SYSTEM \
                or workload.namespace == ISTIO_SYSTEM else 0

        for t in sorted(candidates, key=rank):
            labels = (t.spec.get("selector") or {}).get("matchLabels") or {}
            if any(workload.labels.get(k) != v for k, v in labels.items()):
                continue
            for entry in t.spec.get("accessLogging") or []:
                providers = [p.get("name") for p in entry.get("providers") or []] or ["envoy"]
                if "envoy" in providers:
                    enabled = not entry.get("disabled", False)
        return enabled

    # --- pods ---------------------------------------------------------------------------------------
    def _new_pod(self, w: Workload) -> Pod:
        suffix = "".join(self.rng.choice(_ALPHABET) for _ in range(5))
        template = template_hash(w)
        return Pod(f"{w.name}-{template}-{suffix}", w, template, Peer.of(w.name, w.namespace, w.labels))

    async def _start_pod(self, pod: Pod) -> None:
        w = pod.workload
        pod.logs[PROXY_CONTAINER] = LogBuffer()
        container_ports: list[int] = []
        plans = []
        for c in w.containers:
            env = self._container_env(pod, c)
            user = image_name(c["image"]) in self.images
            ports = [p["containerPort"] for p in c.get("ports") or []] or [
                8080 if user else default_port(c["image"], env)]
            container_ports += ports
            pod.logs[c["name"]] = LogBuffer()
            plans.append((c, env, ports))
        sidecar = SidecarProxy(self, pod.name, pod.namespace, pod.peer, pod.logs[PROXY_CONTAINER],
                               random.Random(self.rng.random()), app_ports=lambda: pod.ports)
        pod.sidecar = sidecar
        self._configure(sidecar, w)
        try:
            await sidecar.start(container_ports)
            for c, env, ports in plans:
                spec = self.images.get(image_name(c["image"]))
                if spec is not None:
                    container = ProcessContainer(c["image"], spec, env, sidecar.outbound_url, pod.logs[c["name"]])
                    pod.apps.append(container)
                    await container.start()
                    for p in ports:
                        pod.ports[p] = container.port
                    continue
                ctx = AppContext(env=env, log=pod.logs[c["name"]].write, proxy=sidecar.outbound_url,
                                 namespace=pod.namespace, pod_name=pod.name, rng=random.Random(self.rng.random()))
                app = lookup_image(c["image"])(ctx)
                running = await start_app(app, "127.0.0.1", 0)
                pod.apps.append(running)
                for p in ports:
                    pod.ports[p] = running.port
        except BaseException:
            await self._stop_pod(pod)
            raise
        pod.ready = True
        self._healthy.clear()

    async def _stop_pod(self, pod: Pod) -> None:
        pod.ready = False
        self._healthy.clear()
        for app in pod.apps:
            await app.close()
        pod.apps.clear()
        if pod.sidecar is not None and pod.sidecar is not self.gateway:
            await pod.sidecar.close()

    def _container_env(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"] or ""
                continue
            source = var.get("valueFrom") or {}
            field_path = (source.get("fieldRef") or {}).get("fieldPath")
            if field_path:
                env[var["name"]] = {"metadata.namespace": pod.namespace, "metadata.name": pod.name,
                                    "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}.get(field_path, "")
            elif source.get("configMapKeyRef"):
                ref = source["configMapKeyRef"]
                cm = self.store.get("ConfigMap", pod.namespace, ref.get("name", ""))
                env[var["name"]] = str((cm.spec if cm else {}).get(ref.get("key", ""), ""))
        env.setdefault("KUBERNETES_NAMESPACE", pod.namespace)
        env.setdefault("HOSTNAME", pod.name)
        return env

    # --- what proxies ask the mesh ------------------------------------------------------------------
    def _ready_pods(self, namespace: str, workload: str) -> list[Pod]:
        return [p for p in self._pods.get((namespace, workload), []) if p.ready]

    def ready_pods(self, namespace: str, workload: str) -> list[Pod]:
        """The running pods of a workload (safe from any thread: a copy)."""
        return list(self._ready_pods(namespace, workload))

    def deployment_ready(self, name: str, namespace: str) -> bool:
        """Rolled out and available: at least `spec.replicas` running pods of the Deployment's current template."""
        w = self.store.workload(name, namespace)
        if w is None:
            return False
        wanted = template_hash(w)
        return sum(p.template == wanted for p in self._ready_pods(namespace, name)) >= w.replicas

    def healthy_counts(self, pc: ProxyConfig) -> dict[str, int]:
        cached = self._healthy.get(id(pc))
        if cached is None:
            cached = {}
            for cluster, refs in pc.endpoints.items():
                cached[cluster] = sum(1 if r.external_host else len(self._ready_pods(r.namespace, r.workload or ""))
                                      for r in refs)
            cached[PASSTHROUGH] = 1
            self._healthy[id(pc)] = cached
        return cached

    def external_hosts(self) -> set[str]:
        return KNOWN_EXTERNAL | {s.host for s in self.store.services() if s.external}

    def endpoints(self, pc: ProxyConfig | None, cluster: str, authority: str) -> list[Endpoint]:
        assert self._external is not None
        if cluster == PASSTHROUGH:
            host = authority.rsplit(":", 1)[0].lower().removesuffix("-shadow")
            if host in self.external_hosts():
                return [Endpoint("127.0.0.1", self._external.port, Peer(), host)]
            return []
        out = []
        for ref in (pc.endpoints.get(cluster, []) if pc else []):
            if ref.external_host:
                out.append(Endpoint("127.0.0.1", self._external.port, Peer(), ref.external_host))
                continue
            for pod in self._ready_pods(ref.namespace, ref.workload or ""):
                if isinstance(pod.sidecar, SidecarProxy) and ref.port in pod.sidecar.inbound_ports:
                    out.append(Endpoint("127.0.0.1", pod.sidecar.inbound_ports[ref.port], pod.peer, pod.name))
        return out

    def service_for_inbound(self, peer: Peer, namespace: str, container_port: int) -> tuple[str, str, str]:
        w = self.store.workload(peer.workload, namespace)
        for svc in self.store.services():
            if w and svc.namespace == namespace and svc.selector and all(
                    w.labels.get(k) == v for k, v in svc.selector.items()):
                if any(p.target_port == container_port for p in svc.ports):
                    return svc.host, svc.name, svc.namespace
        return "unknown", "unknown", namespace

    def record_served(self, served: Served) -> None:
        if not served.request_id:
            return
        self._served.setdefault(served.request_id, []).append(served)
        while len(self._served) > MAX_LEDGER:
            del self._served[next(iter(self._served))]

    def served(self, request_id: str) -> list[Served]:
        """Every pod that served this request id (mirror copies marked), in the order the requests arrived."""
        return sorted(self._served.get(request_id, ()), key=lambda s: s.started)

    # --- what users read ----------------------------------------------------------------------------
    @property
    def gateway_port(self) -> int:
        if self.gateway is None:
            raise MeshlibError("the local mesh is not running")
        return self.gateway.port

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def pods(self, namespace: str | None = None) -> list[Pod]:
        out = [p for ps in self._pods.values() for p in ps]
        if self.gateway_pod is not None:
            out.append(self.gateway_pod)
        return [p for p in out if namespace is None or p.namespace == namespace]

    def find_pods(self, workload: str, namespace: str | None = None) -> list[Pod]:
        ns = namespace or self.namespace
        if self.gateway_pod is not None and self.gateway_pod.workload.name == workload and \
                self.gateway_pod.namespace == (namespace or ISTIO_SYSTEM):
            return [self.gateway_pod]
        pods = self._pods.get((ns, workload))
        if not pods:
            known = ", ".join(sorted(f"deploy/{n}.{s}" for s, n in self._pods))
            raise MeshlibError(f"no pods for deploy/{workload} in namespace {ns}; running: {known or 'none'}")
        return pods

    def logs(self, workload: str, namespace: str | None = None, container: str | None = None,
             since: datetime | None = None) -> list[str]:
        """Log lines of every pod of `workload` (like `kubectl logs deploy/NAME -c CONTAINER --since-time`).

        `deploy/flagger -n istio-system` is the canary controllers' log (Flagger's JSON lines)."""
        if (workload, namespace) == flagger.FLAGGER and not self._pods.get((ISTIO_SYSTEM, "flagger")):
            return self.canaries.log.read(since)
        lines: list[str] = []
        for pod in self.find_pods(workload, namespace):
            name = container or next((c for c in pod.logs if c != PROXY_CONTAINER), PROXY_CONTAINER)
            if name not in pod.logs:
                raise MeshlibError(f"pod {pod.name} has no container {name!r}; containers: {', '.join(pod.logs)}")
            lines += pod.logs[name].read(since)
        return lines

    def canary_status(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        """The Canary's `status` as Flagger writes it: phase, canaryWeight, failedChecks, iterations, conditions…"""
        return dict(self.canaries.run(name, namespace or self.namespace).status)

    def canary_history(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """One entry per analysis tick: time (scaled clock), started/finished (wall clock), phase, canaryWeight,
        failedChecks, iterations, the VirtualService's primary/canary weights, metric values and queries."""
        return self.canaries.run(name, namespace or self.namespace).history()

    def canaries_in(self, namespace: str | None = None) -> list[tuple[str, str]]:
        """(namespace, name) of every Canary with a controller."""
        return self.canaries.names(namespace)

    def proxy_config(self, workload: str, namespace: str | None = None) -> ProxyConfig:
        pod = self.find_pods(workload, namespace)[0]
        assert pod.sidecar is not None and pod.sidecar.config is not None
        return pod.sidecar.config

    def metrics_text(self, workload: str, namespace: str | None = None) -> str:
        return "".join(p.sidecar.metrics.exposition().decode() for p in self.find_pods(workload, namespace)
                       if p.sidecar is not None)

    def scrape_targets(self) -> list[str]:
        return [f"127.0.0.1:{p.sidecar.admin_port}" for p in self.pods() if p.sidecar is not None]

    def scrape_target_labels(self) -> list[ScrapeTarget]:
        """Every ready proxy's admin endpoint with the labels a Kubernetes pod scrape gives its series
        (`namespace`, `pod` and the pod's labels: `app`, `version`, …)."""
        return [ScrapeTarget(f"127.0.0.1:{p.sidecar.admin_port}", {**p.labels, "namespace": p.namespace,
                                                                   "pod": p.name})
                for p in self.pods() if p.sidecar is not None and p.sidecar.admin_port and p.ready]

    async def _scrape_targets(self) -> list[ScrapeTarget]:
        return self.scrape_target_labels()

    def promql(self, query: str, fresh: bool = True) -> list[Sample]:
        """An instant PromQL query on the mesh's Prometheus: `(labels, value)` per series.

        `fresh` first waits (bounded) until Prometheus scrapes every current proxy and has scraped each after
        this call began, so everything the proxies counted so far is in the answer (≈ one scrape interval)."""
        return self._prometheus_for(query, fresh).query(query)

    def promql_scalar(self, query: str, fresh: bool = True) -> float | None:
        """The one value of `query`; None when it has no series or is NaN (Flagger's "no values found")."""
        return self._prometheus_for(query, fresh).query_scalar(query)

    def _prometheus_for(self, query: str, fresh: bool) -> PrometheusServer:
        server = self.prometheus
        if server is not None and not server.running:
            raise PrometheusUnavailable(f"cannot run PromQL {query!r}: the mesh's prometheus exited; its log ends: "
                                        + " | ".join(server.log.read(tail=5)), "see its log above")
        if server is None:
            if self.want_prometheus is False:
                raise PrometheusUnavailable(f"cannot run PromQL {query!r}: the mesh runs with prometheus=False",
                                            "start it with prometheus=True (or None: when the binary is there)")
            if self._loop is None:
                raise MeshlibError("the local mesh is not running: call start() or use `with LocalMesh(...)`")
            raise PrometheusUnavailable(f"cannot run PromQL {query!r}: no `prometheus` binary was on PATH when the "
                                        "mesh started")
        if fresh:
            server.sync()
        return server
