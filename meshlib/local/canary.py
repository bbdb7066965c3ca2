"""Flagger on the embedded mesh: one `CanaryController` per Canary in the store, ticking on a scaled clock.

After every reconcile the mesh calls `CanaryRuntime.sync()`: a new Canary gets a controller and a task on the
mesh's loop, a re-applied one gets its new spec before its next tick, a deleted one is stopped.

- **Clock.** The controllers' clock is virtual and runs `1 / time_scale` times as fast as the wall clock:
  `virtual = wall time when the mesh was created + elapsed real seconds / time_scale`. The analysis interval
  is the Canary's own (45 s for the walkthrough's catalog-release), so at `time_scale=0.05` a tick comes every
  2.25 s of real time; `progressDeadlineSeconds` (60 s → 3 s) runs on the same clock. Times in the Flagger log
  and in the history are virtual: 45 s apart, as in the walkthrough.
- **Metric windows.** Before a controller sees its Canary, the `interval` of each builtin, MetricTemplate and
  inline-query metric (Flagger's default `1m` when absent) is replaced by `interval × time_scale`, written as a
  Prometheus duration and floored (below); the controller then renders Flagger's queries with it, so `1m` becomes
  `[3s]` and `30s` becomes `[1500ms]` at 0.05. The floor is 3 scrape intervals, so `rate()` always has at
  least two samples in its window (the mesh's default scrape interval is 0.5 s at 0.05, see
  `default_scrape_interval`), and at least two snapshots of the proxies' counters, from which the same windows
  are computed without Prometheus (taken every `mark_period`). An inline `query` is rendered like a template's
  (Flagger's RenderQuery), so `{{ interval }}` in it is scaled; a window written out (`[1m]`) is not.
- **Prometheus's own lag.** Prometheus applies target changes at most every 5 s, twice (discovery, then the
  scrape manager), so a pod the canary just scaled up is first scraped 0–10 s later. Next to a real 45 s
  interval that is small; on a scaled clock it is several ticks. So before a builtin query the runtime waits
  (bounded by `SAMPLE_WAIT`) until Prometheus has scraped each pod of the target at least twice within the
  window, and the query itself waits for a scrape newer than the call (`promql_scalar(fresh=True)`). The clock
  does not pause meanwhile: a late tick is late, and the next is still due one interval after it was due.
- **A tick** is due one interval after the previous one was due (a fixed cadence like Flagger's Go ticker, so
  the history's times are exact multiples of the interval). On the loop: the Observation (target Deployment,
  MetricTemplates, readiness = at least `spec.replicas` running pods of the Deployment's current template).
  Then the controller's tick — on the loop with builtin metrics, in a worker thread with PromQL (its HTTP calls
  block). Then, on the loop again, its objects go into the store and the mesh reconciles (pods start and stop,
  proxies get the new routes); the target Deployment only gets its `spec.replicas` changed, as Flagger scales
  it through the scale subresource, so a version applied while the tick ran is kept. Its events go to the
  Flagger log that `mesh.logs("flagger", "istio-system")` reads (Flagger's JSON lines), and the status and
  history show the tick once its objects are in the store.
- **Deletion.** Deleting the Canary stops its controller and garbage-collects what it created (ownerReferences
  with `controller: true`, as Kubernetes does): the primary Deployment, the Services, DestinationRules and the
  VirtualService. Objects that existed before Flagger first wrote them (the apex Service of the walkthrough)
  stay as Flagger left them, and so does the target Deployment (scaled to 0): Flagger's default without
  `revertOnDeletion`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from meshlib.canary import (
    Canary,
    CanaryController,
    Event,
    HistoryPoint,
    MetricQueryError,
    Observation,
    TickResult,
)
from meshlib.canary.metrics import BUILTIN, DURATION, SUCCESS_RATE
from meshlib.canary.objects import object_key, owned_by, scaled_target, to_yaml
from meshlib.canary.spec import DEFAULT_METRIC_INTERVAL, manifest
from meshlib.config.kinds import Resource
from meshlib.errors import MeshlibError
from meshlib.local.logs import LogBuffer
from meshlib.local.metricsquery import BuiltinMetrics, Mark, Snapshot, snapshot
from meshlib.local.prometheus import duration
from meshlib.units import parse_duration

if TYPE_CHECKING:
    from meshlib.local.mesh import LocalMesh

T = TypeVar("T")
FLAGGER = ("flagger", "istio-system")  # where `kubectl logs deploy/flagger -n istio-system` looks
SAMPLE_WAIT = 12.0  # seconds a query waits for Prometheus to have scraped the target's new pods
SAMPLES = 2  # scrapes of each target pod inside the window before a builtin query runs
JOIN_TIMEOUT = 5.0
_POD_NAME = re.compile(r"[a-z0-9-]+")  # Kubernetes pod names: nothing to escape in a PromQL regex


def default_scrape_interval(time_scale: float) -> float:
    """Prometheus's scrape interval for a mesh on this clock: 1 s unscaled, else Flagger's 10 s minimum analysis
    interval scaled, between 0.25 s and 1 s (0.5 s at 0.05), so scaled windows hold several samples."""
    return min(1.0, max(0.25, 10 * time_scale))


def default_mark_period(time_scale: float) -> float:
    """How often the builtin metrics snapshot the proxies' counters: 5 s unscaled, 0.25 s at 0.05."""
    return min(5.0, max(0.1, 5 * time_scale))


def scaled_window(interval: str, time_scale: float, floor: float) -> str:
    """A metric `interval` on the scaled clock, as a Prometheus duration: `1m` at 0.05 → `3s`."""
    return duration(max(parse_duration(interval) * time_scale, floor))


def scale_metric_windows(canary: Canary, time_scale: float, floor: float) -> Canary:
    """The Canary with each metric's `interval` scaled: builtin, MetricTemplate and inline (see the module doc)."""
    spec = copy.deepcopy(dict(canary.spec))
    analysis = spec.get("analysis") or spec.get("canaryAnalysis")
    for metric in (analysis or {}).get("metrics") or []:
        if metric.get("name") in BUILTIN or metric.get("templateRef") or metric.get("query"):
            with contextlib.suppress(ValueError):  # not a duration: left for Flagger's own error
                metric["interval"] = scaled_window(metric.get("interval") or DEFAULT_METRIC_INTERVAL, time_scale,
                                                   floor)
    return Canary(canary.name, canary.namespace, spec, canary.uid, canary.labels)


class ScaledClock:
    """Virtual seconds (Unix epoch based) running `1 / scale` times as fast as the wall clock."""

    def __init__(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"time_scale must be positive, got {scale!r}")
        self.scale = scale
        self._wall = time.time()
        self._mono = time.monotonic()

    def now(self) -> float:
        return self._wall + (time.monotonic() - self._mono) / self.scale

    def real_delay(self, until: float) -> float:
        """Real seconds from now until the virtual time `until` (0 if it has passed)."""
        return max(0.0, (until - self.now()) * self.scale)


@dataclass(frozen=True)
class QueryRecord:
    """One metric query of a tick, for evidence."""

    metric: str
    query: str
    value: float | None
    source: str  # promql | builtin
    error: str = ""


@dataclass
class TickMeta:
    started: float  # time.time() when the tick began
    finished: float
    queries: list[QueryRecord] = field(default_factory=list)


class _LoopMetrics(BuiltinMetrics):
    """The proxies' counters read directly: only ever called on the mesh's loop, so it cannot wait for records
    (the loop writes them); Flagger's analysis reads what is counted at its tick, as Flagger does."""

    def _settle(self) -> list[str]:
        return []

    def _counters(self) -> Snapshot:
        return snapshot(self.mesh)


class MeshMetricProvider:
    """Flagger's MetricProvider over the embedded mesh: PromQL when it runs Prometheus, else the counters."""

    def __init__(self, mesh: LocalMesh, builtin: BuiltinMetrics, records: list[QueryRecord],
                 stopping: threading.Event) -> None:
        self.mesh = mesh
        self.builtin_metrics = builtin
        self.records = records
        self.stopping = stopping
        self.promql = mesh.prometheus is not None

    def builtin(self, name: str, *, query: str, target: str, namespace: str, interval: str) -> float | None:
        window = parse_duration(interval)
        if not self.promql:
            if name == SUCCESS_RATE:
                value = self.builtin_metrics.success_rate(target, namespace, window)
            elif name == DURATION:
                value = self.builtin_metrics.latency_quantile(target, namespace, 0.99, window)
            else:
                raise MetricQueryError(f"unknown builtin metric {name}")
            self.records.append(QueryRecord(name, query, value, "builtin"))
            return value
        return self._promql(name, query, lambda: self._wait_for_samples(target, namespace, window))

    def query(self, query: str, *, provider: Mapping[str, Any]) -> float | None:
        kind = (provider or {}).get("type") or "prometheus"
        if kind != "prometheus":
            raise MetricQueryError(f"metric provider {kind!r} is not available on the local mesh (only prometheus)")
        if not self.promql:
            error = "the local mesh runs no Prometheus (install Debian's prometheus package to run PromQL metrics)"
            self.records.append(QueryRecord("query", query, None, "promql", error))
            raise MetricQueryError(error)
        return self._promql("query", query, lambda: None)

    def _promql(self, name: str, query: str, before: Callable[[], None]) -> float | None:
        try:
            before()
            value = self.mesh.promql_scalar(query)
        except MeshlibError as exc:
            self.records.append(QueryRecord(name, query, None, "promql", str(exc)))
            raise MetricQueryError(str(exc)) from None
        self.records.append(QueryRecord(name, query, value, "promql"))
        return value

    def _wait_for_samples(self, target: str, namespace: str, window: float) -> None:
        """Until each ready pod of `target` has SAMPLES `up` samples inside the window (bounded; see module doc)."""
        pods = [p.name for p in self.mesh.ready_pods(namespace, target)]
        if not pods or not all(_POD_NAME.fullmatch(p) for p in pods):
            return  # nothing to scrape: the query finds no values, which is Flagger's answer too
        names = "|".join(pods)
        probe = f'count_over_time(up{{namespace="{namespace}",pod=~"{names}"}}[{duration(window)}])'
        deadline = time.monotonic() + SAMPLE_WAIT
        while not self.stopping.is_set():
            counts = {labels.get("pod"): value for labels, value in self.mesh.promql(probe, fresh=False)}
            if all(counts.get(p, 0) >= SAMPLES for p in pods) or time.monotonic() >= deadline:
                return
            time.sleep(min(0.1, self.mesh.scrape_interval / 2))


class CanaryRun:
    """One Canary's controller, its task on the mesh's loop and what it did."""

    def __init__(self, runtime: CanaryRuntime, resource: Resource) -> None:
        self.runtime = runtime
        self.resource = resource
        self.canary = Canary.from_manifest(resource)
        self.controller = CanaryController(self._scaled(self.canary), now=runtime.clock.now())
        self.status: dict[str, Any] = self.controller.status.to_dict()
        self.ticks: list[TickMeta] = []
        self.written: set[tuple[str, str, str]] = set()  # every object this controller wrote
        self.adopted: set[tuple[str, str, str]] = set()  # of those, the ones that existed before (not collected)
        self.task: asyncio.Task[None] | None = None
        self._pending: Resource | None = None
        self._wake = asyncio.Event()

    @property
    def key(self) -> tuple[str, str]:
        return (self.canary.namespace, self.canary.name)

    def _scaled(self, canary: Canary) -> Canary:
        return scale_metric_windows(canary, self.runtime.clock.scale, self.runtime.window_floor())

    def start(self) -> CanaryRun:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"flagger {self.canary.ref}")
        return self

    def update(self, resource: Resource) -> None:
        """The Canary was re-applied: the next tick uses the new spec; a new analysis interval ticks at once."""
        self.resource = resource
        self._pending = resource
        self._wake.set()

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        clock = self.runtime.clock
        while True:
            delay = clock.real_delay(self.controller.next_tick_at)
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                if self._apply_pending() or clock.real_delay(self.controller.next_tick_at) > 0:
                    continue
            self._apply_pending()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a tick that failed is logged like Flagger's errors; the next one retries
                self.runtime.write(self.canary.ref, "error", f"{type(exc).__name__}: {exc}")
                self.controller.next_tick_at = clock.now() + self.canary.interval

    def _apply_pending(self) -> bool:
        resource, self._pending = self._pending, None
        if resource is None:
            return False
        self.canary = Canary.from_manifest(resource)
        self.controller.update(self._scaled(self.canary), now=self.runtime.clock.now())
        return True

    async def _tick(self) -> None:
        runtime, mesh = self.runtime, self.runtime.mesh
        due, now, started = self.controller.next_tick_at, runtime.clock.now(), time.time()
        if now - due < self.canary.interval:
            now = due  # a fixed cadence, like the Go ticker Flagger runs on (a tick later than that is dropped)
        records: list[QueryRecord] = []
        provider = MeshMetricProvider(mesh, runtime.builtin_metrics, records, runtime.stopping)
        observed = self._observe()
        if provider.promql:
            result = await runtime.in_thread(self.controller.tick, now, observed, provider)
        else:
            result = self.controller.tick(now, observed, provider)
        for event in result.events:
            runtime.log.write(event.flagger_log())
        try:
            await self._write(result)
        finally:  # published once its objects are in the store: a step that saw the phase sees them too
            self.status = result.status.to_dict()
            self.ticks.append(TickMeta(started, time.time(), records))

    def _observe(self) -> Observation:
        """What Flagger would read from the API server now (on the loop, so the pods do not change meanwhile)."""
        mesh, c = self.runtime.mesh, self.canary
        store = mesh.store
        target = store.get("Deployment", c.namespace, c.target_name)
        readiness = {name: mesh.deployment_ready(name, c.namespace) for name in (c.primary_name, c.target_name)}
        templates = {(t.namespace, t.name): t.spec for t in store.of_kind("MetricTemplate")}
        return Observation(manifest(target) if target is not None else None, lambda name: readiness.get(name, False),
                           templates)

    async def _write(self, result: TickResult) -> None:
        if not result.apply:
            return
        mesh, c = self.runtime.mesh, self.canary
        objects = [self._scale(obj) if object_key(obj) == ("Deployment", c.namespace, c.target_name) else obj
                   for obj in result.apply]
        for key in map(object_key, objects):
            if key not in self.written and mesh.store.get(*key) is not None:
                self.adopted.add(key)  # e.g. the apex Service the user applied before the Canary
            self.written.add(key)
        try:  # no await from reading the target to writing it: nothing else writes in between on this loop
            mesh.store.apply_text(to_yaml(objects), c.namespace, filename=f"<flagger {c.ref}>")
        except MeshlibError as exc:
            self.runtime.write(self.canary.ref, "error", str(exc))
            return
        await mesh._reconcile()

    def _scale(self, target: dict[str, Any]) -> dict[str, Any]:
        """Flagger scales the target through the scale subresource: only `spec.replicas` of the Deployment as it is
        now (the user may have applied a new version while the tick ran), never the template it observed."""
        c = self.canary
        current = self.runtime.mesh.store.get("Deployment", c.namespace, c.target_name)
        if current is None:
            return target
        return scaled_target(manifest(current), target["spec"]["replicas"])

    # --- what users read ------------------------------------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        points: list[HistoryPoint] = list(self.controller.history)
        out = []
        for point, meta in zip(points, list(self.ticks), strict=False):
            out.append({"time": point.time, "started": meta.started, "finished": meta.finished,
                        "phase": str(point.phase), "canaryWeight": point.canary_weight,
                        "failedChecks": point.failed_checks, "iterations": point.iterations,
                        "primaryWeight": point.routes.primary, "routeCanaryWeight": point.routes.canary,
                        "mirrored": point.routes.mirrored, "metrics": dict(point.metrics),
                        "queries": [q.__dict__ for q in meta.queries]})
        return out


class CanaryRuntime:
    """Every Canary of one LocalMesh. `sync()` runs on the mesh's loop after each reconcile."""

    def __init__(self, mesh: LocalMesh, time_scale: float = 1.0) -> None:
        self.mesh = mesh
        self.clock = ScaledClock(time_scale)
        self.log = LogBuffer()
        self.mark_period = default_mark_period(time_scale)
        self.builtin_metrics: BuiltinMetrics = _LoopMetrics(mesh)
        self.stopping = threading.Event()
        self._runs: dict[tuple[str, str], CanaryRun] = {}
        self._marker: asyncio.Task[None] | None = None
        self._threads: set[threading.Thread] = set()

    def window_floor(self) -> float:
        """The shortest metric window: 3 scrape intervals (rate() needs two samples), at least 2 counter snapshots;
        the same with and without Prometheus, so both render the same queries."""
        return max(3 * self.mesh.scrape_interval, 2 * self.mark_period)

    def write(self, canary_ref: str, level: str, message: str) -> None:
        self.log.write(Event(self.clock.now(), level, message, canary_ref).flagger_log())

    # --- on the loop ----------------------------------------------------------------------------------
    def sync(self) -> bool:
        """Start, update and stop controllers to match the store. True if owned objects were garbage-collected
        (the caller reconciles again)."""
        store = self.mesh.store
        canaries = {(r.namespace, r.name): r for r in store.of_kind("Canary")}
        collected = False
        for key, run in list(self._runs.items()):
            resource = canaries.get(key)
            if resource is None:
                del self._runs[key]
                if run.task is not None:
                    run.task.cancel()  # a tick in flight ends at its next await; its result is dropped
                collected |= self._collect(run)
            elif resource is not run.resource and resource.spec != run.resource.spec:
                run.update(resource)
        if not self.stopping.is_set():
            for key, resource in canaries.items():
                if key not in self._runs:
                    try:
                        self._runs[key] = CanaryRun(self, resource).start()
                    except MeshlibError as exc:
                        self.write(f"{resource.name}.{resource.namespace}", "error", str(exc))
        if self._runs and self._marker is None and not self.stopping.is_set():
            self._marker = asyncio.get_running_loop().create_task(self._mark(), name="flagger metric marks")
        elif not self._runs and self._marker is not None:
            self._marker.cancel()  # nothing left to measure for
            self._marker = None
        return collected

    def _collect(self, run: CanaryRun) -> bool:
        store = self.mesh.store
        owned = [r for r in store if r.key not in run.adopted
                 and owned_by({"metadata": {**r.metadata, "namespace": r.namespace}}, run.canary)]
        for r in owned:
            store.delete(r.kind, r.namespace, r.name)
        return bool(owned)

    async def _mark(self) -> None:
        """Snapshots of the proxies' counters for the builtin metrics' windows (only without Prometheus)."""
        while True:
            if self.mesh.prometheus is None and self._runs:
                self.builtin_metrics.marks.append(Mark(time.time(), snapshot(self.mesh)))
            await asyncio.sleep(self.mark_period)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in a daemon thread (never joined at interpreter exit) and await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def work() -> None:
            try:
                value, error = fn(*args), None
            except BaseException as exc:  # delivered to the awaiting task
                value, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, value, error)
            self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=work, name="meshlib-flagger-tick", daemon=True)
        self._threads.add(thread)
        thread.start()
        return await future

    async def stop(self) -> None:
        """Stop every controller and the marker (on the loop; `close()` calls it)."""
        self.stopping.set()
        runs, self._runs = list(self._runs.values()), {}
        await asyncio.gather(*(r.stop() for r in runs), return_exceptions=True)
        marker, self._marker = self._marker, None
        if marker is not None:
            marker.cancel()
            await asyncio.gather(marker, return_exceptions=True)

    def join(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Wait (bounded) for worker threads still in a query (after Prometheus stopped they end quickly)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- from any thread ------------------------------------------------------------------------------
    def run(self, name: str, namespace: str) -> CanaryRun:
        found = self._runs.get((namespace, name))
        if found is None:
            known = ", ".join(sorted(f"{n}.{ns}" for ns, n in self._runs)) or "none"
            raise MeshlibError(f'canaries.flagger.app "{name}" not found in namespace {namespace} '
                               f"(canaries: {known}); apply the Canary first")
        return found

    def names(self, namespace: str | None = None) -> list[tuple[str, str]]:
        return sorted((ns, n) for ns, n in list(self._runs) if namespace is None or ns == namespace)
