"""Shared builders for the table-driven unit tests: a catalog v1/v2 world in a few lines.

`world()` is the walkthrough's istioinaction namespace without any routing config: Services catalog and
webapp, Deployments catalog (version v1), catalog-v2 (version v2) and webapp. Tests add a DestinationRule,
Gateway or VirtualService as inline YAML.
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

from meshlib.config.loader import load_documents
from meshlib.config.store import ConfigStore
from meshlib.profile import profile_for
from meshlib.router import Decision, Request, select_route
from meshlib.xds import ProxyConfig, build_proxy_config, find_proxy

NS = "istioinaction"
REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
CH5 = MANIFESTS / "ch5"
CH6 = MANIFESTS / "ch6"
SERVICES = MANIFESTS / "services"

CATALOG = "catalog.istioinaction.svc.cluster.local"
V1 = f"outbound|80|version-v1|{CATALOG}"
V2 = f"outbound|80|version-v2|{CATALOG}"
CATALOG_DEFAULT = f"outbound|80||{CATALOG}"
WEBAPP_PROXY = "deploy/webapp.istioinaction"
GATEWAY_PROXY = "deploy/istio-ingressgateway.istio-system"


def _deployment(name: str, labels: dict[str, str], port: int) -> str:
    def block(indent: int) -> str:
        return "\n".join(f"{' ' * indent}{k}: {v}" for k, v in labels.items())

    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
{block(6)}
  template:
    metadata:
      labels:
{block(8)}
    spec:
      containers:
      - name: app
        image: istioinaction/{labels['app']}:latest
        ports:
        - containerPort: {port}
          name: http
"""


def _service(name: str, target: int) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: 80
    targetPort: {target}
"""


WORLD = "---\n".join([
    _service("catalog", 3000),
    _deployment("catalog", {"app": "catalog", "version": "v1"}, 3000),
    _deployment("catalog-v2", {"app": "catalog", "version": "v2"}, 3000),
    _service("webapp", 8080),
    _deployment("webapp", {"app": "webapp"}, 8080),
])

CATALOG_DR = """\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: catalog
spec:
  host: catalog
  subsets:
  - name: version-v1
    labels:
      version: v1
  - name: version-v2
    labels:
      version: v2
"""

CATALOG_GATEWAY = """\
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: catalog-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["catalog.istioinaction.io"]
"""


def y(text: str) -> str:
    """Dedent an inline YAML string written inside a test."""
    return textwrap.dedent(text).lstrip("\n")


def world(*docs: str, version: str | None = None, dr: bool = True, namespace: str = NS) -> ConfigStore:
    """A store with the catalog/webapp world (+ the catalog DestinationRule unless dr=False) and `docs`."""
    store = ConfigStore(profile_for(version))
    store.apply_text(WORLD, namespace, filename="world.yaml")
    if dr:
        store.apply_text(CATALOG_DR, namespace, filename="dr.yaml")
    for i, doc in enumerate(docs):
        store.apply_text(y(doc), namespace, filename=f"doc{i}.yaml")
    return store


# Chapter 6's world: simple-web calls simple-backend, behind the ingress gateway. Every other ch6 file is applied
# over it, the way the book applies it (`kubectl apply`: a Deployment or VirtualService of the same name is
# replaced). Some files act only together: each tuple is applied in its order.
CH6_BASE = ("simple-backend.yaml", "simple-web.yaml", "simple-web-gateway.yaml")
CH6_TOGETHER = (
    ("simple-backend-vs-retry-status.yaml", "simple-backend-envoyfilter-retry-status.yaml"),
    ("simple-backend-1-failing-408.yaml", "simple-backend-vs-retry-status.yaml",
     "simple-backend-envoyfilter-retry-status.yaml"),
    ("simple-backend-1-slow.yaml", "simple-backend-vs-retry-per-try-timeout.yaml",
     "simple-backend-envoyfilter-hedging.yaml"),
    ("simple-web-3-replicas.yaml", "simple-web-dr-hash.yaml"),
    ("simple-backend-2-failing.yaml", "simple-backend-dr-outlier.yaml"),
    ("simple-backend-zones.yaml", "simple-web-zone-a.yaml", "simple-backend-dr-outlier.yaml"),
    ("simple-backend-zones.yaml", "simple-web-zone-a.yaml", "simple-backend-dr-locality-distribute.yaml"),
    ("simple-backend-zones.yaml", "simple-web-zone-a.yaml", "simple-backend-dr-outlier.yaml",
     "simple-backend-1-zone-a-failing.yaml"),
)


def ch6_sets() -> list[tuple[str, ...]]:
    """Every ch6 file over the base world on its own, then the files that act together."""
    alone = [(p.name,) for p in sorted(CH6.glob("*.yaml")) if p.name not in CH6_BASE]
    return alone + list(CH6_TOGETHER)


def ch6_store(*names: str, version: str | None = None) -> ConfigStore:
    """The ch6 base world with `names` applied over it, one file at a time, like `kubectl apply -f`."""
    store = ConfigStore(profile_for(version))
    for name in (*CH6_BASE, *names):
        store.apply_documents(load_documents([CH6 / name]), NS)
    return store


def catalog_vs(http: str, *, hosts: str = "[catalog]", gateways: str = "[mesh]", name: str = "catalog") -> str:
    """A VirtualService whose `http:` list is `http` (YAML, indented at column 0)."""
    body = textwrap.indent(y(http), "  ")
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: {name}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
{body}"""


# Every (store, proxy) the table tests translate: test_envoy_validate hands each one to Envoy.
TRANSLATED: list[tuple[ConfigStore, str]] = []


def proxy(store: ConfigStore, ref: str = WEBAPP_PROXY) -> ProxyConfig:
    workload = find_proxy(store, ref)
    assert workload is not None, f"no proxy {ref}"
    TRANSLATED.append((store, ref))
    return build_proxy_config(store, workload)


def vhost(pc: ProxyConfig, rc: str, name: str) -> dict[str, Any]:
    for vh in pc.route_configs[rc]["virtualHosts"]:
        if vh["name"] == name:
            return vh
    raise AssertionError(f"no virtual host {name} in {rc}: {[v['name'] for v in pc.route_configs[rc]['virtualHosts']]}")


def catalog_routes(store: ConfigStore, ref: str = WEBAPP_PROXY) -> list[dict[str, Any]]:
    """The routes of the catalog virtual host in the webapp sidecar's route config `80`."""
    return vhost(proxy(store, ref), "80", f"{CATALOG}:80")["routes"]


def first_route(http: str, **kw: Any) -> dict[str, Any]:
    """Translate one mesh VirtualService for catalog and return its first Envoy route on webapp's sidecar."""
    version = kw.pop("version", None)
    return catalog_routes(world(catalog_vs(http, **kw), version=version))[0]


def route_to(pc: ProxyConfig, request: Request, port: int = 80, rng: random.Random | None = None) -> Decision:
    return select_route(pc, request, port, rng or random.Random(0))
