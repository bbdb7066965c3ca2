"""The builtin metric checks on a cluster (success rate, latency quantile, requests received, requests grew): the
sidecars' own counters, read from each pod's merged metrics endpoint (pilot-agent's :15020/stats/prometheus) over a
port-forward, with the same arithmetic as the embedded mesh (`meshlib.local.metricsquery.BuiltinMetrics`).

A mark (each batch of traffic makes one) reads every sidecar of the run's namespace. A pod whose counters cannot be
read then does not stop the traffic: its reason is kept, and a check that counts from that mark fails with it, since
counting from a missing starting point would count the pod's whole life.

    counters = SidecarCounters(read)         # read() -> (snapshot, {pod: why it could not be read})
    counters.mark()
    counters.success_rate("catalog", "istioinaction", window_seconds=None)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from meshlib.errors import MeshlibError
from meshlib.local.metricsquery import DURATION_BUCKET, REQUESTS, BuiltinMetrics, Mark, Snapshot

Reading = tuple[Snapshot, dict[str, str]]  # the counters by (pod, sample, labels); the pods that could not be read


def parse_counters(pod: str, text: str) -> Snapshot:
    """Istio's request counters and duration buckets of one pod's merged metrics text (Prometheus text format)."""
    out: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (REQUESTS, DURATION_BUCKET):
                key = (pod, sample.name, tuple(sorted(sample.labels.items())))
                out[key] = out.get(key, 0.0) + float(sample.value)
    return out


class SidecarCounters(BuiltinMetrics):
    """`BuiltinMetrics` over counters read from the cluster's sidecars (see the module doc)."""

    kind = "sidecars"

    def __init__(self, read: Callable[[], Reading]) -> None:
        super().__init__(None)  # type: ignore[arg-type]  # no embedded mesh: `read` reaches the pods
        self._read = read
        self.unreadable_at_mark: dict[str, str] = {}

    def mark(self) -> None:
        snapshot, unreadable = self._read()
        self.marks.append(Mark(time.time(), snapshot))
        self.unreadable_at_mark = dict(unreadable)

    def _snapshot(self) -> Snapshot:
        snapshot, unreadable = self._read()
        if unreadable:
            pod, why = next(iter(sorted(unreadable.items())))
            more = f" (and {len(unreadable) - 1} more pods)" if len(unreadable) > 1 else ""
            raise MeshlibError(f"cannot read the sidecar counters of pod {pod}{more}: {why}")
        return snapshot

    def _delta(self, window_seconds: float | None) -> Snapshot:
        if window_seconds is None and self.unreadable_at_mark:
            pod, why = next(iter(sorted(self.unreadable_at_mark.items())))
            raise MeshlibError(f"the sidecar counters of pod {pod} could not be read when the traffic started, so "
                               f"nothing can be counted from then: {why}")
        return super()._delta(window_seconds)
