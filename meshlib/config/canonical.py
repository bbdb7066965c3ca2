"""Which service and version a workload is, from the labels Istio reads (its canonical service and revision).

Service: `service.istio.io/canonical-name`, else `app.kubernetes.io/name`, else `app`, else the workload's
name. Revision: `service.istio.io/canonical-revision`, else `app.kubernetes.io/version`, else `version`, else
`latest`. Steps that name "catalog v2" match on these, so workloads labelled with Kubernetes' recommended
labels are found as well as ones with Istio's `app`/`version`.
"""

from __future__ import annotations

from collections.abc import Mapping

SERVICE_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
DEFAULT_REVISION = "latest"


def service_of(labels: Mapping[str, str], workload: str) -> str:
    return next((labels[k] for k in SERVICE_LABELS if labels.get(k)), workload)


def revision_of(labels: Mapping[str, str]) -> str:
    return next((labels[k] for k in REVISION_LABELS if labels.get(k)), DEFAULT_REVISION)


def is_app(labels: Mapping[str, str], workload: str, app: str) -> bool:
    """Whether a step's `app` names this workload: its canonical service, its `app` label or its name."""
    return app in (service_of(labels, workload), labels.get("app"), workload)
