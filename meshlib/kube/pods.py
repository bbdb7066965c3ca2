"""Pods as the API returns them (plain dicts): which containers they have, whether they are ready, how to say their
state in a message. Pure: no I/O."""

from __future__ import annotations

from typing import Any

PROXY_CONTAINER = "istio-proxy"


def name_of(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def containers(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]


def has_proxy(pod: dict[str, Any]) -> bool:
    """Whether the pod has Istio's sidecar: a container, or an init container (Istio's native sidecars)."""
    spec = pod.get("spec") or {}
    return any(c.get("name") == PROXY_CONTAINER for c in [*(spec.get("containers") or []),
                                                           *(spec.get("initContainers") or [])])


def app_container(pod: dict[str, Any]) -> str:
    """The app's container: the first that is not the sidecar."""
    names = containers(pod)
    return next((n for n in names if n != PROXY_CONTAINER), PROXY_CONTAINER)


def terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def finished(pod: dict[str, Any]) -> bool:
    """A pod whose containers have all ended for good (a Job's, say): it will never be Ready again."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not terminating(pod)


def ready(pod: dict[str, Any]) -> bool:
    if terminating(pod):
        return False
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def state(pod: dict[str, Any]) -> str:
    """`Pending`, `Running, not ready`, `terminating`, … for a message."""
    if terminating(pod):
        return "terminating"
    status = pod.get("status") or {}
    phase = status.get("phase") or "unknown"
    if phase != "Running":
        reasons = [c.get("reason") or c.get("message") for c in status.get("conditions") or []
                   if c.get("status") == "False" and (c.get("reason") or c.get("message"))]
        return f"{phase} ({reasons[0]})" if reasons else str(phase)
    return "Running, not ready"


def sidecar_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods with a sidecar that are meant to run (neither being deleted nor finished), by name."""
    return sorted((p for p in pods if has_proxy(p) and not terminating(p) and not finished(p)), key=name_of)
