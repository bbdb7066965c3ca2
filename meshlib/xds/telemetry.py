"""Which proxies write Istio's access log: meshConfig `accessLogFile`, overridden by Telemetry resources."""

from __future__ import annotations

from meshlib.config.kinds import Resource
from meshlib.config.store import ISTIO_SYSTEM, ConfigStore, Workload


def access_log_enabled(store: ConfigStore, workload: Workload) -> bool:
    """meshConfig turns it on mesh-wide; Telemetry in the root namespace, then the workload's namespace, then one
    selecting the workload override it (the most specific wins), for the `envoy` provider."""
    enabled = bool(store.mesh_settings().access_log_file)
    candidates = [t for t in store.of_kind("Telemetry") if t.namespace in (workload.namespace, ISTIO_SYSTEM)]

    def rank(t: Resource) -> int:
        if t.namespace == ISTIO_SYSTEM and workload.namespace != ISTIO_SYSTEM:
            return 0
        return 2 if (t.spec.get("selector") or {}).get("matchLabels") else 1

    for t in sorted(candidates, key=rank):
        labels = (t.spec.get("selector") or {}).get("matchLabels") or {}
        if any(workload.labels.get(k) != v for k, v in labels.items()):
            continue
        for entry in t.spec.get("accessLogging") or []:
            providers = [p.get("name") for p in entry.get("providers") or []] or ["envoy"]
            if "envoy" in providers:
                enabled = not entry.get("disabled", False)
    return enabled
