"""Traffic and what the proxies saw, on the kubernetes backend, against the real API server with kwok's nodes: through
the ingress gateway (a local port whose connections are port-forwards to the gateway's pod), from inside the mesh
(one curl exec per batch in the client pod), which pod served a request (the sidecars' access logs), Envoy's config
dump and the merged metrics (port-forwards to the pods' admin ports).

kwok's debugging objects stand in for what runs in the pods: a port-forward reaches an HTTP server this test starts on
127.0.0.1, an exec runs this machine's sh and curl, and a sidecar's log is a file of Istio TEXT lines written with
meshlib's own format definition (`meshlib.xds.accesslog.ISTIO_TEXT_FORMAT`). No Istio runs here: what these tests show
is the backend's side of each protocol, not Envoy's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiohttp import web
from controlplane import HOST, ControlPlane, install_crds, not_built_reason
from kwoktools import kwok, once_kwok_knows, ready_pods, wait_for

from meshlib.errors import MeshlibError
from meshlib.kube import backend as kube_backend
from meshlib.kube.accesslogs import TEXT_LINE
from meshlib.kube.backend import TELEMETRY_NAME, KubernetesBackend
from meshlib.kube.cluster import ClusterError
from meshlib.traffic import Plan, send
from meshlib.xds.accesslog import ISTIO_TEXT_FORMAT

NOT_BUILT = not_built_reason()
pytestmark = [pytest.mark.k8s, pytest.mark.skipif(NOT_BUILT is not None, reason=NOT_BUILT or "")]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("admin",)
GATEWAY_NS = "istio-system"
GATEWAY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: istio-ingressgateway, namespace: istio-system, labels: {app: istio-ingressgateway}}
spec:
  replicas: 1
  selector: {matchLabels: {app: istio-ingressgateway, istio: ingressgateway}}
  template:
    metadata: {labels: {app: istio-ingressgateway, istio: ingressgateway}}
    spec:
      containers:
      - {name: istio-proxy, image: docker.io/istio/proxyv2:1.28.1, ports: [{containerPort: 8080}]}
"""
# the walkthrough's client as injection leaves it: curl in the app's container, and the sidecar
SLEEP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleep}
spec:
  selector: {matchLabels: {app: sleep}}
  template:
    metadata: {labels: {app: sleep}}
    spec:
      containers:
      - {name: sleep, image: curlimages/curl, command: [/bin/sleep, infinity]}
      - {name: istio-proxy, image: docker.io/istio/proxyv2:1.28.1}
"""
CATALOG = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: catalog}
spec:
  replicas: 2
  selector: {matchLabels: {app: catalog, version: v1}}
  template:
    metadata: {labels: {app: catalog, version: v1}}
    spec:
      containers:
      - {name: catalog, image: istioinaction/catalog:latest, ports: [{containerPort: 3000}]}
      - {name: istio-proxy, image: docker.io/istio/proxyv2:1.28.1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: catalog-v2}
spec:
  replicas: 1
  selector: {matchLabels: {app: catalog, version: v2}}
  template:
    metadata: {labels: {app: catalog, version: v2}}
    spec:
      containers:
      - {name: catalog, image: istioinaction/catalog:latest, ports: [{containerPort: 3000}]}
      - {name: istio-proxy, image: docker.io/istio/proxyv2:1.28.1}
"""


# --- helpers ------------------------------------------------------------------------------------------------------
def backend(cp: ControlPlane, namespace: str, **kw: Any) -> KubernetesBackend:
    return KubernetesBackend(namespace, context="admin", allowed=ALLOWED, kubeconfig=cp.kubeconfig,
                             log_flush_wait=0, **kw)


def pods_of(b: KubernetesBackend, namespace: str, selector: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in b.cluster.list("v1", "Pod", namespace, selector))


def refused(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@dataclass
class App:
    """What the local server saw: each request's path, Host, x-request-id and headers; the most at once."""

    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def app_server(routes: Callable[[App], list[web.RouteDef]] | None = None, delay: float = 0.0) -> Iterator[App]:
    """An aiohttp server on 127.0.0.1 in a thread of its own, answering like an app: JSON naming what it was asked
    (path, Host, x-request-id), /status/<code> with that code; or the `routes` given."""
    app = App()

    async def echo(request: web.Request) -> web.Response:
        with app.lock:
            app.in_flight += 1
            app.most_in_flight = max(app.most_in_flight, app.in_flight)
            app.seen.append({"path": request.path_qs, "host": request.headers.get("Host"),
                             "request_id": request.headers.get("x-request-id"), "headers": dict(request.headers)})
        try:
            if delay:
                await asyncio.sleep(delay)
            match = re.fullmatch(r"/status/(\d{3})", request.path)
            body = {"path": request.path_qs, "host": request.headers.get("Host"),
                    "request_id": request.headers.get("x-request-id")}
            return web.json_response(body, status=int(match.group(1)) if match else 200,
                                     headers={"x-served-by": "local-app"})
        finally:
            with app.lock:
                app.in_flight -= 1

    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        web_app = web.Application()
        web_app.add_routes(routes(app) if routes else [web.route("*", "/{tail:.*}", echo)])
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        app.url = f"http://{HOST}:{port}"
        runner_box.append(runner)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10), "the local app did not start"
    try:
        yield app
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def text_line(**values: str) -> str:
    """One access-log line in Istio's TEXT format as meshlib defines it (1.24 and later: `_RAW` cluster); operators
    not given print `-`, as Envoy does."""
    fmt = ISTIO_TEXT_FORMAT.replace("{cluster}", "%UPSTREAM_CLUSTER_RAW%")
    return re.sub(r"%([A-Z_]+(?:\([^)]*\))?)%", lambda m: values.get(m.group(1), "-"), fmt).rstrip("\n")


def access_line(at: datetime, request_id: str, cluster: str, authority: str = "catalog.istioinaction:80",
                path: str = "/items", status: int = 200) -> str:
    return text_line(**{"START_TIME": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
                        "REQ(:METHOD)": "GET", "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": path, "PROTOCOL": "HTTP/1.1",
                        "RESPONSE_CODE": str(status), "RESPONSE_CODE_DETAILS": "via_upstream",
                        "BYTES_SENT": "311", "DURATION": "3", "REQ(USER-AGENT)": "curl/8.11.1 (x86_64) libcurl",
                        "REQ(X-REQUEST-ID)": request_id, "REQ(:AUTHORITY)": authority,
                        "UPSTREAM_HOST": "10.244.0.9:3000", "UPSTREAM_CLUSTER_RAW": cluster,
                        "DOWNSTREAM_LOCAL_ADDRESS": "10.244.0.9:3000", "DOWNSTREAM_REMOTE_ADDRESS": "10.244.0.4:51234",
                        "ROUTE_NAME": "default"})


def cri_log(lines: list[tuple[datetime, str]]) -> str:
    """A container log file as a CRI runtime writes it (and kwok reads it)."""
    return "".join(f"{at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} stdout F {text}\n" for at, text in lines)


# --- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ingress(cp: ControlPlane) -> Iterator[str]:
    """Istio's ingress gateway as a Deployment in istio-system (one kwok pod, Ready); its pod's name. Removed after
    the module, so that other tests see a cluster without one."""
    with contextlib.suppress(urllib.error.HTTPError):
        cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": GATEWAY_NS}})
    cp.api("POST", f"/apis/apps/v1/namespaces/{GATEWAY_NS}/deployments", yaml.safe_load(GATEWAY))
    deadline = time.monotonic() + 60
    while True:
        pods = cp.api("GET", f"/api/v1/namespaces/{GATEWAY_NS}/pods?labelSelector=istio%3Dingressgateway")["items"]
        ready = [p["metadata"]["name"] for p in pods if any(
            c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])]
        if ready:
            break
        assert time.monotonic() < deadline, "the gateway's pod did not become Ready"
        time.sleep(0.2)
    try:
        yield ready[0]
    finally:
        cp.api("DELETE", f"/apis/apps/v1/namespaces/{GATEWAY_NS}/deployments/istio-ingressgateway",
               {"propagationPolicy": "Foreground"})


@pytest.fixture
def gateway_app(cp: ControlPlane, ingress: str) -> Iterator[App]:
    """The gateway pod's port 8080 is a local app (kwok ClusterPortForward for istio-system); it answers after 50 ms,
    so that requests overlap."""
    with app_server(delay=0.05) as app:
        delete = kwok(cp, "ClusterPortForward", "gateway-8080", {
            "selector": {"matchNamespaces": [GATEWAY_NS]},
            "forwards": [{"ports": [8080], "target": {"address": HOST, "port": port_of(app.url)}}]})
        try:
            yield app
        finally:
            delete()


def warm(b: KubernetesBackend, pod: str, namespace: str, port: int) -> None:
    """Wait until kwok knows where the pod's port goes (one request that is not counted by the tests)."""
    once_kwok_knows(lambda: b.cluster.http_get(pod, namespace, port, "/warm-up"))


# --- through the ingress gateway --------------------------------------------------------------------------------
def test_requests_through_the_gateway_go_over_a_local_port_forward(cp: ControlPlane, ingress: str,
                                                                   gateway_app: App) -> None:
    b = backend(cp, "gw-forward")
    try:
        warm(b, ingress, GATEWAY_NS, 8080)
        gateway_app.seen.clear()
        target = b.gateway("catalog.istioinaction.io", "/items")
        assert target.label == "through the ingress gateway"
        assert re.fullmatch(rf"http://{re.escape(HOST)}:\d+/items", target.url), target.url
        assert target.host == "catalog.istioinaction.io" and target.runner is None
        local_port = port_of(target.url.removesuffix("/items"))

        started = time.monotonic()
        responses = send(target, Plan(count=20, concurrency=4))
        took = time.monotonic() - started
        assert len(responses) == 20
        assert [r.status for r in responses] == [200] * 20, [(r.status, r.error) for r in responses]
        for r in responses:  # each answer is the one to this request: the app echoes its x-request-id
            assert r.json() == {"path": "/items", "host": "catalog.istioinaction.io", "request_id": r.request_id}
            assert r.headers["x-served-by"] == "local-app"
        assert sorted(s["request_id"] for s in gateway_app.seen) == sorted(r.request_id for r in responses)
        # four at a time, each through a port-forward stream of its own (50 ms answers overlapped)
        assert gateway_app.most_in_flight >= 2, gateway_app.most_in_flight
        forward = b._forwards[(GATEWAY_NS, 8080)]
        assert 2 <= forward.accepted <= 20 and forward.errors == []
        print(f"20 requests through the gateway port-forward in {took:.2f}s "
              f"({forward.accepted} connections, {gateway_app.most_in_flight} at once)")

        # the next batch reuses the same local port
        assert b.gateway("catalog.istioinaction.io", "/status/503").url == f"http://{HOST}:{local_port}/status/503"
        assert {r.status for r in send(b.gateway("catalog.istioinaction.io", "/status/503"), Plan(count=3))} == {503}
    finally:
        b.close()
    assert refused(local_port), "the local port still accepts connections after close()"
    assert not [t for t in threading.enumerate() if t.name.startswith("meshlib-forward")], \
        [t.name for t in threading.enumerate()]


def test_a_gateway_url_is_used_as_given(cp: ControlPlane) -> None:
    with app_server() as app:
        b = backend(cp, "gw-url", gateway_url=app.url + "/")
        try:
            target = b.gateway("webapp.istioinaction.io", "/api/catalog")
            assert target.url == app.url + "/api/catalog"
            responses = send(target, Plan(count=5, concurrency=2))
            assert [r.json()["host"] for r in responses] == ["webapp.istioinaction.io"] * 5
            assert b._forwards == {}
        finally:
            b.close()
    with pytest.raises(MeshlibError, match="gateway_url 'localhost:30080': give the gateway's scheme, host and port"):
        backend(cp, "gw-url", gateway_url="localhost:30080")


def test_no_gateway_to_forward_to_is_one_line(cp: ControlPlane) -> None:
    b = backend(cp, "gw-missing", ingress=("no-such-gateway", GATEWAY_NS, 8080))
    try:
        with pytest.raises(MeshlibError) as err:
            b.gateway("catalog.istioinaction.io", "/items")
        message = str(err.value)
        assert message.startswith("no Deployment no-such-gateway in namespace istio-system; sending through the "
                                  "ingress gateway needs Istio's ingress gateway there, or -D gateway_url=URL")
        assert "\n" not in message
    finally:
        b.close()


# --- from inside the mesh -----------------------------------------------------------------------------------------
@pytest.fixture
def sleep(cp: ControlPlane, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[KubernetesBackend, str,
                                                                                              Path]]:
    """The sleep client rolled out; exec in its `sleep` container runs this machine's sh, with a `curl` first on the
    PATH that appends a line to a counter file and runs the real curl. (backend, namespace, counter file)."""
    namespace = "traffic-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    real_curl = shutil.which("curl")
    if real_curl is None:
        pytest.skip("no curl on this machine: the exec tests run it as the client pod's curl")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    counter = tmp_path / "curl-runs"
    wrapper = bin_dir / "curl"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> {counter}\nexec {real_curl} "$@"\n')
    wrapper.chmod(0o755)
    b = backend(cp, namespace)
    delete = None
    try:
        b.apply_text(SLEEP, namespace)
        delete = kwok(cp, "ClusterExec", f"{namespace}-exec", {"selector": {"matchNamespaces": [namespace]}, "execs": [
            {"containers": ["sleep"], "local": {"workDir": str(tmp_path), "envs": [
                {"name": "PATH", "value": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}]}}]})
        pod = pods_of(b, namespace, "app=sleep")[0]
        once_kwok_knows(lambda: b.cluster.exec(pod, namespace, "sleep", ["true"]))
        yield b, namespace, counter
    finally:
        if delete is not None:
            delete()
        b.close()


def test_a_batch_from_a_workload_is_one_exec_of_curl_in_its_pod(sleep) -> None:
    b, namespace, counter = sleep
    execs: list[list[str]] = []
    real_exec = b.cluster.exec

    def counting_exec(pod: str, ns: str, container: str | None, command: list[str], **kw: Any):
        execs.append([pod, container or "", *command[:2]])
        return real_exec(pod, ns, container, command, **kw)
    b.cluster.exec = counting_exec  # type: ignore[method-assign]

    with app_server(delay=0.05) as app:
        target = b.from_workload("sleep", namespace, f"{app.url}/items?page=1")
        assert target.label == "from sleep" and target.runner is not None
        started = time.monotonic()
        responses = send(target, Plan(count=12, concurrency=4, headers={"x-istio-cohort": "internal"},
                                      rotate=("x-variant", ("a", "b", "c"))))
        took = time.monotonic() - started

    assert len(responses) == 12
    assert [r.status for r in responses] == [200] * 12, [(r.status, r.error) for r in responses]
    host = app.url.removeprefix("http://")
    for i, r in enumerate(responses):
        assert r.json() == {"path": "/items?page=1", "host": host, "request_id": r.request_id}
        assert r.headers["x-served-by"] == "local-app" and r.headers["Content-Type"].startswith("application/json")
        assert r.sent_headers == {"x-istio-cohort": "internal", "x-variant": "abc"[i % 3]}
        assert r.elapsed_ms > 0 and r.error == ""
    assert len({r.request_id for r in responses}) == 12
    # the app saw the 12 requests, with their headers, several at once ...
    by_id = {s["request_id"]: s["headers"] for s in app.seen}
    assert set(by_id) == {r.request_id for r in responses}
    assert all(by_id[r.request_id]["x-istio-cohort"] == "internal" and
               by_id[r.request_id]["x-variant"] == r.sent_headers["x-variant"] for r in responses)
    assert app.most_in_flight >= 2, app.most_in_flight
    # ... from ONE exec in the client pod, which ran curl once
    assert len(execs) == 1 and execs[0][1:3] == ["sleep", "sh"], execs
    assert len(counter.read_text().splitlines()) == 1
    print(f"12 requests from sleep in one exec: {took:.2f}s")

    # answers that are not 200 keep their status; a refused connection is status 0 with curl's reason
    with app_server() as app:
        statuses = send(b.from_workload("sleep", namespace, f"{app.url}/status/503"), Plan(count=3))
    assert [r.status for r in statuses] == [503] * 3 and statuses[0].json()["path"] == "/status/503"
    closed = send(b.from_workload("sleep", namespace, f"{app.url}/items"), Plan(count=2))  # the app is gone now
    assert [r.status for r in closed] == [0, 0] and all("connect" in r.error.lower() for r in closed), closed
    assert len(execs) == 3 and len(counter.read_text().splitlines()) == 3


def test_sending_from_a_workload_says_in_one_line_what_is_missing(cp: ControlPlane, sleep, tmp_path: Path) -> None:
    b, namespace, _ = sleep
    with pytest.raises(MeshlibError, match="sending for a duration from a client pod"):
        send(b.from_workload("sleep", namespace, "http://catalog/items"), Plan(seconds=2))
    with pytest.raises(MeshlibError, match="no Deployment webapp in namespace"):
        b.from_workload("webapp", namespace, "http://catalog/items")
    # a client without curl: its PATH has the shell's tools but no curl
    tools = tmp_path / "no-curl"
    tools.mkdir()
    for tool in ("mktemp", "mkdir", "rm", "cat", "head"):
        (tools / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    b.apply_text(SLEEP.replace("name: sleep}", "name: nocurl}").replace("app: sleep", "app: nocurl")
                 .replace("name: sleep,", "name: client,"), namespace)
    delete = kwok(cp, "ClusterExec", f"{namespace}-nocurl", {"selector": {"matchNamespaces": [namespace]}, "execs": [
        {"containers": ["client"], "local": {"envs": [{"name": "PATH", "value": str(tools)}]}}]})
    try:
        pod = pods_of(b, namespace, "app=nocurl")[0]
        once_kwok_knows(lambda: b.cluster.exec(pod, namespace, "client", ["sh", "-c", "true"]))
        with pytest.raises(MeshlibError) as err:
            send(b.from_workload("nocurl", namespace, "http://catalog/items"), Plan(count=2))
        message = str(err.value)
        assert message.startswith(f"sending 2 requests from nocurl (pod {pod}) to http://catalog/items: curl is not "
                                  "in the container"), message
        assert "\n" not in message
    finally:
        delete()


# --- which pod served a request -------------------------------------------------------------------------------------
def test_served_reads_the_destination_sidecars_access_logs(cp: ControlPlane, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    install_crds(cp, cp.build.istio_crds)
    namespace = "traffic-served"
    b = backend(cp, namespace)
    deletes: list[Callable[[], None]] = []
    try:
        # the run turned the access logs on for its namespace
        assert b.access_logs == "telemetry.istio.io/v1"
        telemetry = cp.api("GET", f"/apis/telemetry.istio.io/v1/namespaces/{namespace}/telemetries/{TELEMETRY_NAME}")
        assert telemetry["spec"] == {"accessLogging": [{"providers": [{"name": "envoy"}]}]}

        b.apply_text(CATALOG, namespace)
        v1 = pods_of(b, namespace, "app=catalog,version=v1")
        v2 = pods_of(b, namespace, "app=catalog,version=v2")
        assert len(v1) == 2 and len(v2) == 1
        now = datetime.now(UTC)
        at = [now - timedelta(seconds=5) + timedelta(milliseconds=10 * i) for i in range(10)]
        ids = [f"0b5e6f52-7a1c-4f0e-9c1d-00000000000{i}" for i in range(6)]
        inbound = "inbound|3000||"
        outbound = "outbound|80||catalog.istioinaction.svc.cluster.local"
        logs = {
            v1[0]: [(at[0], access_line(at[0], ids[0], inbound)),
                    (at[1], "2026-01-01T00:00:00.000000Z\tinfo\tEnvoy proxy is ready"),  # pilot-agent's own line
                    (at[2], access_line(at[2], ids[2], inbound, status=503))],
            v1[1]: [(at[3], access_line(at[3], ids[1], inbound)),
                    # an outbound call this pod made: not a request it served
                    (at[4], access_line(at[4], ids[3], outbound, authority="webapp.istioinaction:80"))],
            v2[0]: [(at[5], access_line(at[5], ids[3], inbound)),
                    # the mirrored copy of ids[0]: Envoy adds -shadow to the authority
                    (at[6], access_line(at[6], ids[0], inbound, authority="catalog.istioinaction-shadow:80"))],
        }
        files = {}
        for pod, lines in logs.items():
            files[pod] = tmp_path / f"{pod}.istio-proxy.log"
            files[pod].write_text(cri_log(lines))
            assert all(TEXT_LINE.fullmatch(text) for _, text in lines if text.startswith("["))
            deletes.append(kwok(cp, "Logs", pod, {"logs": [{"containers": ["istio-proxy"],
                                                            "logsFile": str(files[pod])}]}, namespace))

        once_kwok_knows(b.settle)
        assert b.served(ids[5]) == []
        first = b.served(ids[0])
        assert [(s.pod, s.peer.workload, s.peer.canonical_revision, s.mirrored) for s in first] == [
            (v1[0], "catalog", "v1", False), (v2[0], "catalog-v2", "v2", True)]
        assert (first[0].path, first[0].status, first[0].authority) == ("/items", 200, "catalog.istioinaction:80")
        assert abs(first[0].started - at[0].timestamp()) < 0.002
        assert [(s.pod, s.status) for s in b.served(ids[1])] == [(v1[1], 200)]
        assert [(s.pod, s.status) for s in b.served(ids[2])] == [(v1[0], 503)]
        # only the destination's inbound line: the caller's outbound line of the same request is not "served"
        assert [(s.pod, s.peer.version, s.peer.namespace) for s in b.served(ids[3])] == [(v2[0], "v2", namespace)]

        # a later settle reads what was appended since (and what it had read before counts once)
        later = datetime.now(UTC)
        with files[v2[0]].open("a") as f:
            f.write(cri_log([(later, access_line(later, ids[4], inbound))]))
        assert b.settle() == []  # nothing was left unread
        assert [s.pod for s in b.served(ids[4])] == [v2[0]]
        assert len(b.served(ids[0])) == 2 and len(b._served) == 6  # five lines, and the one appended

        # a read that fills its byte limit says so, pod by pod: the lines after the limit were not read
        monkeypatch.setattr(kube_backend, "LOG_LIMIT", 64)
        cut = b.settle()
        assert sorted(line.split(":")[0] for line in cut) == sorted(f"pod {pod}" for pod in logs), cut
        assert all(line.endswith("a read takes; the lines after that were not read") for line in cut), cut
    finally:
        for delete in deletes:
            delete()
        b.close()


# --- Envoy's config and the metrics -------------------------------------------------------------------------------
def test_config_dump_and_metrics_come_from_the_pods_admin_ports(cp: ControlPlane) -> None:
    namespace = "traffic-admin"
    b = backend(cp, namespace)
    deletes: list[Callable[[], None]] = []
    asked: list[str] = []

    def admin_routes(name: str, config_status: int = 200) -> Callable[[App], list[web.RouteDef]]:
        def routes(app: App) -> list[web.RouteDef]:
            async def config_dump(request: web.Request) -> web.Response:
                asked.append(f"{name} {request.path_qs}")
                bootstrap = {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                             "bootstrap": {"node": {"id": name}}}
                return web.json_response({"configs": [bootstrap]}, status=config_status)

            async def metrics(request: web.Request) -> web.Response:
                asked.append(f"{name} {request.path_qs}")
                return web.Response(text=f'istio_requests_total{{pod="{name}"}} 3\nenvoy_up{{pod="{name}"}} 1',
                                    content_type="text/plain")
            return [web.get("/config_dump", config_dump), web.get("/stats/prometheus", metrics)]
        return routes

    try:
        b.apply_text(CATALOG, namespace)
        pods = pods_of(b, namespace, "app=catalog,version=v1")
        with contextlib.ExitStack() as stack:
            for n, pod in enumerate(pods):
                server = stack.enter_context(app_server(admin_routes(pod, 200 if n == 0 else 404)))
                # a PortForward is named like its pod: the admin port and the merged-metrics port
                deletes.append(kwok(cp, "PortForward", pod, {"forwards": [
                    {"ports": [15000, 15020], "target": {"address": HOST, "port": port_of(server.url)}}]}, namespace))
            warm(b, pods[0], namespace, 15000)
            warm(b, pods[1], namespace, 15000)
            asked.clear()

            dump = b.config_dump("catalog", namespace)
            assert dump["configs"][0]["bootstrap"]["node"]["id"] == pods[0]
            assert asked == [f"{pods[0]} /config_dump?include_eds"]

            text = b.metrics_text("catalog", namespace)
            assert text == "".join(f'istio_requests_total{{pod="{p}"}} 3\nenvoy_up{{pod="{p}"}} 1\n' for p in pods)

            # the second pod's admin answers 404: one line naming the pod and the answer
            with pytest.raises(MeshlibError) as err:
                b._admin_get(pods[1], namespace, 15000, "/config_dump?include_eds", "Envoy admin")
            assert str(err.value).startswith(f"the Envoy admin of pod {pods[1]} in namespace {namespace} answered "
                                             "/config_dump?include_eds with HTTP 404")
            assert "\n" not in str(err.value)
        # the admin servers are gone: the port-forward's error, in one line
        with pytest.raises(ClusterError) as gone:
            b.config_dump("catalog", namespace)
        assert "connection refused" in str(gone.value) and "\n" not in str(gone.value)
    finally:
        for delete in deletes:
            delete()
        b.close()


# --- a feature on the kubernetes backend --------------------------------------------------------------------------
FEATURE = """\
Feature: traffic on a cluster
  Scenario: requests through the ingress gateway
    Given the manifest "services/catalog/kubernetes/catalog.yaml" is applied
    And clients call catalog.istioinaction.io through the ingress gateway
    When 10 requests are sent to /items
    Then every response has status 200
"""


def test_a_scenario_sends_traffic_through_the_gateway_on_the_kubernetes_backend(
        cp: ControlPlane, ingress: str, gateway_app: App, tmp_path: Path) -> None:
    probe = backend(cp, "gw-probe")
    try:
        warm(probe, ingress, GATEWAY_NS, 8080)
    finally:
        probe.close()
    gateway_app.seen.clear()
    shutil.copytree(ROOT / "steps", tmp_path / "steps")
    shutil.copy(ROOT / "environment.py", tmp_path)
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "gateway.feature").write_text(FEATURE)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "behave", "-f", "plain", "--no-timings", "--no-capture",
         "-D", f"manifests={ROOT / 'manifests'}", "-D", "backend=kubernetes", "-D", f"kubeconfig={cp.kubeconfig}",
         "-D", "context=admin", "-D", "allowed_contexts=admin", "-D", "namespace=gw-behave"],
        cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "1 scenario passed, 0 failed" in run.stdout, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    # the ten requests reached the gateway's port with the scenario's Host
    assert [(s["path"], s["host"]) for s in gateway_app.seen] == [("/items", "catalog.istioinaction.io")] * 10
    print(f"behave on the kubernetes backend: {time.monotonic() - started:.1f}s")


# --- after an apply: the proxies it changes have istiod's push -----------------------------------------------------
ISTIOD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: istiod, namespace: istio-system, labels: {app: istiod}}
spec:
  selector: {matchLabels: {app: istiod, istio: pilot}}
  template:
    metadata: {labels: {app: istiod, istio: pilot}}
    spec:
      containers:
      - {name: discovery, image: docker.io/istio/pilot:1.28.1, ports: [{containerPort: 15014}]}
"""
ROUTES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: catalog}
spec:
  host: catalog
  subsets:
  - {name: version-v1, labels: {version: v1}}
  - {name: version-v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - route:
    - {destination: {host: catalog, subset: version-%s}}
"""
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def syncz(proxies: list[str], rds: tuple[str, str], error: str = "", late: str | None = None) -> list[dict[str, Any]]:
    """istiod's /debug/syncz as it lists these proxies: CDS in step, RDS sent/acknowledged as given (`late`: the one
    proxy still at the old nonces, with `error` when it refused the new ones)."""
    out = []
    for proxy in proxies:
        sent, acked = rds if proxy != late else (rds[0], "n0")
        rds_status = {"sent": sent, "acked": acked, **({"lastError": error} if error and proxy == late else {})}
        out.append({"proxy": proxy, "proxy_type": "sidecar", "cluster_sent": "c1", "cluster_acked": "c1",
                    "resources": {CDS: {"sent": "c1", "acked": "c1"}, RDS: rds_status}})
    return out


def test_an_apply_waits_until_the_proxies_it_changes_have_acknowledged_istiods_push(cp: ControlPlane) -> None:
    """istiod (a kwok pod whose monitoring port is a local server) answers /debug/syncz from a script: the apply
    returns only once every changed proxy was pushed to after it and acknowledged; a push Envoy refused is an error
    naming the proxy and Envoy's reason; a push that never comes runs out the timeout naming who is behind; an apply
    that changes no proxy's configuration asks istiod once, before it."""
    install_crds(cp, cp.build.istio_crds)
    namespace = "traffic-sync"
    b = backend(cp, namespace)
    answers: list[list[dict[str, Any]]] = []
    asked: list[str] = []

    def routes(app: App) -> list[web.RouteDef]:
        async def debug_syncz(request: web.Request) -> web.Response:
            asked.append(request.path_qs)
            body = answers.pop(0) if len(answers) > 1 else answers[0]
            return web.json_response(body)
        return [web.get("/debug/syncz", debug_syncz)]

    deletes: list[Callable[[], None]] = []
    with contextlib.suppress(urllib.error.HTTPError):
        cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": GATEWAY_NS}})
    try:
        b.apply_text(CATALOG, namespace)  # no istiod yet: nothing to ask
        proxies = [f"{pod}.{namespace}" for pod in pods_of(b, namespace, "app=catalog")]
        assert len(proxies) == 3
        # the DestinationRule's subsets change the ingress gateway's clusters too: its pod (from the tests above,
        # when the module's gateway is still up) is one of the proxies istiod lists
        proxies += [f"{pod}.{GATEWAY_NS}" for pod in ready_pods(cp, GATEWAY_NS, "istio%3Dingressgateway")]
        cp.api("POST", f"/apis/apps/v1/namespaces/{GATEWAY_NS}/deployments", yaml.safe_load(ISTIOD))

        def remove_istiod() -> None:  # and wait for its pod to go: later tests' applies must not find an istiod
            cp.api("DELETE", f"/apis/apps/v1/namespaces/{GATEWAY_NS}/deployments/istiod",
                   {"propagationPolicy": "Foreground"})
            wait_for("istiod's pod to be gone", lambda: not cp.api(
                "GET", f"/api/v1/namespaces/{GATEWAY_NS}/pods?labelSelector=app%3Distiod")["items"])
        deletes.append(remove_istiod)
        istiod = wait_for("istiod's pod to be Ready", lambda: ready_pods(cp, GATEWAY_NS, "app=istiod"))[0]
        with app_server(routes) as server:
            deletes.append(kwok(cp, "PortForward", istiod, {"forwards": [
                {"ports": [15014], "target": {"address": HOST, "port": port_of(server.url)}}]}, GATEWAY_NS))
            answers[:] = [syncz(proxies, ("n1", "n1"))]
            warm(b, istiod, GATEWAY_NS, 15014)

            # the routes change every catalog proxy's configuration: before, pushed but not acknowledged, in step
            asked.clear()
            answers[:] = [syncz(proxies, ("n1", "n1")), syncz(proxies, ("n2", "n1")),
                          syncz(proxies, ("n2", "n2"), late=proxies[1]), syncz(proxies, ("n2", "n2"))]
            b.apply_text(ROUTES % "v1", namespace)
            assert asked == ["/debug/syncz"] * 4

            # the same again: no proxy's configuration changes, so istiod is asked only before the apply
            asked.clear()
            b.apply_text(ROUTES % "v1", namespace)
            assert asked == ["/debug/syncz"]

            # Envoy refuses the push: one line with the proxy and its reason, at once
            answers[:] = [syncz(proxies, ("n2", "n2")),
                          syncz(proxies, ("n3", "n3"), late=proxies[0], error="Proto constraint validation failed")]
            with pytest.raises(MeshlibError) as refused:
                b.apply_text(ROUTES % "v2", namespace)
            assert str(refused.value) == ("Envoy refused the configuration istiod sent after the apply: "
                                          f"{proxies[0]} rejected RDS (nonce n3): Proto constraint validation failed")

            # istiod never pushes: the timeout names every proxy that had no push
            answers[:] = [syncz(proxies, ("n3", "n3"))]
            b.rollout_timeout = 4
            started = time.monotonic()
            with pytest.raises(ClusterError) as behind:
                b.apply_text(ROUTES % "v1", namespace)
            assert 4 <= time.monotonic() - started < 15
            assert re.search(r"to have istiod's push: not done after 4s: \d not in step: ", str(behind.value))
            assert all(f"{proxy}: no push from istiod since the apply" in str(behind.value)
                       for proxy in proxies[:3]), behind.value
    finally:
        for delete in reversed(deletes):
            delete()
        b.close()


# --- last: a per-pod PortForward outranks the ClusterPortForward the tests above use -------------------------------
def test_a_gateway_port_that_refuses_is_no_response_and_the_reason_is_kept(cp: ControlPlane, ingress: str) -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        dead = s.getsockname()[1]  # nothing listens there once the socket is closed
    delete = kwok(cp, "PortForward", ingress, {"forwards": [{"ports": [8080], "target": {"address": HOST,
                                                                                        "port": dead}}]}, GATEWAY_NS)
    b = backend(cp, "gw-refused")
    try:
        deadline = time.monotonic() + 15
        while True:  # until kwok forwards the pod's port to the dead one
            try:
                b.cluster.http_get(ingress, GATEWAY_NS, 8080, "/")
            except ClusterError as exc:
                if "connection refused" in str(exc):
                    break
            assert time.monotonic() < deadline, "kwok did not pick up the PortForward"
            time.sleep(0.1)
        started = time.monotonic()
        responses = send(b.gateway("catalog.istioinaction.io", "/items"), Plan(count=3, concurrency=1))
        assert time.monotonic() - started < 20
        assert [r.status for r in responses] == [0, 0, 0] and all(r.error for r in responses), responses
        errors = b._forwards[(GATEWAY_NS, 8080)].errors
        assert errors and all(f"failed to dial {HOST}:{dead}" in e and "connection refused" in e for e in errors), \
            errors
    finally:
        delete()
        b.close()
