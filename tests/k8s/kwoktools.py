"""Helpers for tests that point kwok's simulated pods at this machine (its debugging kinds: see KWOK_DEBUG_KINDS in
controlplane.py) and wait for things on the test control plane."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from controlplane import KWOK_API, ControlPlane
from kubernetes import config
from kubernetes.dynamic import DynamicClient

from meshlib.kube.cluster import ClusterError

T = TypeVar("T")


def dynamic(cp: ControlPlane) -> DynamicClient:
    """The official client's dynamic client, as the control plane's admin (the tests' own access, not meshlib's)."""
    return DynamicClient(config.new_client_from_config(config_file=str(cp.kubeconfig), context="admin",
                                                       persist_config=False))


def kwok(cp: ControlPlane, kind: str, name: str, spec: dict[str, Any],
         namespace: str | None = None) -> Callable[[], None]:
    """Create one of kwok's debugging objects; returns what deletes it."""
    d = dynamic(cp)
    resource = d.resources.get(api_version=KWOK_API, kind=kind)
    d.create(resource, body={"apiVersion": KWOK_API, "kind": kind,
                             "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
                             "spec": spec}, namespace=namespace)
    return lambda: d.delete(resource, name=name, namespace=namespace)


def once_kwok_knows(ask: Callable[[], T], timeout: float = 15.0) -> T:
    """`ask()`, again while kwok says nothing points that pod's stream anywhere (it learns of a new object by its
    watch, a moment after the API server stored it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ask()
        except ClusterError as exc:
            if not any(f"no {what} found" in str(exc) or f"{what} not found" in str(exc)
                       for what in ("logs", "exec", "forward")) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def wait_for(what: str, check: Callable[[], T], timeout: float = 60.0, poll: float = 0.1) -> T:
    """`check()` again until it returns something true; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)
    return value


def ready_pods(cp: ControlPlane, namespace: str, selector: str) -> list[str]:
    """Names of the Ready pods that match the label selector (URL-encoded by the caller where needed)."""
    pods = cp.api("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"]
    return sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or []))
