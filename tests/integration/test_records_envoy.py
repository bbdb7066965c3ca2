"""Real Envoy writes the record log; `meshlib.local.envoy.records` turns it into Istio metrics and the ledger.

One Envoy (static bootstrap, `--concurrency 1 --disable-hot-restart`) plays every proxy: the webapp sidecar's
outbound listener on the webapp pod's IP (its upstream connections leave from that IP too) and an inbound
listener per catalog pod, each on its pod's IP, each writing its pod's record file. Small aiohttp apps play the
catalog containers. Addresses are in 127.253.<random>.0/24, outside the embedded meshes' blocks (127.16–249).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from meshlib.local.envoy.records import Ledger, PodRecords
from meshlib.local.metrics import Peer
from meshlib.xds.accesslog import record_log

ENVOY = Path(sys.executable).parent / "envoy"
NS = "istioinaction"
CATALOG = ("catalog.istioinaction.svc.cluster.local", "catalog", NS)
V1 = "outbound|80|version-v1|catalog.istioinaction.svc.cluster.local"
V2 = "outbound|80|version-v2|catalog.istioinaction.svc.cluster.local"
FLUSH_MS = 50
WAIT = 10.0  # seconds: every bounded wait below

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason=f"no Envoy binary at {ENVOY}")


@dataclass(frozen=True)
class Pod:
    name: str
    ip: str
    port: int  # containerPort: the inbound listener's port
    peer: Peer


def pods(block: str) -> dict[str, Pod]:
    def peer(workload: str, app: str, version: str | None) -> Peer:
        return Peer.of(workload, NS, {"app": app, **({"version": version} if version else {})})

    return {p.name: p for p in (
        Pod("webapp-1", f"{block}.2", 8080, peer("webapp", "webapp", None)),
        Pod("catalog-v1-a", f"{block}.3", 3000, peer("catalog", "catalog", "v1")),
        Pod("catalog-v1-b", f"{block}.4", 3001, peer("catalog", "catalog", "v1")),
        Pod("catalog-v2-a", f"{block}.5", 3002, peer("catalog-v2", "catalog", "v2")),
    )}


class Mesh:
    """The records' Resolver over the test's pods."""

    def __init__(self, by_name: dict[str, Pod]) -> None:
        self.by_ip = {p.ip: p for p in by_name.values()}

    def peer_at(self, ip: str) -> tuple[str, Peer] | None:
        pod = self.by_ip.get(ip)
        return (pod.name, pod.peer) if pod else None

    def service_of_cluster(self, pod: str, cluster: str) -> tuple[str, str, str] | None:
        return CATALOG if cluster in (V1, V2) else None

    def inbound_service(self, pod: str, port: int) -> tuple[str, str, str] | None:
        return CATALOG if pod.startswith("catalog") else None


# --- the catalog containers -----------------------------------------------------------------------------
class Apps:
    """aiohttp apps on their pods' IPs, in a thread with its own loop. v1 answers a first try with 503."""

    def __init__(self, catalog_pods: list[Pod]) -> None:
        self.pods = catalog_pods
        self.ports: dict[str, int] = {}
        self.hosts: dict[str, list[str]] = {p.name: [] for p in catalog_pods}  # Host headers each app saw
        self._loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Apps:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(WAIT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT)
        self._loop.close()

    async def _start(self) -> None:
        for pod in self.pods:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handler(pod))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, pod.ip, 0)
            await site.start()
            self._runners.append(runner)
            self.ports[pod.name] = runner.addresses[0][1]

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def _handler(self, pod: Pod) -> Callable[[web.Request], object]:
        async def handle(request: web.Request) -> web.Response:
            self.hosts[pod.name].append(request.headers.get("Host", ""))
            first_try = request.headers.get("x-envoy-attempt-count") == "1"
            if pod.peer.version == "v1" and first_try and request.path == "/flaky":
                return web.Response(status=503, text="try again")
            return web.json_response({"pod": pod.name, "items": [1, 2, 3]})

        return handle


# --- one Envoy for every proxy --------------------------------------------------------------------------
def _hcm(name: str, access_log: dict, virtual_host: dict) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": name, "access_log": [access_log],
        "route_config": {"name": name, "virtual_hosts": [virtual_host]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}


def _listener(name: str, ip: str, port: int, hcm: dict) -> dict:
    return {"name": name, "address": {"socket_address": {"address": ip, "port_value": port}},
            "filter_chains": [{"filters": [hcm]}]}


def _cluster(name: str, endpoints: list[tuple[str, int]], source_ip: str | None = None) -> dict:
    cluster = {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}}}
            for ip, port in endpoints]}]}}
    if source_ip:  # a sidecar's upstream connections leave from its pod's IP
        cluster["upstream_bind_config"] = {"source_address": {"address": source_ip, "port_value": 0}}
    return cluster


def bootstrap(by_name: dict[str, Pod], app_ports: dict[str, int], logs: dict[str, Path], shadow_suffix: bool) -> dict:
    webapp = by_name["webapp-1"]
    v1 = [by_name["catalog-v1-a"], by_name["catalog-v1-b"]]
    v2 = by_name["catalog-v2-a"]
    retry = {"retry_on": "5xx", "num_retries": 2, "host_selection_retry_max_attempts": "5",
             "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                 "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]}
    mirror = {"cluster": V2, "runtime_fraction": {"default_value": {"numerator": 100}}, "trace_sampled": False}
    if not shadow_suffix:
        mirror["disable_shadow_host_suffix_append"] = True
    outbound = _hcm("80", record_log(str(logs["webapp-1"]), "outbound"), {
        "name": "catalog.istioinaction.svc.cluster.local:80", "domains": ["*"], "include_request_attempt_count": True,
        "routes": [
            {"match": {"prefix": "/mirrored"}, "name": "mirrored", "route": {
                "cluster": V1, "timeout": "0s", "retry_policy": retry, "request_mirror_policies": [mirror]}},
            {"match": {"prefix": "/flaky"}, "name": "flaky", "route": {
                "cluster": V1, "timeout": "0s", "retry_policy": retry, "request_mirror_policies": [mirror]}},
            {"match": {"prefix": "/"}, "name": "default", "route": {"cluster": V1, "timeout": "0s"}}]})
    listeners = [_listener("0.0.0.0_80", webapp.ip, 15001, outbound)]
    clusters = [_cluster(V1, [(p.ip, p.port) for p in v1], webapp.ip), _cluster(V2, [(v2.ip, v2.port)], webapp.ip)]
    for pod in [*v1, v2]:
        inbound_cluster = f"inbound|{pod.port}||"
        hcm = _hcm(inbound_cluster, record_log(str(logs[pod.name]), "inbound"), {
            "name": f"inbound|http|{pod.port}", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "name": "default",
                        "route": {"cluster": inbound_cluster, "timeout": "0s"}}]})
        listeners.append(_listener(f"virtualInbound_{pod.name}", pod.ip, pod.port, hcm))
        clusters.append(_cluster(inbound_cluster, [(pod.ip, app_ports[pod.name])]))
    return {"node": {"id": "records-test", "cluster": "records-test"},
            "admin": {"address": {"socket_address": {"address": webapp.ip, "port_value": 0}}},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


@dataclass
class World:
    pods: dict[str, Pod]
    apps: Apps
    logs: dict[str, Path]
    url: str  # the webapp sidecar's outbound listener


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll `condition` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _ready(admin_file: Path) -> bool:
    try:
        address = admin_file.read_text().strip()
        with urllib.request.urlopen(f"http://{address}/ready", timeout=1) as reply:
            return reply.read().strip() == b"LIVE"
    except (OSError, ValueError):
        return False


@pytest.fixture(params=[True, False], ids=["shadow-suffix(<=1.27)", "no-suffix(>=1.28)"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    by_name = pods(f"127.253.{random.randrange(256)}")
    logs = {name: tmp_path / f"{name}.records.jsonl" for name in by_name}
    with Apps([p for p in by_name.values() if p.name.startswith("catalog")]) as apps:
        config = tmp_path / "envoy.json"
        config.write_text(json.dumps(bootstrap(by_name, apps.ports, logs, shadow_suffix=request.param)))
        admin_file, output = tmp_path / "admin.txt", (tmp_path / "envoy.log").open("w")
        envoy = subprocess.Popen(
            [str(ENVOY), "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warning",
             "--file-flush-interval-msec", str(FLUSH_MS), "--admin-address-path", str(admin_file)],
            stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: envoy.poll() is not None or _ready(admin_file), "Envoy to be ready")
            if envoy.poll() is not None:
                pytest.fail(f"Envoy exited with {envoy.returncode}:\n{(tmp_path / 'envoy.log').read_text()}")
            yield World(by_name, apps, logs, f"http://{by_name['webapp-1'].ip}:15001")
        finally:
            envoy.terminate()
            try:
                envoy.wait(5)
            except subprocess.TimeoutExpired:
                envoy.kill()
                envoy.wait(5)
            output.close()


def send(world: World, path: str, request_id: str) -> int:
    request = urllib.request.Request(world.url + path, headers={
        "Host": "catalog.istioinaction", "x-request-id": request_id})
    with urllib.request.urlopen(request, timeout=WAIT) as reply:
        reply.read()
        return reply.status


def read_until(records: PodRecords, mesh: Mesh, count: int) -> None:
    """Refresh until `count` records in all have been read (Envoy flushes its log every FLUSH_MS)."""
    wait_until(lambda: records.refresh(mesh) >= 0 and records.records >= count,
               f"{count} records in {records.file.path} (have {records.records})")


def series(records: PodRecords, name: str) -> list:
    return [s for f in text_string_to_metric_families(records.exposition().decode()) for s in f.samples
            if s.name == name]


@pytest.mark.parametrize("world", [True], indirect=True, ids=["envoy"])
def test_outbound_records_of_real_envoy_become_source_metrics(world: World):
    mesh = Mesh(world.pods)
    webapp = world.pods["webapp-1"]
    ledger = Ledger()
    records = PodRecords(world.logs["webapp-1"], webapp.name, webapp.peer, ledger)

    assert [send(world, "/items", f"plain-{i}") for i in range(3)] == [200, 200, 200]

    read_until(records, mesh, 3)
    assert records.malformed == 0
    (total,) = series(records, "istio_requests_total")
    assert total.value == 3
    assert {k: total.labels[k] for k in ("reporter", "source_workload", "destination_workload", "destination_version",
                                         "destination_service", "destination_service_name",
                                         "destination_service_namespace", "response_code", "response_flags",
                                         "request_protocol")} == {
        "reporter": "source", "source_workload": "webapp", "destination_workload": "catalog",
        "destination_version": "v1", "destination_service": CATALOG[0], "destination_service_name": "catalog",
        "destination_service_namespace": NS, "response_code": "200", "response_flags": "-", "request_protocol": "http"}
    counters = [line for line in records.exposition().decode().splitlines() if line.startswith("istio_requests_total{")]
    assert len(counters) == 1 and re.fullmatch(r'istio_requests_total\{reporter="source",source_workload="webapp",.*'
                                               r'response_code="200",.*\} 3\.0', counters[0]), counters
    (request_bytes,) = series(records, "istio_request_bytes_count")
    assert request_bytes.value == 3
    (size_sum,) = series(records, "istio_request_bytes_sum")
    assert size_sum.value > 3 * len("GET /items HTTP/1.1\r\n")  # wire bytes: headers included
    assert all(f"plain-{i}" in ledger for i in range(3))


def test_the_ledger_tells_retries_and_mirror_copies_from_real_envoy_records(world: World):
    mesh = Mesh(world.pods)
    ledger = Ledger()
    records = {name: PodRecords(world.logs[name], name, pod.peer, ledger) for name, pod in world.pods.items()}

    assert send(world, "/mirrored", "m-1") == 200
    assert send(world, "/flaky", "f-1") == 200  # v1's first try answers 503, Envoy retries on the other v1 pod

    # 2 outbound records, and inbound: m-1 main + copy, f-1 two tries + copy (the copy is fire-and-forget)
    def all_read() -> bool:
        for r in records.values():
            r.refresh(mesh)
        return sum(r.records for r in records.values()) >= 7 and ledger.settled("m-1") and ledger.settled("f-1")

    wait_until(all_read, "the records of both requests")
    assert sum(r.malformed for r in records.values()) == 0
    shadow_hosts = world.apps.hosts["catalog-v2-a"]
    suffixed = all(h.startswith("catalog.istioinaction-shadow") for h in shadow_hosts)
    assert len(shadow_hosts) == 2 and (suffixed or all(h == "catalog.istioinaction" for h in shadow_hosts))

    mirrored = {(s.pod, s.mirrored, s.attempt, s.status) for s in ledger.served("m-1")}
    assert ("catalog-v2-a", True, 1, 200) in mirrored
    assert {s for s in mirrored if not s[1]} <= {("catalog-v1-a", False, 1, 200), ("catalog-v1-b", False, 1, 200)}
    assert len(mirrored) == 2

    flaky = sorted(ledger.served("f-1"), key=lambda s: (s.mirrored, s.attempt))
    assert [(s.peer.version, s.mirrored, s.attempt, s.status) for s in flaky] == [
        ("v1", False, 1, 503), ("v1", False, 2, 200), ("v2", True, 1, 200)]
    assert flaky[0].pod != flaky[1].pod  # previous_hosts: the retry went to the other v1 pod
    assert [s.started for s in ledger.served("f-1")] == sorted(s.started for s in flaky)

    v2_inbound = series(records["catalog-v2-a"], "istio_requests_total")
    assert [(s.labels["reporter"], s.labels["source_workload"], s.labels["destination_workload"], s.value)
            for s in v2_inbound] == [("destination", "webapp", "catalog-v2", 2.0)]
    webapp_codes = {s.labels["response_code"]: s.value for s in series(records["webapp-1"], "istio_requests_total")}
    assert webapp_codes == {"200": 2.0}  # the source reports the final answer only
    v1_codes: dict[str, float] = {}
    for name in ("catalog-v1-a", "catalog-v1-b"):
        for s in series(records[name], "istio_requests_total"):
            v1_codes[s.labels["response_code"]] = v1_codes.get(s.labels["response_code"], 0) + s.value
    assert v1_codes == {"200": 2.0, "503": 1.0}
