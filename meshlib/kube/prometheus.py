"""Prometheus on a cluster: at the URL the run names (`-D prometheus_url=…`), or through a local port whose every
connection is a port-forward to a ready pod of the usual Service (`prometheus` in `istio-system`, port 9090: Istio's
sample addon, which the walkthrough installs and Flagger reads).

PromQL runs through Prometheus's HTTP API (`/api/v1/query`), as on the embedded mesh, and "fresh" means the same: a
query waits (bounded) until Prometheus has scraped every sidecar of the run's namespace after the query was asked,
so its answer includes what the proxies counted before the step. Prometheus's targets are matched to pods by the
labels a pod scrape gives them: `namespace` and `pod` (the Istio addon's relabelling), or the discovered
`__meta_kubernetes_namespace` and `__meta_kubernetes_pod_name`.

    prometheus = ClusterPrometheus(cluster, url=None)
    prometheus.query('sum(istio_requests_total)', fresh_for=("istioinaction", ["catalog-7d…"]))
    prometheus.wait_for_proxies("istioinaction", ["catalog-7d…", "webapp-5c…"], timeout=60)
    prometheus.close()                       # the port-forward, if one was opened
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from meshlib.errors import MeshlibError
from meshlib.kube import pods as podinfo
from meshlib.kube.cluster import Cluster, ClusterError, LocalForward, Ref
from meshlib.local.prometheus import (
    PrometheusUnavailable,
    PromQLError,
    Sample,
    instant_samples,
    scraped_at,
    stored_scrapes,
    stored_up_query,
    target_key,
)
from meshlib.units import parse_duration

SERVICE = ("prometheus", "istio-system", 9090)  # the Service, its namespace, its port
HTTP_TIMEOUT = 30.0
DEFAULT_SCRAPE_INTERVAL = 15.0  # Prometheus's default, for targets that do not say theirs
FRESH_SLACK = 5.0
POLL = 0.5
HINT = ("install Prometheus in istio-system as the walkthrough does (Istio's samples/addons/prometheus.yaml), or give "
        "its URL with -D prometheus_url=http://HOST:PORT")


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


class PrometheusAPI:
    """Prometheus's HTTP API at `url` (`where` says which Prometheus in messages). Never through an HTTP proxy."""

    def __init__(self, url: str, where: str) -> None:
        self.url = url.rstrip("/")
        self.where = where
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _get(self, path: str, params: dict[str, str], subject: str) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with self._opener.open(url, timeout=HTTP_TIMEOUT) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read()
            finally:
                exc.close()
            try:
                body = json.loads(raw)
            except ValueError:
                raise PromQLError(subject, f"{self.where} answered HTTP {exc.code} {exc.reason}: "
                                           f"{_one_line(raw[:200].decode('utf-8', 'replace'))}") from None
        except (OSError, ValueError) as exc:
            raise PrometheusUnavailable(f"cannot reach {self.where} ({type(exc).__name__}: {_one_line(exc)})",
                                        HINT) from None
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                raise PromQLError(subject, f"{self.where} answered {path} with something that is not JSON "
                                           f"({raw[:80]!r}): is this Prometheus?") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            body = body if isinstance(body, dict) else {}
            raise PromQLError(subject, f"{body.get('errorType', 'error')}: {body.get('error', 'no message')}")
        return body.get("data") or {}

    def query(self, promql: str) -> list[Sample]:
        """An instant query: `(labels, value)` per series (a scalar is one sample without labels)."""
        return instant_samples(promql, self._get("/api/v1/query", {"query": promql}, promql))

    def active_targets(self) -> list[dict[str, Any]]:
        data = self._get("/api/v1/targets", {"state": "active"}, "the scrape targets")
        return list(data.get("activeTargets") or [])


# --- targets and pods (pure) ----------------------------------------------------------------------
def target_pod(target: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, pod) of a scrape target, from its labels or the labels Kubernetes discovery gave it."""
    labels, found = target.get("labels") or {}, target.get("discoveredLabels") or {}
    namespace = labels.get("namespace") or labels.get("kubernetes_namespace") or found.get(
        "__meta_kubernetes_namespace")
    pod = labels.get("pod") or labels.get("kubernetes_pod_name") or labels.get("pod_name") or found.get(
        "__meta_kubernetes_pod_name")
    return (str(namespace), str(pod)) if namespace and pod else None


def targets_of(active: list[dict[str, Any]], namespace: str, pods: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Prometheus's active targets of each of the pods (a pod may have none, or several)."""
    out: dict[str, list[dict[str, Any]]] = {pod: [] for pod in pods}
    for target in active:
        where = target_pod(target)
        if where is not None and where[0] == namespace and where[1] in out:
            out[where[1]].append(target)
    return out


def scrape_interval(target: dict[str, Any]) -> float:
    try:
        return parse_duration(str(target.get("scrapeInterval") or "")) or DEFAULT_SCRAPE_INTERVAL
    except ValueError:
        return DEFAULT_SCRAPE_INTERVAL


# --- the cluster's Prometheus ---------------------------------------------------------------------
class ClusterPrometheus:
    """The run's Prometheus: at `url`, else Service `service` (name, namespace, port) over a port-forward."""

    def __init__(self, cluster: Cluster, url: str | None = None, service: tuple[str, str, int] = SERVICE) -> None:
        self.cluster = cluster
        self.url = url.rstrip("/") if url else None
        self.service = service
        self._forward: LocalForward | None = None

    @property
    def where(self) -> str:
        if self.url:
            return f"Prometheus at {self.url}"
        name, namespace, port = self.service
        return f"Prometheus (Service {name} in namespace {namespace}, port {port}, over a port-forward)"

    def available(self) -> bool:
        """Whether PromQL can be asked: a URL was given, or the Service has a ready pod."""
        if self.url:
            return True
        try:
            self._pod_and_port()
        except (PrometheusUnavailable, ClusterError):
            return False
        return True

    def _pod_and_port(self) -> tuple[str, int]:
        """A ready pod behind the Service and the pod's port its `port` goes to."""
        name, namespace, port = self.service
        service = self.cluster.get(Ref("v1", "Service", name, namespace))
        if service is None:
            raise PrometheusUnavailable(f"no Service {name} in namespace {namespace}", HINT)
        spec = service.get("spec") or {}
        selector = spec.get("selector") or {}
        if not selector:
            raise PrometheusUnavailable(f"Service {name} in namespace {namespace} has no selector: no pod to "
                                        "forward to", HINT)
        entry = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
        if entry is None:
            ports = ", ".join(str(p.get("port")) for p in spec.get("ports") or []) or "none"
            raise PrometheusUnavailable(f"Service {name} in namespace {namespace} has no port {port} (it has "
                                        f"{ports})", HINT)
        chosen = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = sorted(self.cluster.list("v1", "Pod", namespace, chosen), key=podinfo.name_of)
        ready = [p for p in pods if podinfo.ready(p)]
        if not ready:
            states = ", ".join(f"{podinfo.name_of(p)} {podinfo.state(p)}" for p in pods[:5]) or "no pods"
            raise PrometheusUnavailable(f"no ready pod behind Service {name} in namespace {namespace} ({states})",
                                        HINT)
        pod = ready[0]
        target = entry.get("targetPort", port)
        if isinstance(target, str) and not target.isdigit():  # a named port of the pod's containers
            named = [c.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or []
                     for c in c.get("ports") or [] if c.get("name") == target]
            if not named:
                raise PrometheusUnavailable(f"pod {podinfo.name_of(pod)} has no port named {target!r} (Service {name}"
                                            f" in namespace {namespace})", HINT)
            target = named[0]
        return podinfo.name_of(pod), int(target)

    def api(self) -> PrometheusAPI:
        if self.url:
            return PrometheusAPI(self.url, self.where)
        pod, port = self._pod_and_port()
        namespace = self.service[1]
        if self._forward is None or self._forward.port != port:
            if self._forward is not None:
                self._forward.close()
            self._forward = LocalForward(self.cluster, pod, namespace, port)
        self._forward.pod = pod  # the ready pod now: a restarted Prometheus has a new one
        return PrometheusAPI(self._forward.url, self.where)

    def query(self, promql: str, fresh_for: tuple[str, list[str]] | None = None,
              timeout: float | None = None) -> list[Sample]:
        """An instant query; with `fresh_for` (namespace, pods), first wait until Prometheus has scraped each of those
        pods' targets after this call (at most `timeout`, by default three scrape intervals)."""
        api = self.api()
        if fresh_for is not None:
            self._wait_scraped_after(api, *fresh_for, time.time(), timeout, promql)
        return api.query(promql)

    def _wait_scraped_after(self, api: PrometheusAPI, namespace: str, pods: list[str], since: float,
                            timeout: float | None, promql: str) -> None:
        deadline: float | None = None
        while True:
            targets = [t for ts in targets_of(api.active_targets(), namespace, pods).values() for t in ts]
            if not targets:
                return  # Prometheus scrapes none of them: there is nothing to wait for
            if deadline is None:
                budget = timeout if timeout is not None else 3 * max(map(scrape_interval, targets)) + FRESH_SLACK
                deadline = time.monotonic() + budget
            stale = [t for t in targets if scraped_at(t) <= since]
            if not stale:  # the targets page says so before the scrape is stored: ask what a query sees
                stored = stored_scrapes(api.query(stored_up_query(targets)))
                stale = [t for t in targets if stored.get(target_key(t), 0.0) <= since]
                if not stale:
                    return
            if time.monotonic() >= deadline:
                shown = ", ".join(f"{'/'.join(target_pod(t) or ('?', '?'))} (last {t.get('lastScrape')})"
                                  for t in stale[:5])
                raise PromQLError(promql, f"{self.where} has not scraped every sidecar of namespace {namespace} "
                                          f"since the step began (waited {budget:g}s): {shown}")
            time.sleep(POLL)

    def wait_for_proxies(self, namespace: str, pods: list[str], timeout: float) -> str:
        """Wait until Prometheus scrapes every one of the pods (a target of each is `up`); what it saw, for the
        evidence. No pods: MeshlibError (a wait over nothing proves nothing)."""
        api = self.api()
        if not pods:
            raise MeshlibError(f"no pod with a sidecar runs in namespace {namespace}: there is no proxy for "
                               "Prometheus to scrape (deploy the workloads first)")
        started = time.monotonic()
        deadline = started + timeout
        while True:
            found = targets_of(api.active_targets(), namespace, pods)
            missing = [p for p, ts in found.items() if not ts]
            down = [p for p, ts in found.items() if ts and not any(t.get("health") == "up" for t in ts)]
            if not missing and not down:
                return (f"{len(pods)} proxies of namespace {namespace} scraped by {self.where}, all up after "
                        f"{time.monotonic() - started:.1f}s: {', '.join(pods)}")
            if time.monotonic() >= deadline:
                details = [f"not among its targets: {', '.join(missing)}"] if missing else []
                details += [f"{p} is {found[p][0].get('health')} ({_one_line(found[p][0].get('lastError') or '')})"
                            for p in down]
                raise MeshlibError(f"{self.where} did not scrape every proxy of namespace {namespace} within "
                                   f"{timeout:g}s: " + "; ".join(details)
                                   + " (does it scrape pods by their prometheus.io annotations, as Istio's addon "
                                     "does?)")
            time.sleep(POLL)

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None
