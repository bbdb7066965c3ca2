"""The embedded mesh: meshlib plays istiod, real Envoy runs every sidecar and the ingress gateway, on loopback.

`LocalMesh` runs its asyncio loop in a background thread so that synchronous callers (behave steps, the
CLI) can use it:

    with LocalMesh(["manifests/services"], namespace="istioinaction") as mesh:
        mesh.apply(["manifests/ch5/catalog-dest-rule.yaml"])
        print(mesh.gateway_url)

Each pod gets its own loopback address (127.x.y.z) with its apps (each a process) and its Envoy; the store is
translated per proxy (`meshlib.xds`), bound to those addresses (`meshlib.xds.bind`) and pushed over ADS
(`meshlib.local.envoy.xds`); a change Envoy rejects is rolled back. Nothing listens beyond loopback. `close()`
stops every process, server and task, also after errors; it is idempotent, and children die with meshlib.

With a `prometheus` binary on PATH (or `prometheus=True`), the mesh also runs a real Prometheus on loopback
that scrapes every pod's merged metrics (:15020, as from pilot-agent) like a Kubernetes pod scrape;
`mesh.promql(...)` queries it.

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
import socket
import threading
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from meshlib.config.kinds import Resource
from meshlib.config.loader import MAX_DOCUMENTS, Document, load_documents, parse_documents
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
from meshlib.local.envoy.binary import EnvoyBinary, find_envoy
from meshlib.local.envoy.process import FLUSH_INTERVAL_MS
from meshlib.local.envoy.records import Ledger, Served
from meshlib.local.envoy.sidecar import PodProxy
from meshlib.local.envoy.xds import REJECTED, SYNCED, ProxyStatus, Snapshot, XdsServer
from meshlib.local.external import create_app as create_external_app
from meshlib.local.external import echoed
from meshlib.local.logs import LogBuffer
from meshlib.local.meshconfig import MeshConfig
from meshlib.local.metrics import Peer
from meshlib.local.network import LoopbackNetwork
from meshlib.local.process import ImageCommand, ProcessContainer, free_port
from meshlib.local.prometheus import (
    PrometheusExited,
    PrometheusServer,
    PrometheusUnavailable,
    Sample,
    ScrapeTarget,
    find_binary,
)
from meshlib.local.tempdirs import owned_dir
from meshlib.profile import profile_for
from meshlib.xds import ProxyConfig, build_proxy_config
from meshlib.xds.bind import Placement, PodEndpoint, bind
from meshlib.xds.listeners import inbound_services

T = TypeVar("T")
DEFAULT_GATEWAY_PORT = 30000
GATEWAY_LISTENER = 8080
PROXY_CONTAINER = "istio-proxy"
SYNC_TIMEOUT = 15.0  # how long a proxy may take to ACK a push before the change fails
RECORDS_TIMEOUT = 5.0  # the longest a step waits for Envoy's records of the requests sent so far
RECORDS_POLL = 0.01
# Envoy writes a request's access-log line (stdout) when it writes its record, and flushes each file at least once per
# flush interval: two intervals after the records are in, its stdout lines are in the pipe to us too
LOG_FLUSH_WAIT = 2 * FLUSH_INTERVAL_MS / 1000


class ProxyRejected(MeshlibError):
    """Envoy refused the config meshlib pushed: the proxy keeps its last good config."""
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _documents(paths: Iterable[str | Path], text: str | None, text_name: str = "<inline>") -> list[Document]:
    """The documents of `paths` and of an inline YAML `text` (reported as `text_name`, e.g. `<stdin>`)."""
    docs = load_documents(paths) if paths else []
    if text is not None:
        docs += parse_documents(text, text_name, max(0, MAX_DOCUMENTS - len(docs)))
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
    apps: list[ProcessContainer] = field(default_factory=list)
    ports: dict[int, tuple[str, int]] = field(default_factory=dict)  # container port -> where the app listens
    sidecar: PodProxy | None = None  # the pod's Envoy (the gateway's own, for the gateway pod)
    ip: str = ""  # the pod's own loopback address
    ready: bool = False

    @property
    def locality(self) -> tuple[str, str, str]:
        """(region, zone, subzone) from `istio-locality` (region.zone.subzone) or the topology labels."""
        if self.labels.get("istio-locality"):
            parts = (self.labels["istio-locality"].split(".") + ["", ""])[:3]
            return parts[0], parts[1], parts[2]
        return (self.labels.get("topology.kubernetes.io/region", ""),
                self.labels.get("topology.kubernetes.io/zone", ""),
                self.labels.get("topology.istio.io/subzone", ""))

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
                 config: MeshConfig | None = None, prometheus: bool | None = None,
                 scrape_interval: float | None = None, time_scale: float = 1.0) -> None:
        """`prometheus`: None runs Prometheus when the binary is on PATH, True requires it, False never runs it.

        `time_scale`: real seconds per second of the canary analysis clock (0.05 runs Flagger 20 times as fast).
        `scrape_interval`: Prometheus's; by default 1 s, shorter on a scaled clock (`default_scrape_interval`)."""
        self.store = ConfigStore(profile_for(istio_version))
        self.config = config or MeshConfig()  # user images and external stand-ins (meshlib.yaml)
        self.images = self.config.images
        self.namespace = namespace
        self.requested_port = port
        self.rng = random.Random(seed)
        self._initial = [str(p) for p in paths]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pods: dict[tuple[str, str], list[Pod]] = {}
        self._configs: dict[tuple[str, str], ProxyConfig] = {}
        self._by_ip: dict[str, Pod] = {}  # every pod this mesh started (a stopped pod's late records still resolve)
        self._by_name: dict[str, Pod] = {}
        self.gateway_pod: Pod | None = None
        self._served_secrets: dict[str, dict[str, tuple[str, str]]] = {}  # gateway pod -> SDS name -> key pair
        self._gateway_port = 0
        self.envoy: EnvoyBinary | None = None
        self.xds: XdsServer | None = None
        self.network: LoopbackNetwork | None = None
        self.workdir: Path | None = None
        self._external: RunningApp | None = None
        self._lock = threading.RLock()
        self.want_prometheus = prometheus
        self.time_scale = time_scale
        self.scrape_interval = scrape_interval or flagger.default_scrape_interval(time_scale)
        self.canaries = flagger.CanaryRuntime(self, time_scale)
        self._reconcile_lock = asyncio.Lock()
        self.prometheus: PrometheusServer | None = None  # None when not running
        self.ledger = Ledger()  # x-request-id -> the pods that served it, from Envoy's records

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
        self.envoy = find_envoy()
        self.network = LoopbackNetwork()
        self._gateway_port = _gateway_port(self.requested_port)
        self.store.apply_documents(docs, self.namespace)
        self.workdir = owned_dir("mesh")
        self.xds = XdsServer()
        try:
            self.xds.start()
        except BaseException:
            self._remove_files()
            raise
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
            self._remove_files()

    def _remove_files(self) -> None:
        if self.xds is not None:
            self.xds.close()
            self.xds = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    async def _start(self) -> None:
        self._external = await start_app(create_external_app(self.config.stand_ins), "127.0.0.1", 0)
        gw_workload = next(w for w in self.store.workloads() if w.is_gateway)
        self._configs = self._translate()
        pod = self._new_pod(gw_workload)
        self.gateway_pod = pod
        await asyncio.gather(self._start_pod(pod), self._reconcile())  # the gateway starts beside the pods
        await self._push_all()  # every proxy on the final state (a no-op when the reconcile's push had it all)

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
        if self.gateway_pod is not None:
            pods.append(self.gateway_pod)
        self._pods.clear()
        await asyncio.gather(*(self._stop_pod(p) for p in pods), return_exceptions=True)
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
              text: str | None = None, text_name: str = "<inline>") -> list[Resource]:
        """Like `kubectl apply -f`: validate everything, then update the store and push to every proxy."""
        ns = namespace or self.namespace
        docs = _documents(paths, text, text_name)
        with self._lock:
            resources = self.store.parse(docs, ns)
            self._check_images(resources)
            before = self.store.checkpoint()
            applied = self.store.apply_documents(docs, ns)
            self._reconcile_or_restore(before, applied)
        return applied

    def delete(self, paths: Iterable[str | Path] = (), namespace: str | None = None,
               text: str | None = None, text_name: str = "<inline>") -> list[Resource]:
        ns = namespace or self.namespace
        docs = _documents(paths, text, text_name)
        with self._lock:
            before = self.store.checkpoint()
            removed = self.store.delete_documents(docs, ns)
            self._reconcile_or_restore(before, removed)
        return removed

    def delete_kind(self, kind: str, namespace: str | None = None) -> int:
        """Like `kubectl delete KIND --all -n NS`."""
        ns = namespace or self.namespace
        with self._lock:
            before = self.store.checkpoint()
            names = [r.name for r in self.store.of_kind(kind, ns)]
            for name in names:
                self.store.delete(kind, ns, name)
            self._reconcile_or_restore(before, [])
        return len(names)

    def _reconcile_or_restore(self, before: dict, changed: list[Resource]) -> None:
        """Push the store's new state; if a proxy refuses it, put the store back and push the last good state, so
        nothing of the change stays anywhere (as if `kubectl apply` had been refused)."""
        what = ", ".join(f"{r.ref()} ({r.source})" for r in changed) or "the change"
        try:
            self.call(self._reconcile())
        except ProxyRejected as exc:
            self.store.restore(before)
            self.call(self._reconcile())
            raise ProxyRejected(f"{what} not applied: {exc}; every proxy keeps its last good config") from None
        except MeshlibError:
            raise  # a pod that does not start: the change stays, as in a cluster, and the error says why
        except Exception as exc:  # validation let through something the translator cannot take: a meshlib bug
            self.store.restore(before)
            self.call(self._reconcile())
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise MeshlibError(f"{what} not applied: meshlib could not translate it ({reason}); every proxy keeps "
                               "its last good config. This is a meshlib bug: please report it with the manifest") \
                from exc

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

    def _translate(self) -> dict[tuple[str, str], ProxyConfig]:
        return {(w.namespace, w.name): build_proxy_config(self.store, w) for w in self.store.workloads()}

    async def _reconcile_once(self) -> None:
        workloads = {(w.namespace, w.name): w for w in self.store.workloads() if not w.is_gateway}
        self._configs = self._translate()
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
        for pod in stopping:  # out of every endpoint list before they stop, like a terminating pod
            pod.ready = False
        results = await asyncio.gather(*(self._start_pod(p) for p in starting), return_exceptions=True)
        failed = {(p.namespace, p.workload.name) for p, r in zip(starting, results, strict=True)
                  if isinstance(r, BaseException)}
        for key, pod in outgoing:
            if key not in failed and pod in self._pods.get(key, []):  # replaced: the new pods run
                self._pods[key].remove(pod)
                pod.ready = False
                stopping.append(pod)
        try:
            await self._push_all()
        finally:
            await asyncio.gather(*(self._stop_pod(p) for p in stopping), return_exceptions=True)
            if self.prometheus is not None:
                self.prometheus.update_targets(await self._scrape_targets())
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # --- xDS: what each proxy runs ------------------------------------------------------------------
    def _running(self) -> list[Pod]:
        return [p for p in self.pods() if p.sidecar is not None]

    def _pod_index(self) -> dict[tuple[str, str], list[PodEndpoint]]:
        index: dict[tuple[str, str], list[PodEndpoint]] = {}
        for (ns, name), pods in self._pods.items():
            index[(ns, name)] = [PodEndpoint(p.ip, p.locality) for p in pods if p.ready]
        return index

    def _placement(self, pod: Pod) -> Placement:
        assert pod.sidecar is not None and self._external is not None
        listen = {GATEWAY_LISTENER: ("127.0.0.1", self._gateway_port)} if pod is self.gateway_pod else {}
        return Placement(pod.ip, str(pod.sidecar.records_path), ("127.0.0.1", self._external.port),
                         dict(pod.ports), listen, pod.locality)

    def _push(self, pod: Pod, index: dict[tuple[str, str], list[PodEndpoint]]) -> str:
        """Set the pod's snapshot (a whole, consistent config; unchanged content keeps its version)."""
        assert pod.sidecar is not None and self.xds is not None
        pc = self._configs[(pod.namespace, pod.workload.name)]
        if pc.kind == "gateway":
            pc = self._with_served_secrets(pod, pc)
        res = bind(pc, self._placement(pod), index)
        self.xds.set_snapshot(pod.sidecar.node_id, Snapshot(res.version, res.clusters, res.endpoints,
                                                            res.listeners, res.routes))
        return res.version

    def _with_served_secrets(self, pod: Pod, pc: ProxyConfig) -> ProxyConfig:
        """The gateway's key pairs, with those its Envoy already got and still holds: Envoy keeps the last secret SDS
        sent it, and istiod sends nothing for a deleted Secret, so the pod serves it until it restarts
        (istio/istio#45432)."""
        held = self._served_secrets.setdefault(pod.name, {})
        held.update(pc.secrets)
        return replace(pc, secrets={**held, **pc.secrets})

    async def _push_all(self) -> None:
        index = self._pod_index()
        pushed = [(pod, self._push(pod, index)) for pod in self._running()]
        await self._synced(pushed)

    async def _synced(self, pushed: list[tuple[Pod, str]]) -> None:
        """Wait until every proxy ACKs its version; a NACK is a ProxyRejected naming the proxy and Envoy's reason."""
        assert self.xds is not None
        xds = self.xds

        def latest(node_id: str, version: str) -> ProxyStatus:
            """Wait for `version`; when a newer snapshot replaced it meanwhile (a concurrent push), for that one."""
            deadline = time.monotonic() + SYNC_TIMEOUT
            while True:
                st = xds.wait(node_id, version, max(0.0, deadline - time.monotonic()))
                if st.version in ("", version) or st.state == REJECTED or time.monotonic() >= deadline:
                    return st
                version = st.version

        statuses = await asyncio.gather(*(asyncio.to_thread(latest, pod.sidecar.node_id, version)
                                          for pod, version in pushed if pod.sidecar is not None))
        rejected = [(pod, st) for (pod, _), st in zip(pushed, statuses, strict=True) if st.state == REJECTED]
        if rejected:
            pod, st = rejected[0]
            raise ProxyRejected(f"Envoy of {pod.name}.{pod.namespace} rejected its config: {st.error}")
        stale = [(pod, st) for (pod, _), st in zip(pushed, statuses, strict=True) if st.state != SYNCED]
        if stale:
            pod, st = stale[0]
            raise MeshlibError(f"Envoy of {pod.name}.{pod.namespace} did not take its config within "
                               f"{SYNC_TIMEOUT:g}s: {st.summary()}")

    def proxy_status(self) -> list[tuple[Pod, ProxyStatus]]:
        """Every proxy with its sync state, like `istioctl proxy-status`."""
        assert self.xds is not None
        return [(p, self.xds.status(p.sidecar.node_id)) for p in self._running() if p.sidecar is not None]

    # --- pods ---------------------------------------------------------------------------------------
    def _new_pod(self, w: Workload) -> Pod:
        suffix = "".join(self.rng.choice(_ALPHABET) for _ in range(5))
        template = template_hash(w)
        return Pod(f"{w.name}-{template}-{suffix}", w, template, Peer.of(w.name, w.namespace, w.labels))

    async def _start_pod(self, pod: Pod) -> None:
        assert self.network is not None and self.envoy is not None and self.xds is not None
        assert self.workdir is not None
        w = pod.workload
        pod.ip = self.network.allocate()
        self._by_ip[pod.ip] = self._by_name[pod.name] = pod
        pod.logs[PROXY_CONTAINER] = LogBuffer()
        pod.sidecar = PodProxy(self.envoy, kind="gateway" if w.is_gateway else "sidecar", ip=pod.ip, pod=pod.name,
                               namespace=pod.namespace, peer=pod.peer, log=pod.logs[PROXY_CONTAINER],
                               workdir=self.workdir, xds=self.xds.address, resolver=self,
                               ledger=self.ledger)
        try:
            starting = self._plan_apps(pod)  # their ports are known now: the proxy can start beside them
            version = self._push(pod, self._pod_index())
            await asyncio.gather(*starting, pod.sidecar.start())
            await self._synced([(pod, version)])
        except BaseException:
            await self._stop_pod(pod)
            raise
        pod.ready = True

    def _plan_apps(self, pod: Pod) -> list[Coroutine[Any, Any, None]]:
        """Every container as its own process (builtin images through `meshlib.local.apps.host`), listening on
        the pod's address, with the sidecar as its HTTP_PROXY: their ports, and the coroutines that start them.
        A builtin app's bad env fails here, in one line."""
        assert pod.sidecar is not None
        if pod.workload.is_gateway:
            return []
        starting = []
        for c in pod.workload.containers:
            env = self._container_env(pod, c)
            user = self.images.get(image_name(c["image"]))
            ports = [p["containerPort"] for p in c.get("ports") or []] or [
                8080 if user is not None else default_port(c["image"], env)]
            pod.logs[c["name"]] = LogBuffer()
            if user is None:
                ctx = AppContext(env=env, log=pod.logs[c["name"]].write, proxy=pod.sidecar.outbound_url,
                                 namespace=pod.namespace, pod_name=pod.name)
                lookup_image(c["image"])(ctx)  # builds the app once here: a bad env value is an error now
                env = {**env, "MESHLIB_POD": pod.name, "MESHLIB_NAMESPACE": pod.namespace,
                       "MESHLIB_SEED": str(self.rng.random())}
                # user images listen on 127.0.0.1:$PORT (the documented contract); builtin ones on the pod's IP
            container = ProcessContainer(c["image"], user or ImageCommand.builtin(c["image"]), env,
                                         pod.sidecar.outbound_url, pod.logs[c["name"]],
                                         host="127.0.0.1" if user is not None else pod.ip)
            pod.apps.append(container)
            pod.ports.update({p: (container.host, container.port) for p in ports})
            starting.append(container.start())
        return starting

    async def _stop_pod(self, pod: Pod) -> None:
        pod.ready = False
        try:
            if pod.sidecar is not None:
                pod.sidecar.refresh()  # keep what it served in the ledger and its last counts
                await pod.sidecar.close()
                if self.xds is not None:
                    self.xds.remove(pod.sidecar.node_id)
        finally:
            for app in pod.apps:
                await app.close()
            pod.apps.clear()

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

    # --- what the records ask the mesh (meshlib.local.envoy.records.Resolver) -------------------------
    def peer_at(self, ip: str) -> tuple[str, Peer] | None:
        pod = self._by_ip.get(ip)
        return (pod.name, pod.peer) if pod is not None else None

    def service_of_cluster(self, pod_name: str, cluster: str) -> tuple[str, str, str] | None:
        pod = self._pod_named(pod_name)
        pc = self._configs.get((pod.namespace, pod.workload.name)) if pod else None
        meta = (((pc.clusters.get(cluster) or {}).get("metadata") or {}).get("filterMetadata") or {}) if pc else {}
        services = (meta.get("istio") or {}).get("services") or []
        return (services[0]["host"], services[0]["name"], services[0]["namespace"]) if services else None

    def inbound_service(self, pod_name: str, port: int) -> tuple[str, str, str] | None:
        pod = self._pod_named(pod_name)
        services = inbound_services(self.store, pod.workload, port) if pod else []
        return (services[0].host, services[0].name, services[0].namespace) if services else None

    def _pod_named(self, name: str) -> Pod | None:
        return self._by_name.get(name)

    def _refresh_records(self) -> int:
        """Read every proxy's new records; how many were new."""
        return sum(pod.sidecar.refresh() for pod in self.pods() if pod.sidecar is not None)

    def served(self, request_id: str) -> list[Served]:
        """Every pod that served this request id (mirror copies marked), in the order the requests arrived."""
        self._refresh_records()
        return self.ledger.served(request_id)

    def settle_records(self, timeout: float = RECORDS_TIMEOUT) -> list[str]:
        """Wait (bounded) until every proxy's records of the requests it had begun are read. Each Envoy counts the
        requests its connection managers begin and writes one record as each ends (flushed every 50 ms); a second
        look catches requests that began during the first (a mirror copy still on its way). Requests begun after
        that (a load tester's) are not waited for. Call after a batch, before asking `served`.

        Returns a line per proxy still behind when the bound ran out (empty when everything settled): a request
        still open (a long fault delay, a hung upstream) keeps its proxy behind."""
        deadline = time.monotonic() + timeout
        for _look in range(2):
            wanted = self.call(self._requests_begun())
            while True:
                self._refresh_records()
                behind = {proxy.pod: (proxy.records_read, begun) for proxy, begun in wanted
                          if proxy.records_read < begun}
                if not behind:
                    break
                if time.monotonic() >= deadline:
                    return [f"pod {pod}: {read} records of the {begun} requests its proxy began had arrived after "
                            f"{timeout:g} s (a request still open, such as one a long fault delay holds, keeps its "
                            "record back: let it end before the check)"
                            for pod, (read, begun) in sorted(behind.items())]
                time.sleep(RECORDS_POLL)
        return []

    def records_progress(self) -> dict[str, tuple[int, int]]:
        """Pod -> (records read, requests its Envoy has begun), for every running proxy."""
        return {proxy.pod: (proxy.records_read, begun) for proxy, begun in self.call(self._requests_begun())}

    async def _requests_begun(self) -> list[tuple[PodProxy, int]]:
        """(proxy, requests begun) of every running proxy; one whose Envoy cannot answer (stopping) has nothing
        more to write."""
        proxies = [pod.sidecar for pod in self.pods() if pod.sidecar is not None]
        counts = await asyncio.gather(*(proxy.requests_begun() for proxy in proxies), return_exceptions=True)
        found = []
        for proxy, count in zip(proxies, counts, strict=True):
            if isinstance(count, BaseException) and not isinstance(count, MeshlibError):
                raise count
            if isinstance(count, int):
                found.append((proxy, count))
        return found

    # --- what users read ----------------------------------------------------------------------------
    @property
    def gateway_port(self) -> int:
        if self.gateway_pod is None or not self.gateway_pod.ready:
            raise MeshlibError("the local mesh is not running")
        return self._gateway_port

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def gateway_address(self, port: int) -> tuple[str, int]:
        """Where the ingress gateway listens for a Gateway server port (`443`, or its target port `8443`): the
        NodePort-like 127.0.0.1:<gateway port> for the HTTP listener 8080, the gateway pod's own loopback IP and
        the listener port for any other (an HTTPS or PASSTHROUGH server: connect there with the server's SNI)."""
        pod = self.gateway_pod
        if pod is None or not pod.ready:
            raise MeshlibError("the local mesh is not running")
        pc = self._configs.get((pod.namespace, pod.workload.name))
        target = pc.gateway_ports.get(port, port) if pc is not None else port
        if target == GATEWAY_LISTENER:
            return "127.0.0.1", self._gateway_port
        if pc is None or (target not in pc.listener_ports and target not in pc.tls_chains):
            known = sorted(pc.gateway_ports) if pc is not None else []
            raise MeshlibError(f"the ingress gateway has no listener for port {port}: no Gateway server (with a "
                               f"route or credential) uses it; server ports in use: {known or 'none'}")
        return pod.ip, target

    def echoed_hosts(self) -> dict[str, int]:
        """Requests meshlib's JSON echo answered so far, by external host: hosts with no stand-in of their own."""
        return echoed(self._external.runner.app) if self._external is not None else {}

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
        pods = self.find_pods(workload, namespace)
        # apps and Envoy are processes that log through pipes, Envoy flushing each log file every 50 ms: once
        # the records of every request begun are in, its access-log lines are at most one flush behind
        self.settle_records()
        time.sleep(LOG_FLUSH_WAIT)
        for pod in pods:
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
        """What meshlib, as istiod, translated for this workload's proxies (the pure router predicts from it)."""
        pod = self.find_pods(workload, namespace)[0]
        return self._configs[(pod.namespace, pod.workload.name)]

    def config_dump(self, workload: str, namespace: str | None = None) -> dict[str, Any]:
        """The running Envoy's own `/config_dump` (with endpoints) of the workload's first ready pod."""
        pods = self.find_pods(workload, namespace)
        pod = next((p for p in pods if p.ready), pods[0])
        if pod.sidecar is None:
            raise MeshlibError(f"pod {pod.name} has no running proxy")
        return self.call(pod.sidecar.config_dump())

    def metrics_text(self, workload: str, namespace: str | None = None) -> str:
        """Each pod's merged metrics (Istio's standard metrics, then Envoy's own stats), as Prometheus scrapes,
        once the records of the requests sent so far are in."""
        self.settle_records()

        async def texts() -> list[str]:
            return [await p.sidecar.metrics_text() for p in self.find_pods(workload, namespace)
                    if p.sidecar is not None]

        return "".join(self.call(texts()))

    def scrape_targets(self) -> list[str]:
        return [t.address for t in self.scrape_target_labels()]

    def scrape_target_labels(self) -> list[ScrapeTarget]:
        """Every ready proxy's merged metrics endpoint with the labels a Kubernetes pod scrape gives its series
        (`namespace`, `pod` and the pod's labels: `app`, `version`, …)."""
        return [ScrapeTarget(p.sidecar.metrics_address, {**p.labels, "namespace": p.namespace, "pod": p.name})
                for p in self.pods() if p.sidecar is not None and p.ready]

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
        dead = server.exit_error(query) if server is not None else None
        if dead is not None:  # noticed here, not as a refused connection
            raise dead
        if server is None:
            if self.want_prometheus is False:
                raise PrometheusUnavailable(f"cannot run PromQL {query!r}: the mesh runs with prometheus=False",
                                            "start it with prometheus=True (or None: when the binary is there)")
            if self._loop is None:
                raise MeshlibError("the local mesh is not running: call start() or use `with LocalMesh(...)`")
            raise PrometheusUnavailable(f"cannot run PromQL {query!r}: no `prometheus` binary was on PATH when the "
                                        "mesh started")
        if fresh:
            try:
                server.sync()
            except PrometheusExited as exc:  # it died while we waited for a scrape
                raise exc.for_query(query) from None
        return server


def _gateway_port(requested: int) -> int:
    """The NodePort-like port the gateway's Envoy will bind on 127.0.0.1 (0: a free one, outside the ephemeral
    range), checked free now so a busy port is one clear line, not an Envoy rejection."""
    if requested == 0:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", requested))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise MeshlibError(
                    f"cannot listen on 127.0.0.1:{requested} for the ingress gateway: {exc.strerror}; stop what "
                    "uses it (another `meshlib up`? run `meshlib down`), or choose another port with --port "
                    "(0 picks a free one)") from None
            raise
        return s.getsockname()[1]
