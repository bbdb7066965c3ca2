"""The seam between the step library and where the mesh runs: one small protocol, two backends.

Steps never know which backend they run on. `LocalBackend` drives the embedded mesh; the Kubernetes
backend (issue 4 leaves it for later) implements the same protocol against a real cluster.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from meshlib.config.store import ConfigStore
from meshlib.errors import MeshlibError
from meshlib.local.envoy.records import Served
from meshlib.local.mesh import LocalMesh
from meshlib.local.meshconfig import MeshConfig
from meshlib.traffic import Target
from meshlib.xds import ProxyConfig

GATEWAY = ("istio-ingressgateway", "istio-system")


class Backend(Protocol):
    name: str

    @property
    def store(self) -> ConfigStore: ...

    @property
    def time_scale(self) -> float:
        """Real seconds per second of the canary analysis clock (1.0 on a real cluster)."""
        ...

    def apply(self, paths: list[Path], namespace: str) -> list[str]: ...
    def apply_text(self, text: str, namespace: str) -> list[str]: ...
    def delete(self, paths: list[Path], namespace: str) -> list[str]: ...
    def delete_kind(self, kind: str, namespace: str) -> int: ...
    def gateway(self, host: str, path: str) -> Target: ...
    def from_workload(self, workload: str, namespace: str, url: str) -> Target: ...
    def served(self, request_id: str) -> list[Served]: ...
    def echoed_hosts(self) -> dict[str, int]:
        """Requests to external hosts that no stand-in of their own answered, by host, so far (a cluster: none)."""
        ...
    def settle(self) -> list[str]:
        """Wait (bounded) until what the proxies recorded of the requests sent so far can be read. Returns what
        could not be read in time, a line per proxy (empty when everything settled): a check that concludes from
        the records must say so, and a claim of absence must not be made over them."""
        ...
    def logs(self, workload: str, namespace: str, container: str | None = None,
             since: datetime | None = None) -> list[str]: ...
    def proxy_config(self, workload: str, namespace: str) -> ProxyConfig:
        """What the control plane translated for the workload's proxies (route prediction reads this)."""
        ...
    def config_dump(self, workload: str, namespace: str) -> dict[str, Any]:
        """The running proxy's own Envoy /config_dump."""
        ...
    def metrics_text(self, workload: str, namespace: str) -> str: ...
    def canary_status(self, name: str, namespace: str) -> dict[str, Any]: ...
    def canary_history(self, name: str, namespace: str) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


class LocalBackend:
    """The embedded mesh on loopback."""

    name = "local"

    def __init__(self, namespace: str, istio_version: str | None = None, port: int = 0,
                 seed: int | None = None, time_scale: float = 1.0,
                 config: MeshConfig | None = None) -> None:
        """`config`: user images and external stand-ins (`meshlib.local.meshconfig.read_mesh_config`)."""
        self.mesh = LocalMesh(namespace=namespace, port=port, istio_version=istio_version, seed=seed,
                              time_scale=time_scale, config=config).start()

    @property
    def store(self) -> ConfigStore:
        return self.mesh.store

    @property
    def time_scale(self) -> float:
        return self.mesh.time_scale

    def apply(self, paths: list[Path], namespace: str) -> list[str]:
        return [r.ref() for r in self.mesh.apply(paths, namespace)]

    def apply_text(self, text: str, namespace: str) -> list[str]:
        return [r.ref() for r in self.mesh.apply(namespace=namespace, text=text)]

    def delete(self, paths: list[Path], namespace: str) -> list[str]:
        return [r.ref() for r in self.mesh.delete(paths, namespace)]

    def delete_kind(self, kind: str, namespace: str) -> int:
        return self.mesh.delete_kind(kind, namespace)

    def gateway(self, host: str, path: str) -> Target:
        return Target(self.mesh.gateway_url + path, host=host, label="through the ingress gateway")

    def from_workload(self, workload: str, namespace: str, url: str) -> Target:
        pod = self.mesh.find_pods(workload, namespace)[0]
        assert pod.sidecar is not None
        return Target(url, proxy=pod.sidecar.outbound_url, label=f"from {workload}")

    def served(self, request_id: str) -> list[Served]:
        return self.mesh.served(request_id)

    def echoed_hosts(self) -> dict[str, int]:
        return self.mesh.echoed_hosts()

    def settle(self) -> list[str]:
        return self.mesh.settle_records()

    def logs(self, workload: str, namespace: str, container: str | None = None,
             since: datetime | None = None) -> list[str]:
        return self.mesh.logs(workload, namespace, container, since)

    def proxy_config(self, workload: str, namespace: str) -> ProxyConfig:
        return self.mesh.proxy_config(workload, namespace)

    def config_dump(self, workload: str, namespace: str) -> dict[str, Any]:
        return self.mesh.config_dump(workload, namespace)

    def metrics_text(self, workload: str, namespace: str) -> str:
        return self.mesh.metrics_text(workload, namespace)

    def canary_status(self, name: str, namespace: str) -> dict[str, Any]:
        return self.mesh.canary_status(name, namespace)

    def canary_history(self, name: str, namespace: str) -> list[dict[str, Any]]:
        return self.mesh.canary_history(name, namespace)

    def close(self) -> None:
        self.mesh.close()


def open_backend(kind: str, namespace: str, istio_version: str | None = None, *, seed: str | int | None = None,
                 time_scale: float = 1.0, config: MeshConfig | None = None, context: str | None = None,
                 allowed_contexts: str | None = None, kubeconfig: str | None = None,
                 gateway_url: str | None = None, prometheus_url: str | None = None) -> Backend:
    """The backend a run asked for, from its settings as written (behave userdata, pytest options): `local` (the
    embedded mesh) or `kubernetes` (a cluster named in the allowlist). Bad settings are one-line MeshlibErrors."""
    if kind == "kubernetes":
        from meshlib.kube.backend import KubernetesBackend  # the kubernetes client only for runs that use it
        from meshlib.kube.contexts import parse_allowlist

        return KubernetesBackend(namespace, context=context or None, allowed=parse_allowlist(allowed_contexts),
                                 kubeconfig=kubeconfig or None, istio_version=istio_version,
                                 gateway_url=gateway_url or None, prometheus_url=prometheus_url or None)
    if kind != "local":
        raise MeshlibError(f"backend {kind!r}: use local (the embedded mesh) or kubernetes")
    if seed in (None, "", "random"):
        fixed = None
    elif isinstance(seed, int) or str(seed).isdigit():
        fixed = int(seed)
    else:
        raise MeshlibError(f"seed {seed!r}: use a whole number, or 'random' for a fresh seed per run")
    return LocalBackend(namespace, istio_version, seed=fixed, time_scale=time_scale, config=config)
