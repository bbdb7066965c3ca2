"""The resource store: what `kubectl apply` has put in the cluster, and the service registry Istio derives."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlib.config.hosts import fqdn
from meshlib.config.kinds import MeshConfig, Resource, build_resource, pem_problem, secret_values
from meshlib.config.loader import Document, load_documents, parse_documents
from meshlib.config.schema import fail
from meshlib.errors import ConfigError, Source
from meshlib.profile import DEFAULT_VERSION, IstioProfile, profile_for

ISTIO_SYSTEM = "istio-system"
INGRESS_LABELS = {"app": "istio-ingressgateway", "istio": "ingressgateway"}


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int
    name: str
    protocol: str  # HTTP, HTTP2, GRPC, TCP, UDP, or AUTO (sniffed: no name or appProtocol Istio knows)


@dataclass(frozen=True)
class ServiceInfo:
    """One registry entry: a Kubernetes Service or one host of a ServiceEntry."""

    host: str
    name: str
    namespace: str
    ports: tuple[ServicePort, ...]
    selector: dict[str, str] | None
    address: str
    origin: Resource | None
    resolution: str = "EDS"  # Envoy cluster type for outbound|P||host
    external: bool = False

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True)
class Workload:
    """A Deployment (or the built-in ingress gateway): the labels its pods carry and what they run."""

    name: str
    namespace: str
    labels: dict[str, str]
    replicas: int
    containers: tuple[dict[str, Any], ...]
    origin: Resource | None
    is_gateway: bool = False

    @property
    def proxy_id(self) -> str:
        return f"deploy/{self.name}.{self.namespace}"

    def container_ports(self) -> list[int]:
        return [p["containerPort"] for c in self.containers for p in c.get("ports") or []]


@dataclass(frozen=True)
class Credential:
    """A TLS key pair from a Secret, as istiod's SDS serves it for a gateway's `credentialName`."""

    cert: str
    key: str


CREDENTIAL_PREFIX = "kubernetes://"


def credential_resource(name: str) -> str:
    """The SDS resource name of a `credentialName` (credentials.ToResourceName): `kubernetes://<name>`."""
    return name if name.startswith(CREDENTIAL_PREFIX) else CREDENTIAL_PREFIX + name


@dataclass(frozen=True)
class MeshSettings:
    outbound_policy: str = "ALLOW_ANY"  # Istio's default mesh config (the proto zero value is REGISTRY_ONLY)
    access_log_file: str = ""
    access_log_encoding: str = "TEXT"
    default_retry_policy: dict[str, Any] | None = None


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _synthetic_ip(host: str) -> str:
    digest = hashlib.sha256(host.encode()).digest()
    return f"10.96.{digest[0]}.{digest[1] or 1}"


_PROTOCOLS = {"http": "HTTP", "http2": "HTTP2", "h2c": "HTTP2", "kubernetes.io/h2c": "HTTP2", "grpc": "GRPC",
              "grpc-web": "GRPC", "tcp": "TCP", "tls": "TCP", "https": "TCP", "mongo": "TCP", "mysql": "TCP",
              "redis": "TCP", "udp": "UDP"}


def _port_protocol(name: str | None, app_protocol: str | None) -> str:
    """Istio's protocol of a Service port (kube ConvertProtocol): `appProtocol`, else the port name up to its
    first `-`; anything else is sniffed ("AUTO": protocol.Unsupported, an HTTP-or-TCP listener on the VIP)."""
    if app_protocol:
        return _PROTOCOLS.get(app_protocol.lower(), "AUTO")
    label = (name or "").lower()
    if label.startswith("grpc-web"):
        return "GRPC"
    return _PROTOCOLS.get(label.split("-", 1)[0], "AUTO")


def _mesh_from_configmap(cm: Resource) -> dict[str, Any]:
    """The mesh config held as a YAML string in the `istio` ConfigMap (`data.mesh`), checked like meshConfig.

    Errors point at the file line inside the string: a block scalar (`mesh: |`) starts on the line after the key.
    """
    text = cm.spec.get("mesh")
    if not text:
        return {}
    if not isinstance(text, str):
        raise ConfigError(cm.where("mesh"), "data.mesh: the istio ConfigMap's mesh must be a YAML string",
                          "write it as a block: mesh: |")
    key_line = cm.where("mesh").line
    offset = key_line if ("data", "mesh") in cm.doc.block_scalars else key_line - 1
    try:
        inner = parse_documents(text, cm.source.file)
    except ConfigError as exc:
        line = (exc.source.line if exc.source else 1) + offset
        problem = exc.message.removeprefix("invalid YAML: ")
        raise ConfigError(Source(cm.source.file, line), f"data.mesh: not valid YAML: {problem}", exc.hint) from None
    if not inner:
        return {}
    if len(inner) > 1 or not isinstance(inner[0].data, dict):
        raise ConfigError(cm.where("mesh"), "data.mesh: the istio ConfigMap's mesh must be one YAML mapping")
    lines = {("data", "mesh", *path): line + offset for path, line in inner[0].lines.items()}
    lines[("data", "mesh")] = key_line
    shifted = Document(inner[0].data, Source(cm.source.file, key_line), lines)
    MeshConfig.check(inner[0].data, shifted, ("data", "mesh"))
    return MeshConfig.normalized(inner[0].data)


@dataclass
class ConfigStore:
    """Resources keyed by (kind, namespace, name) in apply order, plus everything derived from them.

    Writes replace the whole dict (copy-on-write, one writer at a time), so a reader in another thread (a step
    while the mesh's canary controller applies its objects) iterates a consistent snapshot, never a dict that
    changes size under it.
    """

    profile: IstioProfile = field(default_factory=lambda: profile_for(DEFAULT_VERSION))
    _resources: dict[tuple[str, str, str], Resource] = field(default_factory=dict)
    _write: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # --- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], namespace: str = "default",
                   profile: IstioProfile | None = None) -> ConfigStore:
        store = cls(profile or profile_for(DEFAULT_VERSION))
        store.apply_documents(load_documents(paths), namespace)
        return store

    def parse(self, docs: Iterable[Document], namespace: str) -> list[Resource]:
        """Every document as a Resource. The same object twice in one apply is an error, not last-one-wins, unless
        both copies are identical (a folder holding `catalog.yaml` and `catalog-svc.yaml`, as the book's does)."""
        out = []
        seen: dict[tuple[str, str, str], Resource] = {}
        for doc in docs:
            res = build_resource(doc, namespace)
            first = seen.setdefault(res.key, res)
            if first is not res:
                if first.doc.data == res.doc.data:
                    continue
                raise ConfigError(res.source, f"{res.ref()} is defined twice, differently (first at {first.source})",
                                  "keep one of them: the second would silently replace the first")
            self._check_version_rules(res)
            out.append(res)
        return out

    def apply_documents(self, docs: Iterable[Document], namespace: str) -> list[Resource]:
        """Validate all, then store all: a bad document leaves the store unchanged."""
        resources = self.parse(docs, namespace)
        with self._write:
            updated = dict(self._resources)
            for res in resources:
                # an update keeps its place: Kubernetes keeps creationTimestamp, and Istio orders by it
                updated[res.key] = res
            self._resources = updated
        return resources

    def apply_text(self, text: str, namespace: str = "default", filename: str = "<inline>") -> list[Resource]:
        return self.apply_documents(parse_documents(text, filename), namespace)

    def delete_documents(self, docs: Iterable[Document], namespace: str) -> list[Resource]:
        removed = []
        parsed = self.parse(docs, namespace)
        with self._write:
            updated = dict(self._resources)
            for res in parsed:
                if updated.pop(res.key, None) is not None:
                    removed.append(res)
            self._resources = updated
        return removed

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        with self._write:
            updated = dict(self._resources)
            found = updated.pop((kind, namespace, name), None) is not None
            self._resources = updated
        return found

    def checkpoint(self) -> dict[tuple[str, str, str], Resource]:
        """The store's content now (cheap: writes replace the dict), for `restore` when a change is refused."""
        return self._resources

    def restore(self, checkpoint: dict[tuple[str, str, str], Resource]) -> None:
        with self._write:
            self._resources = checkpoint

    def _check_version_rules(self, res: Resource) -> None:
        if res.kind == "ConfigMap" and (res.namespace, res.name) == (ISTIO_SYSTEM, "istio"):
            _mesh_from_configmap(res)
        if res.kind == "Gateway" and res.modelled and self.profile.minor < 27:
            for i, server in enumerate(res.spec["servers"]):
                if (server.get("tls") or {}).get("credentialNames"):
                    raise fail(res.doc, ("spec", "servers", i, "tls", "credentialNames"),
                               f"tls.credentialNames exists from Istio 1.27 (profile {self.profile.version})",
                               "use credentialName")
        if res.kind != "VirtualService" or not self.profile.weights_must_sum_100:
            return
        for i, rule in enumerate(res.spec.get("http") or []):
            dests = rule.get("route") or []
            if len(dests) > 1:
                total = sum(d.get("weight", 0) or 0 for d in dests)
                if total != 100:
                    raise fail(res.doc, ("spec", "http", i, "route"),
                               f"total destination weight {total} != 100 (Istio {self.profile.version} "
                               "rejects it; from 1.15 weights are relative)")

    # --- queries -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Resource]:
        return iter(self._resources.values())

    def __len__(self) -> int:
        return len(self._resources)

    def of_kind(self, kind: str, namespace: str | None = None) -> list[Resource]:
        return [r for r in self._resources.values()
                if r.kind == kind and r.modelled and (namespace is None or r.namespace == namespace)]

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        return self._resources.get((kind, namespace, name))

    def not_modelled(self) -> list[Resource]:
        """Resources of kinds meshlib stores but does not translate (HorizontalPodAutoscaler, Role, CRDs …)."""
        return [r for r in self._resources.values() if not r.modelled]

    def namespaces(self) -> list[str]:
        return sorted({r.namespace for r in self if r.namespace})

    # --- derived: registry ------------------------------------------------------------------------
    def workloads(self) -> list[Workload]:
        out = []
        for dep in self.of_kind("Deployment"):
            template = dep.spec["template"]
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            out.append(Workload(dep.name, dep.namespace, labels, dep.spec.get("replicas", 1),
                                tuple(template["spec"]["containers"]), dep,
                                is_gateway=_labels_match({"istio": "ingressgateway"}, labels)))
        if not any(w.is_gateway for w in out):
            out.append(Workload("istio-ingressgateway", ISTIO_SYSTEM, dict(INGRESS_LABELS), 1, (), None,
                                is_gateway=True))
        return out

    def workload(self, name: str, namespace: str) -> Workload | None:
        return next((w for w in self.workloads() if w.name == name and w.namespace == namespace), None)

    def services(self) -> list[ServiceInfo]:
        out: list[ServiceInfo] = []
        workloads = self.workloads()
        for svc in self.of_kind("Service"):
            host = fqdn(svc.name, svc.namespace)
            selector = svc.spec.get("selector")
            ports = []
            for p in svc.spec.get("ports") or []:
                ports.append(ServicePort(p["port"], self._target_port(p, selector, svc.namespace, workloads),
                                         p.get("name", ""), _port_protocol(p.get("name"), p.get("appProtocol"))))
            cluster_ip = svc.spec.get("clusterIP")
            address = cluster_ip if cluster_ip and cluster_ip != "None" else _synthetic_ip(host)
            out.append(ServiceInfo(host, svc.name, svc.namespace, tuple(ports), selector, address, svc))
        if not any(s.name == "istio-ingressgateway" and s.namespace == ISTIO_SYSTEM for s in out):
            host = fqdn("istio-ingressgateway", ISTIO_SYSTEM)
            out.append(ServiceInfo(host, "istio-ingressgateway", ISTIO_SYSTEM,
                                   (ServicePort(80, 8080, "http2", "HTTP"), ServicePort(443, 8443, "https", "TCP")),
                                   dict(INGRESS_LABELS), _synthetic_ip(host), None))
        for se in self.of_kind("ServiceEntry"):
            # a port without `protocol` is sniffed (protocol.Parse("") is Unsupported): HTTP traffic to it is
            # routed like an HTTP port's, as for an unnamed Service port
            ports = tuple(ServicePort(p["number"], p.get("targetPort") or p["number"], p.get("name", ""),
                                      (p.get("protocol") or "HTTP").upper())
                          for p in se.spec.get("ports") or [])
            resolution = {"NONE": "ORIGINAL_DST", "STATIC": "EDS", "DNS": "STRICT_DNS",
                          "DNS_ROUND_ROBIN": "LOGICAL_DNS", "DYNAMIC_DNS": "DYNAMIC_FORWARD_PROXY"}[
                se.spec.get("resolution", "NONE")]
            external = se.spec.get("location", "MESH_EXTERNAL") == "MESH_EXTERNAL"
            selector = (se.spec.get("workloadSelector") or {}).get("labels")
            addresses = se.spec.get("addresses") or []
            for h in se.spec["hosts"]:
                host = fqdn(h, se.namespace)
                out.append(ServiceInfo(host, host, se.namespace, ports, selector,
                                       addresses[0] if addresses else "", se, resolution, external))
        return out

    @staticmethod
    def _target_port(port: dict, selector: dict | None, namespace: str, workloads: list[Workload]) -> int:
        target = port.get("targetPort", port["port"])
        if isinstance(target, int):
            return target
        for w in workloads:
            if w.namespace == namespace and selector and _labels_match(selector, w.labels):
                for c in w.containers:
                    for cp in c.get("ports") or []:
                        if cp.get("name") == target:
                            return cp["containerPort"]
        return port["port"]

    def find_service(self, host: str) -> ServiceInfo | None:
        return next((s for s in self.services() if s.host == host), None)

    def service_workloads(self, svc: ServiceInfo, subset_labels: dict[str, str] | None = None) -> list[Workload]:
        """Workloads whose pods back `svc` (and carry `subset_labels`)."""
        if svc.selector is None or (svc.origin is not None and svc.origin.kind == "ServiceEntry"
                                    and not svc.selector):
            return []
        return [w for w in self.workloads()
                if w.namespace == svc.namespace and _labels_match(svc.selector, w.labels)
                and _labels_match(subset_labels or {}, w.labels)]

    def credential(self, namespace: str, name: str) -> tuple[Credential | None, str]:
        """The key pair istiod serves for `credentialName` `name` to a gateway in `namespace`, or None and why not.

        pilot/pkg/credentials/kube (extractKeyAndCert): the Secret in the gateway workload's namespace, keys
        `cert`/`key` first, then `tls.crt`/`tls.key`; pilot/pkg/xds/sds.go serves nothing when it is missing."""
        name = name.removeprefix(CREDENTIAL_PREFIX)
        secret = self.get("Secret", namespace, name)
        if secret is None:
            return None, f"no Secret {namespace}/{name}"
        values = secret_values(secret.spec)
        for cert_key, key_key in (("cert", "key"), ("tls.crt", "tls.key")):
            if values.get(cert_key) and values.get(key_key):
                problem = pem_problem("tls.crt", values[cert_key]) or pem_problem("tls.key", values[key_key])
                if problem:
                    return None, f"Secret {namespace}/{name}: {cert_key}/{key_key}: {problem}"
                return Credential(values[cert_key].decode("utf-8", "replace"),
                                  values[key_key].decode("utf-8", "replace")), ""
        return None, (f"Secret {namespace}/{name} has no non-empty cert and key, nor tls.crt and tls.key "
                      f"(it has {', '.join(sorted(values)) or 'no keys'})")

    # --- derived: mesh config ---------------------------------------------------------------------
    def mesh_settings(self) -> MeshSettings:
        mesh: dict[str, Any] = {}
        for op in self.of_kind("IstioOperator"):
            mesh.update(op.spec.get("meshConfig") or {})
        cm = self.get("ConfigMap", ISTIO_SYSTEM, "istio")
        if cm is not None:
            mesh.update(_mesh_from_configmap(cm))
        policy = (mesh.get("outboundTrafficPolicy") or {}).get("mode", "ALLOW_ANY")
        return MeshSettings(policy, mesh.get("accessLogFile", ""), mesh.get("accessLogEncoding", "TEXT"),
                            mesh.get("defaultHttpRetryPolicy"))
