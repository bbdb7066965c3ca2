"""Route prediction keeps the port a URL names: a service on 9080 is routed by route config `9080`, not predicted
PassthroughCluster (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import world

from meshlib.config.store import ConfigStore
from meshlib.dsl import envoy
from meshlib.dsl.world import World
from meshlib.expect import ExpectationFailed
from meshlib.steps.envoy import _split
from meshlib.xds import ProxyConfig, build_proxy_config
from meshlib.xds.build import find_proxy

REVIEWS = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  replicas: 1
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec:
      containers: [{name: reviews, image: istioinaction/reviews:latest, ports: [{containerPort: 9080}]}]
"""


class StoreBackend:
    """What prediction reads from a backend: the translated config of a proxy."""

    def __init__(self, store: ConfigStore) -> None:
        self.store = store

    def proxy_config(self, workload: str, namespace: str) -> ProxyConfig:
        found = find_proxy(self.store, f"deploy/{workload}.{namespace}")
        assert found is not None
        return build_proxy_config(self.store, found)


def test_a_url_keeps_its_port_and_query() -> None:
    assert _split("http://reviews:9080/reviews/0?x=1") == ("reviews:9080", "/reviews/0?x=1")
    assert _split("catalog.istioinaction/items") == ("catalog.istioinaction", "/items")


def test_a_service_on_9080_is_predicted_through_its_route_config() -> None:
    w = World(backend=StoreBackend(world(REVIEWS)), namespace="istioinaction", manifests=Path("."))  # type: ignore
    envoy.would_reach(w, "webapp sidecar", *_split("http://reviews:9080/reviews/0"), {}, "v2", "reviews")
    with pytest.raises(ExpectationFailed, match="would reach"):
        envoy.would_reach(w, "webapp sidecar", *_split("http://reviews:9080/reviews/0"), {}, "v1", "reviews")
