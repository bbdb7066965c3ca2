"""Every pure stage a manifest goes through, end to end: load, validate, analyze, translate each proxy, bind it to
addresses, build the static bootstrap, render every `proxy-config` view, and explain a few requests.

The fuzz tests and the bad-input catalogue run inputs through `run_pipeline`; whatever it raises other than a
`MeshlibError` is a crash a user would see as a traceback.
"""

from __future__ import annotations

import json

from meshlib.config.analyze import analyze
from meshlib.config.loader import parse_documents
from meshlib.config.store import ConfigStore
from meshlib.explain import explain_json, explain_text
from meshlib.profile import profile_for
from meshlib.router import Request
from meshlib.xds import build_proxy_config
from meshlib.xds.bind import Placement, PodEndpoint, bind
from meshlib.xds.dialect import render
from meshlib.xds.static import static_bootstrap

REQUESTS = (Request.of("catalog.istioinaction", "/items"), Request.of("webapp.istioinaction.io", "/api/catalog"),
            Request.of("simple-backend", "/", headers={"x-user": "a"}), Request.of("localhost:30000", "/"))


def load_store(text: str, version: str = "1.17", namespace: str = "istioinaction",
               filename: str = "fuzz.yaml") -> ConfigStore:
    store = ConfigStore(profile_for(version))
    store.apply_documents(parse_documents(text, filename), namespace)
    return store


def run_pipeline(store: ConfigStore) -> None:
    """Every stage over `store`; raises only what the stages raise."""
    for finding in analyze(store):
        str(finding)
    workloads = store.workloads()
    ip = {(w.namespace, w.name): f"127.0.0.{i + 2}" for i, w in enumerate(workloads)}
    pods = {key: [PodEndpoint(addr)] for key, addr in ip.items()}
    bound = []
    for w in workloads:
        pc = build_proxy_config(store, w)
        for output in ("short", "json", "config_dump"):
            render(pc, "all", output)
        addr = ip[(w.namespace, w.name)]
        place = Placement(addr, "/dev/null", ("127.0.0.1", 9),
                          {p: (addr, 40000 + (p % 20000)) for p in w.container_ports()}, {8080: (addr, 30000)})
        bound.append(bind(pc, place, pods))
        for request in REQUESTS:
            explain_text(store, w.proxy_id, request)
            json.dumps(explain_json(store, w.proxy_id, request))
    json.dumps(static_bootstrap(bound), allow_nan=False)
